"""Random search at full fidelity."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mfbo.errors import OptimizerError
from mfbo.optimize._types import MinimizeResult
from mfbo.optimize.baselines._common import BudgetTracker, feasible, sample_uniform

__all__ = ["random_search"]


def random_search(objective: Any, space: Any, budget: float, seed: int = 0, workers: int = 1, prior: Any = None,
                  constraints: Sequence[Any] = (), callback: Any = None, max_rejections: int = 10_000
                  ) -> MinimizeResult:
    """Uniform random search, every evaluation at target fidelity.

    Args:
        objective: ``objective(params, data_fraction, epochs)`` (see :class:`BudgetTracker`).
        space: search space (dict or SearchSpace).
        budget: budget in FFE.
        seed: seed of the sampler.
        workers: accepted for API compatibility; evaluations run one at a time.
        prior: ignored (random search is prior-free).
        constraints: objects with ``is_satisfied(configs)``; violating draws are rejected.
        callback: ``callback(trial, history_entry)`` after each trial; True stops.
        max_rejections: give up after this many consecutive infeasible draws.

    Returns:
        MinimizeResult whose recommendation is the best observed configuration.
    """
    tr = BudgetTracker(objective, space, budget, "random", callback)
    rng = np.random.default_rng(seed)
    best, best_y = None, np.inf
    while not tr.exhausted:
        for _ in range(max_rejections):
            cfg = sample_uniform(tr.space, rng)[0]
            if feasible(cfg, constraints):
                break
        else:
            raise OptimizerError(f"random: no feasible configuration in {max_rejections} draws; check constraints")
        curve, cost = tr.call(cfg)
        tr.record(cfg, None, len(curve), curve, cost)
        if curve[-1] < best_y:
            best, best_y = cfg, curve[-1]
        tr.note(best)
    return tr.result(best, {"best_observed": best_y})
