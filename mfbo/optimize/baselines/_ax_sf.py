"""Ax's default single-fidelity Bayesian optimisation at full fidelity (Ax's ``Client`` API)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from mfbo.optimize._types import MinimizeResult
from mfbo.optimize.baselines._common import BudgetTracker, feasible

__all__ = ["ax_single_fidelity"]


def _ax_parameters(space) -> list:
    from ax import ChoiceParameterConfig, RangeParameterConfig

    out = []
    for p in space.design_parameters:
        if p.type == "categorical":
            first = p.choices[0]
            ptype = ("bool" if isinstance(first, bool) else "int" if isinstance(first, int)
                     else "float" if isinstance(first, float) else "str")
            out.append(ChoiceParameterConfig(name=p.name, values=list(p.choices), parameter_type=ptype,
                                             is_ordered=False))
        else:
            bounds = (int(p.low), int(p.high)) if p.type == "int" else (float(p.low), float(p.high))
            out.append(RangeParameterConfig(name=p.name, bounds=bounds, parameter_type=p.type,
                                            scaling="log" if p.log else "linear"))
    return out


def ax_single_fidelity(objective: Any, space: Any, budget: float, seed: int = 0, workers: int = 1,
                       prior: Any = None, constraints: Sequence[Any] = (), callback: Any = None,
                       method: str = "fast", initialization_budget: int | None = None,
                       use_model_predictions: bool = True) -> MinimizeResult:
    """Ax ``Client`` with its default generation strategy (Sobol, then BoTorch), every trial at target
    fidelity, the recommendation from ``Client.get_best_parameterization()``.

    Args:
        objective, space, budget, seed, workers, prior, constraints, callback: as in :func:`mfbo.minimize`
            (``workers`` and ``prior`` are accepted and ignored; constraint violations are marked failed).
        method: Ax's generation-strategy method ("fast" is Ax's default, "quality", "random_search").
        initialization_budget: Sobol trials before BO (None: Ax's default); small values make tests fast.
        use_model_predictions: passed to ``get_best_parameterization`` (Ax's default True).

    Returns:
        MinimizeResult; ``info["ax_client"]`` is not kept (not picklable) but ``info["ax_trials"]`` counts trials.
    """
    # Ax logs every trial at INFO; silence it for the run (restored on exit).
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        return _run(objective, space, budget, seed, constraints, callback, method, initialization_budget,
                    use_model_predictions)
    finally:
        logging.disable(previous)


def _run(objective, space, budget, seed, constraints, callback, method, initialization_budget,
         use_model_predictions) -> MinimizeResult:
    import warnings

    from ax import Client

    tr = BudgetTracker(objective, space, budget, "ax-sf", callback)
    client = Client(random_seed=seed)
    client.configure_experiment(parameters=_ax_parameters(tr.space), name="mfbo_ax_sf")
    client.configure_optimization(objective="-loss")
    gs_kwargs: dict[str, Any] = {"method": method, "initialization_random_seed": seed}
    if initialization_budget is not None:
        gs_kwargs["initialization_budget"] = int(initialization_budget)
    client.configure_generation_strategy(**gs_kwargs)
    best_obs: tuple[float, dict] | None = None

    def recommendation():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                params, _, _, _ = client.get_best_parameterization(use_model_predictions=use_model_predictions)
            return tr.space.validate(params)
        except Exception:  # noqa: BLE001 - Ax refuses before enough data; fall back to best observed
            return best_obs[1] if best_obs else None

    while not tr.exhausted:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (index, params), = client.get_next_trials(max_trials=1).items()
        cfg = tr.space.validate(params)
        if constraints and not feasible(cfg, constraints):
            client.mark_trial_failed(index)
            continue
        curve, cost = tr.call(cfg)
        tr.record(cfg, None, len(curve), curve, cost, metadata={"ax_trial": index})
        client.complete_trial(index, raw_data={"loss": curve[-1]})
        if best_obs is None or curve[-1] < best_obs[0]:
            best_obs = (curve[-1], cfg)
        tr.note(recommendation())
    return tr.result(recommendation(), {"ax_method": method})
