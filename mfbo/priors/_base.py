"""The Prior base class, the prior registry and loading priors by dotted path."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mfbo.errors import PriorError

__all__ = ["Prior", "register_prior", "get_prior_class", "registered_priors", "load_prior",
           "prior_from_config"]


class Prior:
    """A belief about where good hyperparameters lie.

    Subclasses implement one method, :meth:`log_prob`; :meth:`sample` and :meth:`to_config` are optional
    (the base versions raise a clear :class:`PriorError`). Run ``mfbo.testing.check_prior`` on your prior.

    Densities are taken with respect to the search space's own measure: Lebesgue in the value for
    linear parameters, in ``log(value)`` for log-scaled ones, counting measure for integers and
    categoricals. A parameter the prior has no opinion on then contributes a constant, which is what
    prior-weighted acquisition (piBO) needs.
    """

    #: name used in messages; set by the registry or dotted-path loading.
    name: str = ""

    def log_prob(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Log prior density of configurations.

        Args:
            configs: n design configurations in natural units (dicts; extra keys such as fidelities
                must be ignored).

        Returns:
            float ndarray of shape ``(n,)``; unnormalised is fine, ``-inf`` where the prior rules a
            configuration out, never NaN.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement log_prob(configs)")

    def sample(self, n: int, seed: int = 0) -> list[dict]:
        """Draw ``n`` configurations from the prior (optional).

        Args:
            n: number of configurations.
            seed: random seed; the same seed gives the same draws.

        Returns:
            list of n design configurations (natural units) satisfying bounds and constraints.
        """
        raise PriorError(f"prior {self._label()} does not implement sample(); the optimiser then starts from "
                         "a quasi-random design. Implement sample(n, seed) to let the prior shape it.")

    def to_config(self) -> dict:
        """A JSON-able description ``{"class": ..., "options": {...}}`` that :func:`prior_from_config`
        turns back into an equal prior (optional; priors made by :func:`load_prior` have one)."""
        source = getattr(self, "_mfbo_source", None)
        if source is not None:
            return dict(source)
        raise PriorError(f"prior {self._label()} cannot be stored: create it with mfbo.priors.load_prior("
                         "'pkg.module:ClassName', **options) or implement to_config()")

    def _label(self) -> str:
        return repr(self.name) if self.name else type(self).__name__

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


_REGISTRY: dict[str, type[Prior]] = {}

# Built-in priors by name -> "module:Class", imported on first use. The registry names them by path
# so that the modules defining them can import this one without an import cycle.
_BUILTINS: dict[str, str] = {"product": "mfbo.priors._beliefs:ProductPrior"}


def register_prior(name: str, cls: type[Prior]) -> type[Prior]:
    """Register a Prior subclass under ``name``.

    Args:
        name: registry name (no ':' — that marks dotted paths).
        cls: a subclass of :class:`Prior`.

    Returns:
        ``cls`` (so it works as a helper in decorators).

    Raises:
        PriorError: the name is taken, malformed, or ``cls`` is not a Prior subclass.
    """
    if not isinstance(name, str) or not name or ":" in name:
        raise PriorError(f"prior name must be a non-empty string without ':', got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Prior)):
        raise PriorError(f"register_prior({name!r}, ...) needs a subclass of mfbo.priors.Prior, got {cls!r}")
    if name in _BUILTINS:
        raise PriorError(f"a prior named {name!r} is already registered (built in: {_BUILTINS[name]}); "
                         "pick another name")
    if name in _REGISTRY:
        raise PriorError(f"a prior named {name!r} is already registered ({_REGISTRY[name].__module__}."
                         f"{_REGISTRY[name].__qualname__}); pick another name")
    _REGISTRY[name] = cls
    return cls


def registered_priors() -> list[str]:
    """Names in the registry (built-in and registered), sorted."""
    return sorted(set(_REGISTRY) | set(_BUILTINS))


def get_prior_class(ref: str) -> type[Prior]:
    """A Prior class from a registry name or a dotted path ``"pkg.module:ClassName"``.

    Raises:
        PriorError: unknown name, unimportable module, missing attribute, or not a Prior subclass.
    """
    if not isinstance(ref, str) or not ref:
        raise PriorError(f"a prior reference must be a registry name or 'pkg.module:ClassName', got {ref!r}")
    if ":" not in ref:
        if ref in _BUILTINS:
            ref = _BUILTINS[ref]
        elif ref not in _REGISTRY:
            raise PriorError(f"unknown prior {ref!r}; registered: {registered_priors()}; or give a dotted path "
                             "'pkg.module:ClassName'")
        else:
            return _REGISTRY[ref]
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise PriorError(f"dotted prior path {ref!r} must look like 'pkg.module:ClassName'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PriorError(f"prior {ref!r}: cannot import module {module_name!r} ({exc}); is it on PYTHONPATH?") \
            from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PriorError(f"prior {ref!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Prior)):
        raise PriorError(f"prior {ref!r} is not a subclass of mfbo.priors.Prior")
    return obj


def load_prior(ref: str, **options: Any) -> Prior:
    """Instantiate a prior by registry name or dotted path, e.g. from a study file's ``prior`` entry.

    Args:
        ref: registry name or ``"pkg.module:ClassName"``.
        **options: keyword arguments for the class (JSON-able if the prior is to be stored).

    Returns:
        the Prior instance; its :meth:`Prior.to_config` gives ``{"class": ref, "options": options}``.
    """
    cls = get_prior_class(ref)
    try:
        prior = cls(**options)
    except TypeError as exc:
        raise PriorError(f"prior {ref!r}: bad options {sorted(options)} ({exc})") from exc
    if not prior.name:
        prior.name = ref
    if getattr(prior, "_mfbo_source", None) is None:
        prior._mfbo_source = {"class": ref, "options": dict(options)}
    return prior


def prior_from_config(config: Mapping[str, Any]) -> Prior:
    """Inverse of :meth:`Prior.to_config`."""
    if not isinstance(config, Mapping) or "class" not in config:
        raise PriorError(f"a stored prior must be a mapping with a 'class' entry, got {config!r}")
    return load_prior(config["class"], **dict(config.get("options") or {}))
