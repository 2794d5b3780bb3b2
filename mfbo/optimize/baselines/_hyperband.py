"""Hyperband (Li, Jamieson, DeSalvo, Rostamizadeh & Talwalkar, JMLR 2018) over the epoch fidelity."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from mfbo.errors import ConfigError, OptimizerError
from mfbo.optimize._types import MinimizeResult
from mfbo.optimize.baselines._common import BudgetTracker, feasible, sample_uniform

__all__ = ["hyperband", "hyperband_brackets"]


def hyperband_brackets(min_epochs: int, max_epochs: int, eta: int = 3) -> list[list[tuple[int, int]]]:
    """The Hyperband schedule: per bracket (most aggressive first) a list of ``(n_configs, epochs)`` rungs.

    Args:
        min_epochs, max_epochs: resource range (epochs).
        eta: reduction factor.

    Returns:
        ``brackets[k] = [(n_0, e_0), (n_1, e_1), ...]`` with ``e_last = max_epochs``.
    """
    if eta < 2:
        raise ConfigError(f"hyperband: eta must be >= 2, got {eta}")
    ratio = max_epochs / max(min_epochs, 1)
    s_max = int(math.floor(math.log(ratio) / math.log(eta) + 1e-9)) if ratio > 1 else 0
    brackets = []
    for s in range(s_max, -1, -1):
        n = int(math.ceil((s_max + 1) / (s + 1) * eta ** s))
        rungs = []
        for i in range(s + 1):
            n_i = max(int(math.floor(n * eta ** (-i))), 1)
            e_i = int(round(max_epochs * eta ** (i - s)))
            rungs.append((n_i, min(max(e_i, min_epochs), max_epochs)))
        brackets.append(rungs)
    return brackets


def hyperband(objective: Any, space: Any, budget: float, seed: int = 0, workers: int = 1, prior: Any = None,
              constraints: Sequence[Any] = (), callback: Any = None, eta: int = 3) -> MinimizeResult:
    """Hyperband with successive halving on epochs, data fraction at target, brackets repeated until the
    budget is spent. Promoted configurations continue from their checkpoint (charged for the extra epochs).

    Args:
        objective, space, budget, seed, workers, prior, constraints, callback: as in :func:`mfbo.minimize`
            (``workers`` and ``prior`` are accepted and ignored).
        eta: reduction factor (3, as in the paper).

    Returns:
        MinimizeResult; the recommendation is the best configuration evaluated at the largest number of
        epochs reached so far.
    """
    tr = BudgetTracker(objective, space, budget, "hyperband", callback)
    if tr.space.iteration_fidelity is None:
        raise ConfigError("hyperband needs an iteration (epochs) fidelity in the search space")
    rng = np.random.default_rng(seed)
    brackets = hyperband_brackets(tr.min_epochs, tr.target_epochs, eta)
    best: dict[int, tuple[float, dict]] = {}  # epochs -> (best value, config)

    def incumbent():
        return best[max(best)][1] if best else None

    b = 0
    while not tr.exhausted:
        rungs = brackets[b % len(brackets)]
        b += 1
        configs = []
        for _ in range(rungs[0][0]):
            for _ in range(10_000):
                cfg = sample_uniform(tr.space, rng)[0]
                if feasible(cfg, constraints):
                    break
            else:
                raise OptimizerError("hyperband: no feasible configuration in 10000 draws; check constraints")
            configs.append(cfg)
        trained = [0] * len(configs)  # epochs each configuration has been trained for
        alive = list(range(len(configs)))
        for i, (_, ep) in enumerate(rungs):
            values = {}
            for k in alive:
                if tr.exhausted:
                    break
                curve, cost = tr.call(configs[k], None, ep)
                charged = cost * (ep - trained[k]) / ep
                tr.record(configs[k], None, ep, curve, charged,
                          metadata={"bracket": len(rungs) - 1, "rung": i, "continued_from": trained[k]})
                trained[k] = ep
                values[k] = curve[-1]
                if ep not in best or curve[-1] < best[ep][0]:
                    best[ep] = (curve[-1], configs[k])
                tr.note(incumbent())
            if tr.exhausted or i + 1 == len(rungs):
                break
            n_next = rungs[i + 1][0]
            alive = sorted(values, key=values.get)[:n_next]
    return tr.result(incumbent(), {"eta": eta, "brackets": brackets})
