"""The baseline registry: ``get_baseline(method)`` -> a ``minimize``-like callable."""

from __future__ import annotations

from collections.abc import Callable

from mfbo.errors import ConfigError

__all__ = ["register_baseline", "get_baseline", "list_baselines", "UnknownBaseline"]


class UnknownBaseline(ConfigError):
    """No baseline is registered under the requested method name."""


_REGISTRY: dict[str, Callable] = {}


def register_baseline(name: str, fn: Callable) -> None:
    """Register ``fn(objective, space, budget, seed=0, workers=1, prior=None, constraints=(), callback=None,
    **options) -> MinimizeResult`` under ``name``; refuses duplicates."""
    if name in _REGISTRY:
        raise ConfigError(f"a baseline named {name!r} is already registered")
    _REGISTRY[name] = fn


def get_baseline(method: str) -> Callable:
    """The baseline registered as ``method`` (see :func:`list_baselines`)."""
    if method not in _REGISTRY:
        raise UnknownBaseline(f"unknown optimisation method {method!r}; choose 'mfbo' or one of {list_baselines()}")
    return _REGISTRY[method]


def list_baselines() -> list[str]:
    """Registered baseline names, sorted."""
    return sorted(_REGISTRY)
