"""Records shared by the optimiser, its baselines and studies."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Candidate", "Trial", "MinimizeResult"]


@dataclass
class Candidate:
    """A configuration proposed for evaluation.

    Attributes:
        trial_index: index of the trial in the optimiser's record.
        params: design parameters (no fidelities).
        data_fraction: training-subset fraction in (0, 1] (1.0 when the space has no data fidelity).
        epochs: number of epochs (the iteration fidelity; its target when the space has none).
    """

    trial_index: int
    params: dict[str, Any]
    data_fraction: float
    epochs: int


@dataclass
class Trial:
    """One evaluated (or failed) trial.

    Attributes:
        index: trial index.
        params: design parameters.
        data_fraction, epochs: fidelities it ran at (epochs = epochs actually run, e.g. after pruning).
        curve: validation loss after each epoch 1..epochs (empty when failed).
        cost: cost in seconds (measured wall time unless the objective reported one).
        status: "running" (asked, not yet told), "completed", "failed" or "abandoned".
        error: failure reason, if any.
        metadata: anything else (timings, versions, method-specific info).
    """

    index: int
    params: dict[str, Any]
    data_fraction: float
    epochs: int
    curve: list[float] = field(default_factory=list)
    cost: float = 0.0
    status: str = "completed"
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def final_value(self) -> float | None:
        return self.curve[-1] if self.curve else None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class MinimizeResult:
    """What :func:`mfbo.minimize` returns.

    Attributes:
        best_params: recommended design parameters (no fidelities).
        trials: every trial in order.
        cost_spent: total cost in full-fidelity equivalents (FFE).
        cost_spent_seconds: total cost in seconds.
        method: the method that ran.
        history: per-step records, e.g. ``{"cost_ffe": ..., "recommended": {...}}`` after each
            round, so regret-vs-cost curves can be drawn.
        info: method-specific extras (timings, versions, Ax experiment name...).
    """

    best_params: dict[str, Any]
    trials: list[Trial]
    cost_spent: float
    cost_spent_seconds: float
    method: str
    history: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
