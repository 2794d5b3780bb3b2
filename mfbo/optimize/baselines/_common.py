"""What every baseline shares: calling the objective, FFE accounting, the history record.

Budget accounting (identical for every method, mfbo included when it uses :class:`BudgetTracker`):

- one FFE (full-fidelity equivalent) is ``objective.full_fidelity_cost`` seconds when the objective has
  that attribute (every :mod:`mfbo.optimize.problems` problem does); otherwise it is the cost of the
  first evaluation scaled to target fidelity proportionally to ``fraction x epochs``;
- a call's cost is the ``"cost"`` the objective reports (seconds), else its measured wall time;
- methods that stop or promote runs epoch by epoch (``optuna-tpe-hb``, ``hyperband``, ``dehb``) are
  charged as if training resumed from a checkpoint: a run of ``E`` epochs stopped after ``e`` costs
  ``e / E`` of the call's cost, and continuing it from ``e1`` to ``e2`` epochs costs ``(e2 - e1) / e2``
  of the call to ``e2`` epochs (the most favourable accounting for these methods);
- no method starts an evaluation once ``spent >= budget``, so the overshoot is at most one evaluation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mfbo.errors import ConfigError, ObjectiveError
from mfbo.optimize._space import SearchSpace
from mfbo.optimize._types import MinimizeResult, Trial

__all__ = ["BudgetTracker", "as_callable", "sample_uniform", "check_budget", "feasible"]


def as_callable(objective: Any) -> Callable[[dict, float, int], Mapping]:
    """An ``objective(params, data_fraction, epochs)`` callable from a callable or an ``Objective``."""
    if hasattr(objective, "evaluate") and callable(objective.evaluate):
        return objective.evaluate
    if callable(objective):
        return objective
    raise ConfigError(f"objective must be callable or have an evaluate() method, got {type(objective).__name__}")


def check_budget(budget: float) -> float:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise ConfigError(f"budget must be a positive number of full-fidelity equivalents, got {budget!r}")
    return float(budget)


def sample_uniform(space: SearchSpace, rng: np.random.Generator, n: int = 1) -> list[dict]:
    """``n`` independent uniform draws (log-uniform for log-scaled parameters) of design configurations."""
    out = []
    for _ in range(n):
        cfg: dict[str, Any] = {}
        for p in space.design_parameters:
            if p.type == "categorical":
                cfg[p.name] = p.choices[int(rng.integers(len(p.choices)))]
            elif p.type == "int":
                if p.log:
                    # log-uniform over the integers: widen by half a step so the end points get their share
                    lo, hi = math.log(max(p.low - 0.5, 0.5)), math.log(p.high + 0.5)
                    v = int(np.clip(np.rint(math.exp(rng.uniform(lo, hi))), p.low, p.high))
                else:
                    v = int(rng.integers(int(p.low), int(p.high) + 1))
                cfg[p.name] = v
            else:
                u = rng.random()
                cfg[p.name] = float(p.from_unit(np.array(u)))
        out.append(cfg)
    return out


def feasible(config: Mapping[str, Any], constraints: Sequence[Any]) -> bool:
    """Whether ``config`` satisfies every constraint (objects with ``is_satisfied(configs)``)."""
    return all(bool(np.asarray(c.is_satisfied([config]))[0]) for c in constraints)


class BudgetTracker:
    """Runs objective calls, records trials, charges their cost in FFE and keeps the history.

    Args:
        objective: ``objective(params, data_fraction, epochs) -> {"curve": [...], "cost": s}`` or an
            ``Objective`` (its ``evaluate`` is called).
        space: the search space (its fidelity targets define full fidelity).
        budget: total budget in FFE.
        method: method name recorded in the result.
        callback: optional ``callback(trial, history_entry)`` after every history point (as in
            :func:`mfbo.minimize`); returning True stops the method.
    """

    def __init__(self, objective: Any, space: SearchSpace | Mapping, budget: float, method: str,
                 callback: Callable | None = None):
        self.space = SearchSpace.from_dict(space)
        self.fn = as_callable(objective)
        self.budget = check_budget(budget)
        self.method = method
        self.callback = callback
        target = self.space.target_fidelities()
        dp, ip = self.space.data_fidelity, self.space.iteration_fidelity
        self.target_fraction = float(target[dp.name]) if dp is not None else 1.0
        self.target_epochs = int(target[ip.name]) if ip is not None else 1
        self.min_epochs = int(ip.low) if ip is not None else 1
        ffe = getattr(objective, "full_fidelity_cost", None)
        self.ffe_seconds: float | None = float(ffe) if isinstance(ffe, (int, float)) and ffe > 0 else None
        self.spent_seconds = 0.0
        self.trials: list[Trial] = []
        self.history: list[dict[str, Any]] = []
        self.t_start = time.perf_counter()
        self.stopped = False

    # -- accounting ------------------------------------------------------------------------
    @property
    def spent(self) -> float:
        """Cost spent so far in FFE."""
        if self.ffe_seconds is None:
            return 0.0
        return self.spent_seconds / self.ffe_seconds

    @property
    def exhausted(self) -> bool:
        """True once the budget is spent (or a callback asked to stop): start no further evaluation."""
        return self.stopped or self.spent >= self.budget

    def call(self, params: Mapping[str, Any], data_fraction: float | None = None,
             epochs: int | None = None) -> tuple[list[float], float]:
        """Evaluate once (not yet charged); returns ``(curve, cost seconds)``."""
        df = self.target_fraction if data_fraction is None else float(data_fraction)
        ep = self.target_epochs if epochs is None else int(epochs)
        t0 = time.perf_counter()
        out = self.fn(dict(params), df, ep)
        wall = time.perf_counter() - t0
        if not isinstance(out, Mapping) or "curve" not in out:
            raise ObjectiveError(f"the objective must return a mapping with a 'curve' list, got {type(out).__name__}")
        curve = [float(v) for v in out["curve"]]
        if not curve:
            raise ObjectiveError("the objective returned an empty 'curve'")
        cost = float(out.get("cost", wall)) if out.get("cost") is not None else wall
        if self.ffe_seconds is None:
            # Scale the first call to target fidelity, proportionally to fraction x epochs.
            self.ffe_seconds = max(cost * (self.target_fraction / df) * (self.target_epochs / ep), 1e-12)
        return curve, cost

    def record(self, params: Mapping[str, Any], data_fraction: float | None, epochs: int, curve: Sequence[float],
               charged_seconds: float, status: str = "completed", metadata: dict | None = None) -> Trial:
        """Record one (possibly partial) evaluation and charge ``charged_seconds``."""
        df = self.target_fraction if data_fraction is None else float(data_fraction)
        self.spent_seconds += float(charged_seconds)
        trial = Trial(index=len(self.trials), params=dict(params), data_fraction=df, epochs=int(epochs),
                      curve=[float(v) for v in curve], cost=float(charged_seconds), status=status,
                      metadata=dict(metadata or {}))
        self.trials.append(trial)
        return trial

    def note(self, recommended: Mapping[str, Any] | None) -> None:
        """Append a history point (cumulative FFE, current recommendation) and call the callback."""
        if recommended is None:
            return
        entry = {"cost_ffe": self.spent, "recommended": dict(recommended), "n_trials": len(self.trials),
                 "wall_time_s": time.perf_counter() - self.t_start}
        self.history.append(entry)
        if self.callback is not None and self.trials and self.callback(self.trials[-1], entry) is True:
            self.stopped = True

    def result(self, best_params: Mapping[str, Any] | None, info: dict | None = None) -> MinimizeResult:
        if best_params is None:
            raise ObjectiveError(f"{self.method}: no evaluation completed within the budget of {self.budget} FFE")
        return MinimizeResult(best_params=dict(best_params), trials=self.trials, cost_spent=self.spent,
                              cost_spent_seconds=self.spent_seconds, method=self.method, history=self.history,
                              info={"ffe_seconds": self.ffe_seconds, "budget_ffe": self.budget,
                                    "wall_time_s": time.perf_counter() - self.t_start, **(info or {})})
