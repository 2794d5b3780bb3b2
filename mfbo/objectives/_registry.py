"""Registry of objective backends by name ("builtin", "amptorch", and user plug-ins)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from mfbo.errors import BackendUnavailable, ConfigError

__all__ = ["register_objective", "get_objective", "available_objectives", "resolve_factory"]

# name -> factory, or "module:attribute" resolved on first use (so AMPTorch's module is imported
# only when someone asks for it).
_REGISTRY: dict[str, Callable[..., Any] | str] = {
    "builtin": "mfbo.objectives._builtin:BuiltinObjective",
    "amptorch": "mfbo.objectives._amptorch:AmptorchObjective",
}


def register_objective(name: str, factory: Callable[..., Any] | str) -> None:
    """Register an objective factory (a class or callable returning an Objective, or "module:attr").

    Raises:
        ConfigError: the name is taken or invalid.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"objective name must be a non-empty string, got {name!r}")
    if name in _REGISTRY:
        raise ConfigError(f"an objective named {name!r} is already registered; choose another name")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise ConfigError(f"objective factory for {name!r} must be callable or 'module:attribute'")
    _REGISTRY[name] = factory


def available_objectives() -> list[str]:
    """Registered names."""
    return sorted(_REGISTRY)


def _load_dotted(path: str, name: str):
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(f"objective {name!r} needs module {module_name!r}, which cannot be imported: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise BackendUnavailable(f"objective {name!r}: module {module_name!r} has no attribute {attr!r}") from None


def resolve_factory(name: str) -> Callable[..., Any]:
    """The factory of a registered name, or of a dotted path "package.module:Class"."""
    if name in _REGISTRY:
        factory = _REGISTRY[name]
        return _load_dotted(factory, name) if isinstance(factory, str) else factory
    if ":" in name:
        return _load_dotted(name, name)
    raise ConfigError(f"unknown objective {name!r}; registered: {available_objectives()} (or give 'module:Class')")


def get_objective(name: str, **kwargs: Any):
    """Build the objective registered under ``name`` (or a dotted path) with ``kwargs``."""
    return resolve_factory(name)(**kwargs)
