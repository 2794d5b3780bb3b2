"""Baselines: each runs on a tiny budget, respects it, recommends a valid configuration, is seed-reproducible."""

from __future__ import annotations

import pytest

from mfbo.errors import ConfigError
from mfbo.optimize import MinimizeResult
from mfbo.optimize.baselines import (
    UnknownBaseline,
    get_baseline,
    hyperband_brackets,
    list_baselines,
    register_baseline,
)
from mfbo.optimize.problems import get_problem

# (method, budget in FFE, options) -- small budgets and Ax's initialisation cut short keep this fast.
CASES = [
    ("random", 4.0, {}),
    ("hyperband", 4.0, {}),
    ("optuna-tpe-hb", 4.0, {"n_startup_trials": 3}),
    ("ax-sf", 3.0, {"initialization_budget": 2, "use_model_predictions": False}),
]


def _run(method, budget, options, seed=0, problem="hartmann6_mf", **kw):
    p = get_problem(problem, seed=seed)
    return p, get_baseline(method)(p, p.space, budget, seed=seed, **options, **kw)


def test_registry():
    assert {"random", "ax-sf", "optuna-tpe-hb", "hyperband"} <= set(list_baselines())
    with pytest.raises(ConfigError, match="already registered"):
        register_baseline("random", lambda *a, **k: None)
    with pytest.raises(UnknownBaseline, match="unknown optimisation method 'nope'"):
        get_baseline("nope")


@pytest.mark.parametrize("method,budget,options", CASES, ids=[c[0] for c in CASES])
def test_baseline_runs_within_budget_and_is_reproducible(method, budget, options):
    p, res = _run(method, budget, options)
    assert isinstance(res, MinimizeResult) and res.method == method
    # budget: never starts an evaluation once spent >= budget, so the overshoot is below one evaluation
    charged = [t.cost / p.full_fidelity_cost for t in res.trials]
    assert res.cost_spent == pytest.approx(sum(charged))
    assert budget <= res.cost_spent < budget + max(charged) + 1e-9
    assert res.cost_spent_seconds == pytest.approx(res.cost_spent * p.full_fidelity_cost)
    # valid recommendation: design parameters only, inside the space
    assert set(res.best_params) == {q.name for q in p.space.design_parameters}
    assert p.space.validate(res.best_params) == res.best_params
    # history: nondecreasing cumulative cost, one point per evaluation, last recommendation = best_params
    costs = [h["cost_ffe"] for h in res.history]
    assert costs == sorted(costs) and costs[-1] == pytest.approx(res.cost_spent)
    assert res.history[-1]["recommended"] == res.best_params
    # seed-reproducible
    _, again = _run(method, budget, options)
    assert [t.params for t in again.trials] == [t.params for t in res.trials]
    assert again.best_params == res.best_params


def test_random_search_full_fidelity_and_seeds_differ():
    p, a = _run("random", 3.0, {}, seed=0)
    _, b = _run("random", 3.0, {}, seed=1)
    assert all(t.data_fraction == 1.0 and t.epochs == p.space["epochs"].target for t in a.trials)
    assert [t.params for t in a.trials] != [t.params for t in b.trials]
    best = min(a.trials, key=lambda t: t.curve[-1])
    assert a.best_params == best.params


def test_hyperband_schedule_matches_the_paper():
    assert hyperband_brackets(1, 81, 3)[0] == [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)]
    assert hyperband_brackets(1, 81, 3)[-1] == [(5, 81)]
    assert [len(b) for b in hyperband_brackets(1, 27, 3)] == [4, 3, 2, 1]
    with pytest.raises(ConfigError):
        hyperband_brackets(1, 27, 1)


def test_hyperband_promotes_and_charges_only_the_extra_epochs():
    p, res = _run("hyperband", 3.0, {}, problem="learning_curve")
    first = [t for t in res.trials if t.metadata["bracket"] == 4]
    assert [t.epochs for t in first[:81]] == [1] * 81
    promoted = [t for t in res.trials if t.metadata["continued_from"] > 0]
    assert promoted, "no configuration was promoted"
    t = promoted[0]
    full = p.full_fidelity_cost * t.epochs / p.space["epochs"].target
    assert t.cost == pytest.approx(full * (t.epochs - t.metadata["continued_from"]) / t.epochs)


def test_optuna_tpe_hb_prunes_and_charges_pruned_trials_partially():
    p, res = _run("optuna-tpe-hb", 6.0, {"n_startup_trials": 3}, problem="learning_curve")
    pruned = [t for t in res.trials if t.metadata.get("pruned")]
    assert pruned and len(pruned) < len(res.trials) + 1
    T = p.space["epochs"].target
    for t in pruned:
        assert t.epochs < T and len(t.curve) == t.epochs
        assert t.cost == pytest.approx(p.full_fidelity_cost * t.epochs / T)
    assert all(t.data_fraction == 1.0 for t in res.trials)


def test_callback_can_stop_and_plain_callables_get_an_ffe_unit():
    calls = []

    def objective(params, data_fraction, epochs):
        # a plain function with no full_fidelity_cost: 1 FFE is inferred from the first call's cost
        return {"curve": [(params["x"] - 0.3) ** 2 + 1.0 / e for e in range(1, epochs + 1)],
                "cost": 2.0 * data_fraction * epochs}

    space = {"x": {"type": "float", "bounds": [0.0, 1.0]},
             "epochs": {"type": "fidelity", "bounds": [1, 9], "target": 9}}
    res = get_baseline("hyperband")(objective, space, 2.0, seed=0)
    assert res.info["ffe_seconds"] == pytest.approx(18.0)
    assert res.cost_spent == pytest.approx(sum(t.cost for t in res.trials) / 18.0)
    res = get_baseline("random")(objective, space, 50.0, seed=0,
                                 callback=lambda trial, entry: calls.append(entry) or len(calls) >= 3)
    assert len(res.trials) == 3 and len(calls) == 3


def test_bad_budget_is_a_config_error():
    p = get_problem("hartmann6_mf")
    with pytest.raises(ConfigError, match="budget"):
        get_baseline("random")(p, p.space, 0, seed=0)
