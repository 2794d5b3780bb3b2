"""Optuna's TPE sampler with its HyperbandPruner on epochs: the seed author's approach."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mfbo.optimize._types import MinimizeResult
from mfbo.optimize.baselines._common import BudgetTracker, feasible

__all__ = ["optuna_tpe_hb"]


def _suggest(trial, space) -> dict:
    cfg = {}
    for p in space.design_parameters:
        if p.type == "categorical":
            cfg[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.type == "int":
            cfg[p.name] = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
        else:
            cfg[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return cfg


def optuna_tpe_hb(objective: Any, space: Any, budget: float, seed: int = 0, workers: int = 1, prior: Any = None,
                  constraints: Sequence[Any] = (), callback: Any = None, reduction_factor: int = 3,
                  n_startup_trials: int = 10) -> MinimizeResult:
    """TPE + Hyperband pruning, configured as Optuna's documentation shows.

    Each trial trains at target data fraction for the full number of epochs and reports the learning
    curve epoch by epoch (``trial.report``); when ``trial.should_prune()`` fires after epoch ``e`` the
    trial is pruned and charged ``e / E`` of its cost (see :mod:`._common`).

    Args:
        objective, space, budget, seed, workers, prior, constraints, callback: as in :func:`mfbo.minimize`
            (``workers`` and ``prior`` are accepted and ignored).
        reduction_factor: the pruner's eta.
        n_startup_trials: TPE's random start-up trials (Optuna's default 10).

    Returns:
        MinimizeResult; the recommendation is Optuna's ``best_trial`` (best complete trial), before any
        trial completes the best pruned one at its last reported epoch.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tr = BudgetTracker(objective, space, budget, "optuna-tpe-hb", callback)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
    pruner = optuna.pruners.HyperbandPruner(min_resource=tr.min_epochs, max_resource=tr.target_epochs,
                                            reduction_factor=reduction_factor)
    # A fixed study name: the HyperbandPruner assigns brackets by hashing it, so this keeps runs reproducible.
    study = optuna.create_study(study_name=f"mfbo-optuna-tpe-hb-seed{seed}", direction="minimize",
                                sampler=sampler, pruner=pruner)
    best_partial: tuple[int, float, dict] | None = None  # (epochs, value, config) among pruned trials

    def recommendation():
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if done:
            return dict(min(done, key=lambda t: t.value).params)
        return best_partial[2] if best_partial else None

    while not tr.exhausted:
        trial = study.ask()
        cfg = _suggest(trial, tr.space)
        if constraints and not feasible(cfg, constraints):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        curve, cost = tr.call(cfg)
        n = len(curve)
        pruned_at = None
        for e, value in enumerate(curve, start=1):
            trial.report(value, e)
            if e < n and trial.should_prune():
                pruned_at = e
                break
        if pruned_at is None:
            tr.record(cfg, None, n, curve, cost, metadata={"optuna_trial": trial.number})
            study.tell(trial, curve[-1])
        else:
            part = curve[:pruned_at]
            tr.record(cfg, None, pruned_at, part, cost * pruned_at / n, status="completed",
                      metadata={"optuna_trial": trial.number, "pruned": True})
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            key = (pruned_at, -part[-1])
            if best_partial is None or key > (best_partial[0], -best_partial[1]):
                best_partial = (pruned_at, part[-1], cfg)
        tr.note(recommendation())
    return tr.result(recommendation(), {"n_optuna_trials": len(study.trials)})
