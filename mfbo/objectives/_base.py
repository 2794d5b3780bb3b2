"""The Objective base class: what one trial of a study runs."""

from __future__ import annotations

from typing import Any

from mfbo.errors import ObjectiveError

__all__ = ["Objective"]


class Objective:
    """Base class of objective backends.

    One required method, :meth:`evaluate`. Objectives are sent to worker processes, so they
    must pickle: keep paths and configurations, and load data lazily.
    """

    def evaluate(self, params: dict, data_fraction: float, epochs: int) -> dict:
        """Train one trial at one fidelity.

        Args:
            params: design hyperparameters (names as in ``mfbo.training.config_from_hyperparameters``).
            data_fraction: fraction in (0, 1] of the training pool (nested subsets).
            epochs: number of epochs (integer >= 1).

        Returns:
            ``{"curve": [metric after epoch 1..epochs] (floats), "cost": seconds,
            "records": [per-epoch dicts, see mfbo.objectives.RECORD_KEYS],
            "metadata": {...} (optional)}``.

        Raises:
            TrainingDiverged: the run diverged (a failed trial, not a crash).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate(params, data_fraction, epochs)")

    def __call__(self, params: dict, data_fraction: float, epochs: int) -> dict:
        # Objectives double as the plain callables mfbo.minimize accepts.
        return self.evaluate(params, data_fraction, epochs)

    def fit(self, params: dict, data_fraction: float = 1.0, epochs: int | None = None, **kwargs: Any):
        """Optional: train and return the trained model/result (for the end-of-study retraining)."""
        raise ObjectiveError(f"objective {type(self).__name__} does not support fit(); use evaluate()")

    def describe(self) -> dict:
        """Optional: a JSON-able description stored with a study."""
        return {"class": f"{type(self).__module__}:{type(self).__qualname__}"}


def describe_source(source: Any) -> str | None:
    """How ``describe()`` shows a dataset: its path as given, or ``"<N Atoms>"`` for in-memory images."""
    return source if isinstance(source, str) or source is None else f"<{len(source)} Atoms>"
