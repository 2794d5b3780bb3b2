"""The benchmark-problem base class and its registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mfbo.errors import ConfigError
from mfbo.optimize._space import SearchSpace

__all__ = ["Problem", "register_problem", "get_problem", "list_problems", "UnknownProblem"]


class UnknownProblem(ConfigError):
    """No benchmark problem is registered under the requested name."""


class Problem:
    """A multi-fidelity benchmark problem with a known (or best-known) optimum.

    A problem is a picklable callable with the signature of an mfbo objective::

        problem(params, data_fraction, epochs) -> {"curve": [loss after epoch 1..epochs],
                                                   "cost": simulated seconds}

    Subclasses implement one method, :meth:`_evaluate`; everything else has defaults.

    Attributes:
        name: registry name.
        space: design parameters plus the fidelity parameter(s) (``data_fraction``, ``epochs``).
        full_fidelity_cost: simulated seconds of one run at target fidelity (1 FFE).
        optimum_value: the known (or best-known) minimum of :meth:`value_at_target`.
        seed: seed of the observation noise.
    """

    name: str = "problem"
    space: SearchSpace
    full_fidelity_cost: float
    optimum_value: float

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        # One generator per problem instance: every call draws fresh noise, and a pickled copy
        # (sent to a worker process) continues the same stream, so runs are seed-reproducible.
        self._rng = np.random.default_rng(self.seed)

    # -- the one required method -----------------------------------------------------------
    def _evaluate(self, params: Mapping[str, Any], data_fraction: float, epochs: int,
                  rng: np.random.Generator | None) -> tuple[np.ndarray, float]:
        """Return ``(curve (epochs,), cost in s)``; noise-free when ``rng`` is None."""
        raise NotImplementedError(f"{type(self).__name__} must implement _evaluate()")

    # -- public API ------------------------------------------------------------------------
    def __call__(self, params: Mapping[str, Any], data_fraction: float = None, epochs: int = None) -> dict:
        """Evaluate one configuration at the given fidelities.

        Args:
            params: design parameters (fidelity keys, if present, are ignored).
            data_fraction: training-data fraction in the space's bounds (None: target).
            epochs: number of epochs (iteration fidelity; None: target).

        Returns:
            ``{"curve": list of float (epochs,), "cost": float seconds}``.
        """
        data_fraction, epochs = self._fidelities(data_fraction, epochs)
        params = self.space.validate(params)
        curve, cost = self._evaluate(params, data_fraction, epochs, self._rng)
        return {"curve": [float(v) for v in curve], "cost": float(cost)}

    def value_at_target(self, params: Mapping[str, Any]) -> float:
        """Noise-free objective at target fidelity (what regret is measured on)."""
        df, ep = self._fidelities(None, None)
        curve, _ = self._evaluate(self.space.validate(params), df, ep, None)
        return float(curve[-1])

    def regret(self, params: Mapping[str, Any]) -> float:
        """Simple regret ``value_at_target(params) - optimum_value`` (>= 0 up to the optimum's accuracy)."""
        return self.value_at_target(params) - self.optimum_value

    def cost(self, data_fraction: float, epochs: int) -> float:
        """Simulated cost (s) of one run at the given fidelities (default: proportional to both)."""
        df, ep = self._fidelities(data_fraction, epochs)
        tdf, tep = self._fidelities(None, None)
        return self.full_fidelity_cost * (df / tdf) * (ep / tep)

    @property
    def target(self) -> dict[str, float]:
        """Target fidelities, e.g. ``{"data_fraction": 1.0, "epochs": 27}``."""
        return self.space.target_fidelities()

    def _fidelities(self, data_fraction, epochs) -> tuple[float, int]:
        dp, ip = self.space.data_fidelity, self.space.iteration_fidelity
        if data_fraction is None:
            data_fraction = dp.target if dp is not None else 1.0
        if epochs is None:
            epochs = ip.target if ip is not None else 1
        data_fraction = float(data_fraction)
        if dp is not None and not dp.low - 1e-9 <= data_fraction <= dp.high + 1e-9:
            raise ConfigError(f"{self.name}: data_fraction {data_fraction} outside [{dp.low}, {dp.high}]")
        if ip is not None:
            if epochs != int(epochs) or not ip.low <= epochs <= ip.high:
                raise ConfigError(f"{self.name}: epochs {epochs} must be an integer in [{ip.low:g}, {ip.high:g}]")
        return data_fraction, int(epochs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, seed={self.seed})"


_REGISTRY: dict[str, Callable[..., Problem]] = {}


def register_problem(name: str, factory: Callable[..., Problem]) -> None:
    """Register a problem factory ``factory(seed=0, **kw) -> Problem`` under ``name`` (no duplicates)."""
    if name in _REGISTRY:
        raise ConfigError(f"a benchmark problem named {name!r} is already registered")
    _REGISTRY[name] = factory


def get_problem(name: str, seed: int = 0, **kwargs: Any) -> Problem:
    """Build the registered problem ``name`` with noise seed ``seed``.

    Args:
        name: one of :func:`list_problems`.
        seed: seed of the observation noise.
        **kwargs: problem-specific options (e.g. ``data_dir`` and ``task_id`` for YAHPO problems).

    Returns:
        the :class:`Problem`.
    """
    if name not in _REGISTRY:
        raise UnknownProblem(f"unknown benchmark problem {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[name](seed=seed, **kwargs)


def list_problems() -> list[str]:
    """Names of the registered problems, sorted."""
    return sorted(_REGISTRY)
