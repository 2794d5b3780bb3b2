"""MultiFidelityOptimizer and mfbo.minimize: behaviour on small, fast problems (few restarts, few raw samples)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mfbo.errors import ConfigError, OptimizerError
from mfbo.optimize import MultiFidelityOptimizer, SearchSpace, minimize, trace_epochs

# Small acquisition settings keep every model-based ask well under a second on one core.
FAST = {"raw_samples": 64, "num_restarts": 1, "trace_points": 3, "max_gp_points": 60, "n_initial": 4}

SPACE = {
    "x": {"type": "float", "bounds": [0.0, 1.0]},
    "lr": {"type": "float", "bounds": [1e-4, 1e-1], "scale": "log"},
    "act": {"type": "categorical", "choices": ["tanh", "silu"]},
    "data_fraction": {"type": "fidelity", "bounds": [0.05, 1.0], "target": 1.0},
    "epochs": {"type": "fidelity", "bounds": [1, 20], "target": 20},
}


def toy_value(p, frac=1.0, epochs=20):
    """A two-fidelity toy: asymptote depends on the design, worsens at small fractions; curve decays in epochs."""
    a = (p["x"] - 0.3) ** 2 + 0.05 * (math.log10(p["lr"]) + 2.5) ** 2 + (0.1 if p["act"] == "tanh" else 0.0)
    a += 0.2 * (1.0 - frac)
    return [a + 0.5 * (t ** -0.7 - 20 ** -0.7) for t in range(1, epochs + 1)]


def toy(p, frac, epochs):
    return {"curve": toy_value(p, frac, epochs), "cost": 10.0 * frac * epochs / 20}


toy.full_fidelity_cost = 10.0


class UpperBound:
    """Constraint x + 10 * lr <= 0.6 (a stand-in with the Constraint interface)."""

    def is_satisfied(self, configs):
        return np.array([c["x"] + 10 * c["lr"] <= 0.6 for c in configs], dtype=bool)


def _run(opt, fn, n):
    for _ in range(n):
        (c,) = opt.ask(1)
        out = fn(c.params, c.data_fraction, c.epochs)
        opt.tell(c.trial_index, out["curve"], out["cost"])


def test_trace_epochs_are_log_spaced_and_end_at_last():
    eps = trace_epochs(81, 5)
    assert eps[-1] == 81 and eps[0] == 1 and len(eps) <= 5
    assert all(b > a for a, b in zip(eps, eps[1:]))
    ratios = np.diff(np.log(eps))
    assert ratios.max() / ratios.min() < 2.5  # roughly geometric
    assert trace_epochs(1, 5) == [1]
    assert trace_epochs(30, 1) == [30]


def test_cost_model_learns_exponents_from_wall_times():
    from mfbo.optimize import LogLinearCostModel

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.random(40), rng.uniform(0.05, 1, 40), rng.uniform(0.01, 1, 40)])
    cost = 3.0 * X[:, 1] ** 0.7 * X[:, 2] * np.exp(1.5 * X[:, 0])
    m = LogLinearCostModel(n_design=1, fidelity_cols=[1, 2], ridge=1e-3).fit(X, cost)
    assert m.coef[1] == pytest.approx(0.7, abs=0.02) and m.coef[2] == pytest.approx(1.0, abs=0.02)
    assert m.coef[3] == pytest.approx(1.5, abs=0.05)
    assert np.allclose(m.predict(X), cost, rtol=0.05)
    import torch

    assert np.allclose(m.module(scale=2.0)(torch.as_tensor(X)).squeeze(-1).numpy(), cost / 2.0, rtol=0.05)


def test_cost_cooling_exponent_scales_only_the_design_part_of_the_cost():
    from mfbo.optimize import LogLinearCostModel

    rng = np.random.default_rng(1)
    X = np.column_stack([rng.random(30), rng.uniform(0.05, 1, 30), rng.uniform(0.01, 1, 30)])
    cost = X[:, 1] * X[:, 2] * np.exp(2.0 * X[:, 0])
    m = LogLinearCostModel(n_design=1, fidelity_cols=[1, 2], ridge=1e-3).fit(X, cost)
    cold = m.predict(X, design_exponent=0.0)
    assert np.allclose(cold / (X[:, 1] * X[:, 2]), cold[0] / (X[0, 1] * X[0, 2]), rtol=0.02)  # design-free
    half = m.predict(X, design_exponent=0.5)
    assert np.allclose(half, np.sqrt(cold * m.predict(X)), rtol=1e-9)  # geometric interpolation
    import torch

    mod = m.module(scale=1.0, design_exponent=0.5)
    assert np.allclose(mod(torch.as_tensor(X)).squeeze(-1).numpy(), half, rtol=1e-9)


def test_cost_cooling_exponent_falls_from_one_to_zero_as_the_budget_is_spent():
    no_budget = MultiFidelityOptimizer(SPACE, seed=0, **FAST)
    _run(no_budget, toy, 6)
    assert no_budget.design_cost_exponent() == 1.0
    opt = MultiFidelityOptimizer(SPACE, seed=0, budget=2.0, cost_cooling=True, **FAST)
    seen = []
    for _ in range(40):
        _run(opt, toy, 1)
        seen.append(opt.design_cost_exponent())
        spent = sum(t.cost for t in opt.trials) / toy.full_fidelity_cost
        if spent > 2.2:
            break
    assert seen[0] == pytest.approx(1.0)  # still in the initial design
    assert all(b <= a + 1e-12 for a, b in zip(seen, seen[1:]))  # never rises
    assert seen[-1] == 0.0  # budget gone: only the fidelities' cost counts
    assert opt.last_timings["design_cost_exponent"] < 1.0
    off = MultiFidelityOptimizer(SPACE, seed=0, budget=2.0, cost_cooling=False, **FAST)
    _run(off, toy, 6)
    assert off.design_cost_exponent() == 1.0
    with pytest.raises(OptimizerError, match="budget"):
        MultiFidelityOptimizer(SPACE, budget=-1.0)
    with pytest.raises(OptimizerError, match="budget"):  # a bool is not a number of FFE
        MultiFidelityOptimizer(SPACE, budget=True)


def test_minimize_spends_little_at_target_and_beats_initial_design():
    stop_after = 16
    beats = []
    for seed in range(10):  # one seed is a coin flip at 16 trials; require a majority of ten
        # effort="full": "auto" follows measured time, and would economise on these 0.05-0.5 s trials
        result = minimize(toy, SPACE, budget=6.0, seed=seed, effort="full",
                          callback=lambda t, h: t.index >= stop_after, **FAST)
        trials = result.trials
        at_target = [t for t in trials if t.data_fraction == 1.0 and t.epochs == 20]
        target_ffe = sum(t.cost for t in at_target) / toy.full_fidelity_cost
        assert result.cost_spent <= 6.0 + 1.0
        assert target_ffe < 0.5 * 6.0
        assert result.info["verification"]["status"] == "completed"
        initial = [t for t in trials if t.metadata.get("source") == "initial"]
        assert len(initial) == FAST["n_initial"]
        assert all(t.data_fraction <= 0.3 + 1e-9 and t.epochs <= 6 for t in initial)
        best_initial = min(toy_value(t.params)[-1] for t in initial)
        beats.append(toy_value(result.best_params)[-1] < best_initial)
        assert set(result.best_params) == {"x", "lr", "act"}
    assert sum(beats) >= 6, beats
    opt = result.optimizer
    # one history entry per finished trial, cumulative cost non-decreasing
    assert len(result.history) == len(trials)
    assert all(b["cost_ffe"] >= a["cost_ffe"] for a, b in zip(result.history, result.history[1:]))
    # the Ax experiment holds every trial, arm and per-epoch observation
    exp = opt.experiment
    assert len(exp.trials) == len(trials)
    df = exp.lookup_data().full_df
    for t in trials:
        ax_trial = exp.trials[t.index]
        assert ax_trial.status.name == t.status.upper()
        assert ax_trial.arm.parameters["epochs"] == t.epochs
        assert (df["trial_index"] == t.index).sum() == len(t.curve)


def test_same_seed_gives_the_same_trials_at_full_effort():
    def run(seed):
        result = minimize(toy, SPACE, budget=6.0, seed=seed, effort="full",
                          callback=lambda t, h: t.index >= 10, **FAST)
        return [(t.params, t.data_fraction, t.epochs, t.metadata["source"]) for t in result.trials], result

    first, result = run(0)
    again, _ = run(0)
    assert first == again
    assert run(1)[0] != first  # the seed does reach the proposals
    model = [t for t in result.trials if t.metadata["source"].startswith("model")]
    assert model and all(t.metadata["effort"] == "full" for t in model)
    economy = minimize(toy, SPACE, budget=6.0, seed=0, effort="auto", effort_share=1e-9,
                       callback=lambda t, h: t.index >= 6, **FAST)
    later = [t for t in economy.trials if t.metadata["source"].startswith("model")][1:]
    assert later and all(t.metadata["effort"] == "economy" for t in later)


def test_learning_curve_problem_less_than_half_the_budget_at_target_fidelity():
    from mfbo.optimize.problems import get_problem

    problem = get_problem("learning_curve", seed=0)
    result = minimize(problem, problem.space, budget=2.0, seed=0, verify=False, **FAST)
    tgt = problem.target
    at_target = sum(t.cost for t in result.trials
                    if t.data_fraction >= tgt["data_fraction"] - 1e-9 and t.epochs >= tgt["epochs"])
    spent = sum(t.cost for t in result.trials)
    assert result.cost_spent >= 1.5  # the run did use its budget
    assert at_target < 0.5 * spent, (at_target, spent)
    # cheap trials dominate: most trials ran below a tenth of the target cost
    cheap = [t for t in result.trials if t.data_fraction * t.epochs / tgt["epochs"] < 0.1]
    assert len(cheap) > len(result.trials) / 2


def test_pending_points_are_never_proposed_twice():
    opt = MultiFidelityOptimizer(SPACE, seed=3, **FAST)
    _run(opt, toy, 5)
    batch = opt.ask(3) + opt.ask(2)
    keys = [tuple(np.round(opt.space.encode([c.params])[0], 9)) for c in batch]
    assert len(set(keys)) == len(keys)
    assert all(t.status == "running" for t in opt.trials[-5:])
    assert sum(t.metadata["source"].startswith("model") for t in opt.trials[-5:]) >= 4


def test_failing_objective_call_is_a_failed_trial_in_ax():
    def flaky(p, frac, epochs):
        if p["act"] == "tanh":
            raise RuntimeError("diverged (test)")
        return toy(p, frac, epochs)

    result = minimize(flaky, SPACE, budget=3.0, seed=0, callback=lambda t, h: t.index >= 7, **FAST)
    failed = [t for t in result.trials if t.status == "failed"]
    assert failed and all("diverged (test)" in t.error for t in failed)
    exp = result.optimizer.experiment
    for t in failed:
        assert exp.trials[t.index].status.name == "FAILED"
        assert "diverged (test)" in exp.trials[t.index].run_metadata["error"]
    assert result.best_params["act"] == "silu"


def test_every_objective_failure_raises_a_clear_error():
    def broken(p, frac, epochs):
        raise ValueError("no data")

    from mfbo.errors import ObjectiveError

    with pytest.raises(ObjectiveError, match="no trial completed.*no data"):
        minimize(broken, SPACE, budget=2.0, seed=0, max_consecutive_failures=3, **FAST)


def test_constraints_never_violated():
    con = UpperBound()
    opt = MultiFidelityOptimizer(SPACE, seed=5, constraints=[con], **FAST)
    _run(opt, toy, 7)
    opt.ask(2)
    configs = [t.params for t in opt.trials]
    assert con.is_satisfied(configs).all()
    assert con.is_satisfied([opt.recommend()]).all()


def test_state_dict_round_trip_and_resume():
    # refit_every=1: both optimisers fit their hyperparameters from scratch on the same data, so their
    # recommendations can be compared (the default schedule warm-starts, which the rebuilt one cannot)
    opt = MultiFidelityOptimizer(SPACE, seed=2, refit_every=1, **FAST)
    _run(opt, toy, 5)
    running = opt.ask(1)[0]
    bad = opt.ask(1)[0]
    opt.tell_failed(bad.trial_index, "worker died")
    state = json.loads(json.dumps(opt.state_dict()))
    opt2 = MultiFidelityOptimizer.from_state_dict(state)
    assert [t.to_dict() for t in opt2.trials] == [t.to_dict() for t in opt.trials]
    assert len(opt2.experiment.trials) == len(opt.trials)
    assert opt2.experiment.trials[bad.trial_index].status.name == "FAILED"
    # same data, same seed: the same recommendation up to the GP fit's numerical tolerance
    r1, r2 = opt.recommend(), opt2.recommend()
    assert r1["act"] == r2["act"]
    assert r2["x"] == pytest.approx(r1["x"], abs=0.02) and r2["lr"] == pytest.approx(r1["lr"], rel=0.05)
    # the restored running trial is still pending: it can be told, and is not proposed again
    nxt = opt2.ask(1)[0]
    assert nxt.params != running.params
    out = toy(running.params, running.data_fraction, running.epochs)
    opt2.tell(running.trial_index, out["curve"], out["cost"])
    with pytest.raises(OptimizerError, match="not running"):
        opt2.tell(running.trial_index, out["curve"], out["cost"])


def test_attach_external_trial_and_surrogate_predicts_observations():
    opt = MultiFidelityOptimizer(SPACE, seed=0, **FAST)
    _run(opt, toy, 6)
    cfg = {"x": 0.3, "lr": 10 ** -2.5, "act": "silu"}
    idx = opt.attach(cfg, 1.0, 20)
    out = toy(cfg, 1.0, 20)
    opt.tell(idx, out["curve"], out["cost"])
    s = opt.surrogate()
    mean, sd = s.predict([cfg], 1.0, 20)
    assert mean.shape == (1,) and sd.shape == (1,)
    assert abs(mean[0] - out["curve"][-1]) < 0.05 + 2 * sd[0]
    inv = s.inverse_lengthscales()
    assert set(inv) == {"x", "lr", "act"} and all(v > 0 for v in inv.values())
    assert "epochs.power" in s.fidelity_hyperparameters()
    with pytest.raises(Exception, match="outside bounds"):
        opt.attach(cfg, 1.0, 50)


class CentredPrior:
    """A sharp prior around x = 0.9 (a stand-in with the Prior interface: log_prob, sample)."""

    def log_prob(self, configs):
        return np.array([-((c["x"] - 0.9) ** 2) / (2 * 0.05 ** 2) for c in configs])

    def sample(self, n, seed):
        rng = np.random.default_rng(seed)
        space = SearchSpace.from_dict(SPACE)
        out = space.sample(n, seed=seed)
        for c in out:
            c["x"] = float(np.clip(rng.normal(0.9, 0.05), 0, 1))
        return out


def test_prior_shapes_initial_design_and_acquisition():
    opt = MultiFidelityOptimizer(SPACE, seed=0, prior=CentredPrior(), prior_beta=50.0, **FAST)
    _run(opt, toy, 6)
    xs_initial = [t.params["x"] for t in opt.trials[:4]]
    assert all(abs(x - 0.9) < 0.25 for x in xs_initial)
    model_x = [c.params["x"] for c in opt.ask(2)]
    # the optimum is at 0.3, but with a strong, young prior the proposals stay near its mode
    assert np.mean(np.abs(np.array(model_x) - 0.9)) < 0.3


def test_prior_anchor_runs_the_prior_mode_first_as_a_cheap_initial_point():
    opt = MultiFidelityOptimizer(SPACE, seed=0, prior=CentredPrior(), **FAST)
    _run(opt, toy, FAST["n_initial"])
    anchor, *initial = opt.trials
    assert anchor.metadata["source"] == "prior-anchor" and abs(anchor.params["x"] - 0.9) < 0.02
    # the top of the initial design's fidelity range (30 % of each target), not a full-cost run
    assert (anchor.data_fraction, anchor.epochs) == (pytest.approx(0.3), 6)
    # it is one of the n_initial cheap points, and the model takes over right after them
    assert [t.metadata["source"] for t in initial] == ["initial"] * (FAST["n_initial"] - 1)
    (nxt,) = opt.ask(1)
    assert opt.trials[nxt.trial_index].metadata["source"].startswith("model")


def test_prior_anchor_at_target_runs_the_prior_mode_once_on_top_of_the_initial_design():
    opt = MultiFidelityOptimizer(SPACE, seed=0, prior=CentredPrior(), prior_anchor="target", **FAST)
    _run(opt, toy, 1 + FAST["n_initial"])
    anchor, *initial = opt.trials
    assert anchor.metadata["source"] == "prior-anchor"
    assert (anchor.data_fraction, anchor.epochs) == (1.0, 20) and abs(anchor.params["x"] - 0.9) < 0.02
    # the anchor comes on top of the n_initial cheap design points, and only once (also after a resume)
    assert [t.metadata["source"] for t in initial] == ["initial"] * FAST["n_initial"]
    assert all(t.data_fraction <= 0.3 + 1e-9 for t in initial)
    again = MultiFidelityOptimizer.from_state_dict(json.loads(json.dumps(opt.state_dict())), prior=CentredPrior())
    assert again.prior_anchor == "target"
    (nxt,) = again.ask(1)
    assert again.trials[nxt.trial_index].metadata["source"] != "prior-anchor"
    assert sum(t.metadata["source"] == "prior-anchor" for t in again.trials) == 1


def test_prior_anchor_can_be_switched_off_and_bad_values_are_refused():
    plain = MultiFidelityOptimizer(SPACE, seed=0, prior=CentredPrior(), prior_anchor="none", **FAST)
    assert plain.ask(1)[0].data_fraction <= 0.3 + 1e-9
    assert plain.trials[0].metadata["source"] == "initial"
    # the older boolean spellings, as found in state dicts written before "initial" existed
    assert MultiFidelityOptimizer(SPACE, prior_anchor=True).prior_anchor == "target"
    assert MultiFidelityOptimizer(SPACE, prior_anchor=False).prior_anchor == "none"
    with pytest.raises(OptimizerError, match="prior_anchor"):
        MultiFidelityOptimizer(SPACE, prior_anchor="mode")


def test_workers_run_asynchronously_without_duplicates():
    seen = []

    def recorded(p, frac, epochs):
        seen.append(tuple(sorted(p.items())))
        return toy(p, frac, epochs)

    result = minimize(recorded, SPACE, budget=2.5, seed=4, workers=2, callback=lambda t, h: t.index >= 7, **FAST)
    assert len(result.trials) >= 8
    assert result.info["verification"]["status"] == "completed"


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ConfigError, match="budget"):
        minimize(toy, SPACE, budget=0)
    with pytest.raises(OptimizerError, match="acquisition"):
        MultiFidelityOptimizer(SPACE, acquisition="nope")
    with pytest.raises(ConfigError, match="fidelity"):
        MultiFidelityOptimizer({"x": {"type": "float", "bounds": [0, 1]}})
    opt = MultiFidelityOptimizer(SPACE)
    with pytest.raises(OptimizerError, match="unknown trial"):
        opt.tell(3, [1.0], 1.0)
    with pytest.raises(OptimizerError, match="nothing to recommend"):
        opt.recommend()


def test_method_dispatches_to_baselines():
    pytest.importorskip("mfbo.optimize.baselines")
    result = minimize(toy, SPACE, budget=2.0, seed=0, method="random")
    assert result.method == "random"
    assert set(result.best_params) == {"x", "lr", "act"}


def test_knowledge_gradient_on_an_epochs_only_space():
    space = {k: v for k, v in SPACE.items() if k != "data_fraction"}
    opt = MultiFidelityOptimizer(space, seed=0, acquisition="kg", num_fantasies=4, **FAST)
    _run(opt, lambda p, f, e: toy(p, 1.0, e), 4)
    (cand,) = opt.ask(1)
    assert cand.data_fraction == 1.0 and 1 <= cand.epochs <= 20
    assert opt.trials[-1].metadata["source"] == "model:kg"


def test_boundary_snap_sends_coordinates_to_the_bound_they_step_towards():
    from mfbo.optimize._acquisition import _perturb
    from mfbo.optimize._trace import FidelityEncoder

    space = SearchSpace.from_dict({f"x{i}": {"type": "float", "bounds": [0.0, 1.0]} for i in range(6)}
                                  | {"epochs": {"type": "fidelity", "bounds": [1, 20], "target": 20}})
    enc = FidelityEncoder(space)
    anchor = np.full((1, enc.dim), 0.5)
    plain = _perturb(anchor, 0.015, enc, np.random.default_rng(0))[:, : enc.d]
    snapped = _perturb(anchor, 0.015, enc, np.random.default_rng(0), snap=0.1)[:, : enc.d]
    # a 0.015-wide step from 0.5 never reaches a bound; with snaps some coordinates land on both bounds
    assert not ((plain == 0.0) | (plain == 1.0)).any()
    on_bound = (snapped == 0.0) | (snapped == 1.0)
    assert (snapped == 0.0).any() and (snapped == 1.0).any() and on_bound.mean() < 0.25
    assert ((np.abs(snapped - 0.5) < 0.1) | on_bound).all()
    for bad in (1.5, "often"):
        with pytest.raises(OptimizerError, match="boundary_snap"):
            MultiFidelityOptimizer(SPACE, boundary_snap=bad)


def test_local_search_climbs_the_prior_weighted_acquisition():
    from mfbo.optimize._acquisition import acquisition_pool, weighted_values

    assert np.allclose(weighted_values(np.zeros((3, 1)), np.array([2.0, -2.0, 0.5]), lambda r: np.full(len(r), 4.0)),
                       [8.0, -0.5, 2.0])  # positive values multiplied, negative ones divided
    opt = MultiFidelityOptimizer(SPACE, seed=3, **FAST)
    _run(opt, toy, 6)
    surrogate = opt.surrogate()
    enc = opt.encoder
    raw = opt._raw_pool(64, 5, [])
    cost = opt.cost_model.module(scale=opt.full_fidelity_cost(), overhead=0.05)
    x_col = 0  # "x" is the first design parameter, encoded as one unit-interval column
    assert opt.space.encode([{"x": 0.3, "lr": 1e-3, "act": "silu"}])[0][x_col] == pytest.approx(0.3)

    def local_rows(weight_fn):
        rows, _ = acquisition_pool("gibbon", surrogate.model, enc, cost, raw, raw, None, num_restarts=1,
                                   weight_fn=weight_fn, seed=0)
        return rows[len(raw):]  # the local search's rows

    def favour_low_x(rows):  # a sharp prior on x near 0.02
        return np.exp(-0.5 * ((rows[:, x_col] - 0.02) / 0.02) ** 2)

    near = np.abs(local_rows(favour_low_x)[:, x_col] - 0.02) < 0.2
    assert near.mean() > 0.9
    assert (np.abs(local_rows(None)[:, x_col] - 0.02) < 0.2).mean() < near.mean()


def test_gibbon_draws_its_max_values_once_and_scores_as_botorch(monkeypatch):
    import botorch.acquisition.max_value_entropy_search as mes
    import torch
    from botorch.acquisition.cost_aware import InverseCostWeightedUtility

    from mfbo.optimize._acquisition import _gibbon_class, _projector

    opt = MultiFidelityOptimizer(SPACE, seed=1, **FAST)
    _run(opt, toy, 6)
    model, enc = opt.surrogate().model, opt.encoder
    cand = torch.as_tensor(opt._raw_pool(64, 2, []), dtype=torch.double)
    X = torch.as_tensor(opt._raw_pool(32, 3, []), dtype=torch.double).unsqueeze(-2)
    cost = opt.cost_model.module(scale=opt.full_fidelity_cost(), overhead=0.05)
    draws = []  # the candidate set of every max-value draw
    gumbel = mes._sample_max_value_Gumbel
    monkeypatch.setattr(mes, "_sample_max_value_Gumbel",
                        lambda model, candidate_set, **k: draws.append(candidate_set) or gumbel(model, candidate_set, **k))

    def build(cls):
        draws.clear()
        acq = cls(model, candidate_set=cand, num_mv_samples=16, project=_projector(enc),
                  cost_aware_utility=InverseCostWeightedUtility(cost_model=cost))
        return acq, list(draws)

    ours, ours_draws = build(_gibbon_class())
    theirs, their_draws = build(mes.qMultiFidelityLowerBoundMaxValueEntropy)
    assert (len(ours_draws), len(their_draws)) == (1, 2)
    # ours makes the draw BoTorch keeps (its second): candidates and training rows at target fidelity
    assert torch.equal(ours_draws[0], their_draws[1])
    assert (ours_draws[0][:, enc.fidelity_cols] == 1.0).all()
    # and with the same samples both score every row identically
    assert ours.posterior_max_values.shape == theirs.posterior_max_values.shape
    theirs.posterior_max_values = ours.posterior_max_values
    with torch.no_grad():
        assert torch.allclose(ours(X), theirs(X))


def test_evaluated_recommendation_is_the_pessimistic_best_evaluated_design():
    opt = MultiFidelityOptimizer(SPACE, seed=0, **FAST)
    _run(opt, toy, 8)
    assert opt.recommendation == "evaluated"
    configs = [t.params for t in opt.trials]
    surrogate = opt._fit(opt._completed())
    mean, std = opt._target_mean_std(surrogate, opt.space.encode(configs))
    assert (std > 0).all() and mean.shape == std.shape == (8,)
    # mean minus one sd at target fidelity (maximisation convention), among the evaluated designs
    assert opt.recommend() == configs[int(np.argmax(mean - std))]
    optimised = MultiFidelityOptimizer.from_state_dict(opt.state_dict())
    optimised.recommendation = "optimised"
    assert set(optimised.recommend()) == {"x", "lr", "act"}
    with pytest.raises(OptimizerError, match="recommendation"):
        MultiFidelityOptimizer(SPACE, recommendation="best")


def test_a_recommendation_already_run_at_target_is_its_own_verification():
    from mfbo.priors import ProductPrior

    space = dict(SPACE)
    space["x"] = dict(SPACE["x"], prior={"dist": "normal", "mean": 0.3, "std": 0.05})
    space["lr"] = dict(SPACE["lr"], prior={"dist": "lognormal", "median": 10 ** -2.5, "log_std": 0.2})
    space["act"] = dict(SPACE["act"], prior={"dist": "categorical", "weights": [0.1, 0.9]})
    prior = ProductPrior(space)
    # the prior's mode is near the toy's optimum: the anchor (first trial, here at target fidelity) is the
    # best of the first three trials, after which the run is stopped
    result = minimize(toy, SPACE, budget=3.0, seed=0, prior=prior, prior_anchor="target",
                      callback=lambda t, h: t.index >= 2, **FAST)
    anchor = result.trials[0]
    assert anchor.metadata["source"] == "prior-anchor"
    assert result.best_params == anchor.params
    ver = result.info["verification"]
    assert ver["new_run"] is False and ver["trial_index"] == anchor.index
    assert sum(t.params == anchor.params for t in result.trials) == 1
    # without an earlier target-fidelity run of the recommendation, verification runs it
    plain = minimize(toy, SPACE, budget=3.0, seed=0, **FAST)
    ver = plain.info["verification"]
    earlier = [t for t in plain.trials[:-1] if t.params == plain.best_params and t.data_fraction == 1.0
               and t.epochs == 20]
    assert ver["new_run"] is not bool(earlier)


def test_no_model_proposal_at_target_next_to_a_design_already_run_there():
    opt = MultiFidelityOptimizer(SPACE, seed=0, **FAST)
    _run(opt, toy, 6)
    opt.attach({"x": 0.5, "lr": 1e-2, "act": "silu"}, 1.0, 20)  # running at target: counts already
    base = opt.space.encode([{"x": 0.5, "lr": 1e-2, "act": "silu"}])[0]
    step = np.zeros_like(base)
    step[0] = 1.0  # along x
    rows = np.vstack([base + 0.005 * step, base + 0.05 * step, base + 0.005 * step])
    near = opt._near_target_runs(rows, [1.0, 1.0, 0.5], [20, 20, 20])
    assert near.tolist() == [True, False, False]  # only the near one at target; lower fidelity is free
    opt.target_separation = 0.0
    assert not opt._near_target_runs(rows, [1.0, 1.0, 0.5], [20, 20, 20]).any()
    with pytest.raises(OptimizerError, match="target_separation"):
        MultiFidelityOptimizer(SPACE, target_separation=1.5)


def test_mean_maximisers_climb_the_posterior_mean_from_the_best_designs():
    from mfbo.optimize._recommend import mean_maximisers

    opt = MultiFidelityOptimizer(SPACE, seed=0, **FAST)
    _run(opt, toy, 8)
    surrogate = opt._fit(opt._completed())
    starts = opt._unique_designs(opt._completed())
    found = mean_maximisers(opt, surrogate, starts, n_refine=2)
    assert len(found) == 2 and all(set(c) == {"x", "lr", "act"} for c in found)
    best_start = opt._target_mean(surrogate, opt.space.encode(starts)).max()
    # L-BFGS-B from the two best starts: the better result is no worse than the best start (rounding aside)
    assert opt._target_mean(surrogate, opt.space.encode(found)).max() >= best_start - 1e-6
    assert mean_maximisers(opt, surrogate, starts, n_refine=0) == []
    for bad in (-1, 1.5, True):
        with pytest.raises(OptimizerError, match="mean_optima"):
            MultiFidelityOptimizer(SPACE, mean_optima=bad)


def _target_runs(opt):
    return [t for t in opt.trials if t.status == "completed" and t.data_fraction == 1.0 and t.epochs == 20]


def test_recommendation_is_a_target_fidelity_run_once_one_exists():
    opt = MultiFidelityOptimizer(SPACE, seed=0, recommendation="target", verify_every=0, **FAST)
    _run(opt, toy, 6)
    assert not _target_runs(opt)
    # a poor design at target fidelity: the only target-fidelity result, so the recommendation
    poor = {"x": 0.95, "lr": 1e-4, "act": "tanh"}
    idx = opt.attach(poor, 1.0, 20)
    opt.tell(idx, toy_value(poor), 10.0)
    assert opt.recommend() == poor
    info = opt.recommendation_info()
    assert info["at_target"] is True and info["value"] == toy_value(poor)[-1] and info["trial_index"] == idx
    assert info["prediction"]["sd"] > 0
    # far better designs seen only at low fidelity do not displace it: no new evidence at target
    for x in (0.28, 0.3, 0.32):
        good = {"x": x, "lr": 10 ** -2.5, "act": "silu"}
        idx = opt.attach(good, 0.25, 5)
        opt.tell(idx, toy_value(good, 0.25, 5), 0.6)
        assert opt.recommend() == poor
    # a better design at target replaces it
    idx = opt.attach(good, 1.0, 20)
    opt.tell(idx, toy_value(good), 10.0)
    assert opt.recommend() == good
    # the choice survives a state round trip
    assert MultiFidelityOptimizer.from_state_dict(opt.state_dict()).recommend() == good


def test_anytime_recommendation_changes_only_with_a_new_target_observation():
    opt = MultiFidelityOptimizer(SPACE, seed=1, recommendation="target", verify_every=0.5, **FAST)
    steps = []
    for _ in range(18):
        (c,) = opt.ask(1)
        out = toy(c.params, c.data_fraction, c.epochs)
        opt.tell(c.trial_index, out["curve"], out["cost"])
        runs = _target_runs(opt)
        rec = opt.recommend()
        steps.append((len(runs), rec))
        if runs:  # a target-fidelity run, never a low-fidelity one, once any exists
            assert rec in [t.params for t in runs]
    # verification runs sent the model's best guesses to target fidelity
    assert any(t.metadata.get("source") == "verify" for t in opt.trials)
    assert steps[-1][0] >= 2
    for (n_a, rec_a), (n_b, rec_b) in zip(steps, steps[1:]):
        if n_a == n_b and n_a > 0:
            assert rec_a == rec_b
    # every target-fidelity proposal carried its prediction, and the run was scored against it
    for t in _target_runs(opt):
        pred = t.metadata["prediction"]
        assert pred["n_completed"] < t.index + 1 and pred["sd"] > 0
        assert t.metadata["z"] == pytest.approx((t.curve[-1] - pred["mean"]) / pred["sd"])


def test_observation_noise_is_inferred_of_the_right_order():
    rng = np.random.default_rng(0)
    space = SearchSpace.from_dict(SPACE)
    configs = space.sample(40, seed=3)

    def fit(noise):
        opt = MultiFidelityOptimizer(SPACE, seed=0, **FAST)
        for i, c in enumerate(configs):
            frac, ep = (1.0, 20) if i % 4 == 0 else (0.25 + 0.5 * (i % 3) / 2, 5 + 5 * (i % 3))
            curve = np.asarray(toy_value(c, frac, ep)) * np.exp(noise * rng.standard_normal(ep))
            idx = opt.attach(c, frac, ep)
            opt.tell(idx, curve.tolist(), 1.0)
        return opt.surrogate().noise_sd()

    # 5 % and 20 % multiplicative scatter = 0.05 and 0.2 in the log-loss the model sees
    low, high = fit(0.05), fit(0.2)
    assert 0.025 < low < 0.1, low
    assert 0.1 < high < 0.4, high


def test_verification_is_scored_against_the_prediction_made_before_it_ran():
    result = minimize(toy, SPACE, budget=4.0, seed=0, verify_every=0, **FAST)
    ver = result.info["verification"]
    assert ver["new_run"] is True
    pred = ver["prediction"]
    assert pred["sd"] > 0 and ver["z"] == pytest.approx((ver["value"] - pred["mean"]) / pred["sd"])
    # the optimiser's own time is measured and reported beside the trials' cost
    assert 0 < result.info["optimizer_s"] <= result.info["wall_time_s"]
    assert all(h["optimizer_s"] <= result.info["optimizer_s"] + 1e-9 for h in result.history)


def test_cheap_trials_make_the_optimiser_economise():
    opt = MultiFidelityOptimizer(SPACE, seed=0, **FAST)
    _run(opt, lambda p, f, e: {"curve": toy_value(p, f, e), "cost": 1000.0 * f * e / 20}, 6)
    assert not opt.cheap_mode()  # trials of a minute: a round of candidate generation is far below 10 %
    fast = MultiFidelityOptimizer(SPACE, seed=0, **FAST)
    _run(fast, lambda p, f, e: {"curve": toy_value(p, f, e), "cost": 1e-3}, 6)
    assert fast.cheap_mode() and fast.last_timings.get("cheap_mode") == 1.0
    full = MultiFidelityOptimizer(SPACE, seed=0, effort="full", **FAST)
    _run(full, lambda p, f, e: {"curve": toy_value(p, f, e), "cost": 1e-3}, 6)
    assert not full.cheap_mode()
    with pytest.raises(OptimizerError, match="effort"):
        MultiFidelityOptimizer(SPACE, effort="low")
    with pytest.raises(OptimizerError, match="verify_every"):
        MultiFidelityOptimizer(SPACE, verify_every=-1)


def test_target_runs_that_miss_their_prediction_move_proposals_to_dearer_fidelities():
    opt = MultiFidelityOptimizer(SPACE, seed=0, recommendation="target", verify_every=0, **FAST)
    _run(opt, toy, 5)
    assert opt.fidelity_floor() == 0.0

    def target_run(x, miss):
        p = {"x": x, "lr": 1e-3, "act": "silu"}
        v = toy_value(p)[-1]
        idx = opt.attach(p, 1.0, 20)
        # a prediction 10 sd off (cheap runs misled the model), or spot on
        opt.tell(idx, toy_value(p), 10.0, {"prediction": {"mean": v - 1.0 if miss else v, "sd": 0.1}})
        return opt.trials[idx]

    t = target_run(0.5, miss=True)
    assert t.metadata["z"] == pytest.approx(10.0)
    assert opt.fidelity_floor() == 1 / 16
    for _ in range(3):
        (c,) = opt.ask(1)
        assert c.data_fraction * c.epochs / 20 >= 1 / 16 - 1e-9, (c.data_fraction, c.epochs)
        out = toy(c.params, c.data_fraction, c.epochs)
        opt.tell(c.trial_index, out["curve"], out["cost"])
    target_run(0.6, miss=True)
    assert opt.fidelity_floor() == 1 / 8
    target_run(0.7, miss=False)
    assert opt.fidelity_floor() == 1 / 16
    target_run(0.8, miss=False)
    assert opt.fidelity_floor() == 0.0


def test_fidelity_ramp_raises_the_cheapest_proposal_as_the_budget_is_spent():
    budget = 6.0
    opt = MultiFidelityOptimizer(SPACE, seed=0, budget=budget, fidelity_ramp=0.25, **FAST)
    assert opt.ramp_floor() == 0.0  # no cost data yet
    _run(opt, toy, 5)
    share = opt.spent_share()
    spent = sum(t.cost for t in opt.trials if t.status == "completed") / opt.full_fidelity_cost()
    assert share == pytest.approx(min(1.0, spent / budget))
    assert opt.ramp_floor() == pytest.approx(max(0.0, (share - 0.25) / 0.75))
    seen = []
    while opt.spent_share() < 0.9:
        floor = opt.ramp_floor()
        (c,) = opt.ask(1)
        if str(opt.trials[c.trial_index].metadata.get("source", "")).startswith("model"):
            # nominal cost relative to a target run: (fraction / 1) x (epochs / 20)
            assert c.data_fraction * c.epochs / 20 >= floor - 1e-9, (floor, c.data_fraction, c.epochs)
            seen.append(floor)
        out = toy(c.params, c.data_fraction, c.epochs)
        opt.tell(c.trial_index, out["curve"], out["cost"])
    assert max(seen) > 0.5  # the floor did bind late in the budget
    # off by default and without a budget
    assert MultiFidelityOptimizer(SPACE, seed=0, budget=budget).ramp_floor() == 0.0
    no_budget = MultiFidelityOptimizer(SPACE, seed=0, fidelity_ramp=0.0, **FAST)
    _run(no_budget, toy, 5)
    assert no_budget.ramp_floor() == 0.0
    restored = MultiFidelityOptimizer.from_state_dict(opt.state_dict())
    assert restored.fidelity_ramp == 0.25 and restored.ramp_floor() == pytest.approx(opt.ramp_floor())
    with pytest.raises(OptimizerError, match="fidelity_ramp"):
        MultiFidelityOptimizer(SPACE, fidelity_ramp=1.0)
