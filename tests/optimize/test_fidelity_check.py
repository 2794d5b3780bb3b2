"""Fidelity check: the target-only GP, prequential scores, and the switch of proposals they drive."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2, norm

from mfbo.errors import OptimizerError
from mfbo.optimize import MultiFidelityOptimizer
from mfbo.optimize._fidelity_check import (
    check_scores,
    fit_target_gp,
    noise_from_misses,
    predict_new_run,
    predictive_logpdf,
    target_only_wins,
)

from .test_optimizer import FAST, SPACE, _run, toy, toy_value


def test_predictive_logpdf_is_the_density_of_the_models_outcome():
    # positive values: the normal density of log(value) under the log-normal with those moments
    mean, sd, value = 0.31, 0.02, 0.30
    var = math.log1p((sd / mean) ** 2)
    expect = norm.logpdf(math.log(value), math.log(mean) - var / 2, math.sqrt(var))
    assert predictive_logpdf(value, mean, sd) == pytest.approx(expect)
    # otherwise the normal density of the value itself
    assert predictive_logpdf(-0.5, -0.4, 0.1) == pytest.approx(norm.logpdf(-0.5, -0.4, 0.1))
    assert predictive_logpdf(0.3, 0.3, 0.0) == -math.inf


def test_check_scores_sum_both_models_and_a_majority_of_runs_decides():
    good, bad = {"mean": 1.0, "sd": 0.1}, {"mean": 2.0, "sd": 0.1}
    one = check_scores([(1.0, bad, good)])
    assert one["n"] == 1 and one["target_only_better"] == 1 and one["target_only"] > one["multi_fidelity"]
    assert not target_only_wins(one)  # a single run decides nothing
    two = check_scores([(1.0, bad, good), (1.05, good, bad)])
    assert two["n"] == 2 and two["target_only_better"] == 1
    assert two["multi_fidelity"] == pytest.approx(predictive_logpdf(1.0, 2.0, 0.1) + predictive_logpdf(1.05, 1.0, 0.1))
    assert not target_only_wins(two)  # a tie is no majority
    assert target_only_wins(check_scores([(1.0, bad, good), (1.0, bad, good), (1.0, good, bad)]))
    # one run far outside the multi-fidelity model's prediction does not outvote two it predicted better
    slightly_off = {"mean": 1.1, "sd": 0.1}
    outvoted = check_scores([(1.0, {"mean": 3.0, "sd": 0.1}, good), (1.0, good, slightly_off),
                             (1.0, good, slightly_off)])
    assert outvoted["target_only"] > outvoted["multi_fidelity"] and not target_only_wins(outvoted)


def test_target_gp_with_the_given_noise_predicts_at_least_that_scatter():
    rng = np.random.default_rng(0)
    Xd = rng.uniform(size=(5, 3))
    y = 0.3 + 0.05 * Xd[:, 0]
    for noise_var in (1e-4, 1e-2):  # log-loss variance: 1 % and 10 % scatter of a run
        model, log_outcome = fit_target_gp(Xd, y, noise_var)
        assert log_outcome
        mean, sd = predict_new_run(model, log_outcome, Xd)
        sd_log = np.sqrt(np.log1p((sd / mean) ** 2))
        assert (sd_log >= math.sqrt(noise_var) * 0.999).all(), (noise_var, sd_log)
    # with the noise inferred from five smooth points the fit interpolates: far less scatter predicted
    model, log_outcome = fit_target_gp(Xd, y)
    mean, sd = predict_new_run(model, log_outcome, Xd)
    assert np.sqrt(np.log1p((sd / mean) ** 2)).max() < 0.1


def _log_prediction(mu, total_var, noise_var):
    """A stored log-outcome prediction whose log-normal has mean ``mu`` and variance ``total_var`` in log."""
    return {"mean": math.exp(mu + total_var / 2), "sd": math.sqrt(math.expm1(total_var)) * math.exp(mu + total_var / 2),
            "noise_var": noise_var, "log_outcome": True}


def test_noise_from_misses_reads_a_normal_miss_variance_beyond_the_latent_variance():
    # misses of 0.02, 0.04 and 0.02 in log(loss); latent variances 1e-4, 3e-4, 1e-4 beside a held noise 1e-5
    recs = [(math.exp(-1.2 + 0.02), _log_prediction(-1.2, 1e-4 + 1e-5, 1e-5)),
            (math.exp(-1.0 - 0.04), _log_prediction(-1.0, 3e-4 + 1e-5, 1e-5)),
            (math.exp(-1.1 + 0.02), _log_prediction(-1.1, 1e-4 + 1e-5, 1e-5))]
    # median squared miss over the median of a chi-square(1), less the median latent variance
    expect = 0.02 ** 2 / chi2.median(1) - 1e-4
    assert noise_from_misses(recs, floor=1e-5) == pytest.approx(expect, rel=1e-6)
    assert noise_from_misses(recs, floor=1e-3) == 1e-3  # never below the floor
    assert noise_from_misses(recs, floor=1e-5, cap=2e-4) == pytest.approx(2e-4)
    assert noise_from_misses(recs[:2], floor=1e-5) == 1e-5  # too few runs scored: the floor
    # a prediction made before any noise was held (no noise_var) does not count
    assert noise_from_misses(recs[:2] + [(0.3, {"mean": 0.3, "sd": 0.01, "log_outcome": True})], 1e-5) == 1e-5
    # one heavy-tailed run (a miss of 1.0 in log) does not set the scatter of every run
    tail = recs + [(math.exp(-1.1 + 1.0), _log_prediction(-1.1, 1e-4 + 1e-5, 1e-5)),
                   (math.exp(-1.3 - 0.02), _log_prediction(-1.3, 1e-4 + 1e-5, 1e-5))]
    assert noise_from_misses(tail, floor=1e-5) == pytest.approx(expect, rel=1e-6)
    # without a log outcome the misses are of the value itself
    lin = [(v + d, {"mean": v, "sd": math.sqrt(2e-4), "noise_var": 1e-4, "log_outcome": False})
           for v, d in ((-1.0, 0.03), (-2.0, -0.01), (-1.5, 0.02))]
    assert noise_from_misses(lin, floor=1e-6) == pytest.approx(4e-4 / chi2.median(1) - 1e-4)


def test_target_only_gp_holds_the_noise_its_misses_show():
    opt = MultiFidelityOptimizer(SPACE, seed=0, recommendation="target", fidelity_check=True, verify_every=0,
                                 **FAST)
    _run(opt, toy, 5)
    recs = []
    for x, miss in ((0.1, 0.5), (0.5, -0.5), (0.7, 0.5), (0.9, -0.5)):  # each run 0.5 off in log(loss)
        p = {"x": x, "lr": 1e-3, "act": "silu"}
        curve = toy_value(p)
        pred = _log_prediction(math.log(curve[-1]) - miss, 1e-4 + 1e-5, 1e-5)
        opt.tell(opt.attach(p, 1.0, 20), curve, 10.0, {"prediction_target_only": pred})
        recs.append((curve[-1], pred))
    done = opt._completed()
    assert opt._target_only_model(done) is not None
    floor = opt._fit(done).noise_sd() ** 2
    logs = np.log([t.final_value for t in done if (t.data_fraction, t.epochs) == (1.0, 20)])
    held = opt._target_gp_noise
    assert held == pytest.approx(noise_from_misses(recs, floor=floor, cap=float(np.var(logs))))
    assert held > 2 * floor, (held, floor)  # raised above the surrogate's noise to the misses' scatter
    # the next target run is predicted with it, and the record says so
    p = {"x": 0.3, "lr": 1e-3, "act": "silu"}
    mean, sd = predict_new_run(*opt._target_gp, opt.space.encode([p]))
    assert np.sqrt(np.log1p((sd / mean) ** 2))[0] >= math.sqrt(held) * 0.999
    trial = opt._trials[opt.attach(p, 1.0, 20)]
    opt._store_prediction(trial)  # as ask() does for a target-fidelity proposal
    assert trial.metadata["prediction_target_only"]["noise_var"] == pytest.approx(held)


def _target_run(opt, x, mf_off, to_off):
    """Attach and tell a target-fidelity run of the toy whose two stored predictions miss by the given
    number of sd (0.01 each)."""
    p = {"x": x, "lr": 1e-3, "act": "silu"}
    v = toy_value(p)[-1]
    idx = opt.attach(p, 1.0, 20)
    opt.tell(idx, toy_value(p), 10.0, {"prediction": {"mean": v + 0.01 * mf_off, "sd": 0.01},
                                       "prediction_target_only": {"mean": v + 0.01 * to_off, "sd": 0.01}})
    return idx


def test_proposals_follow_the_model_that_predicted_target_runs_better():
    opt = MultiFidelityOptimizer(SPACE, seed=0, recommendation="target", fidelity_check=True, verify_every=0,
                                 **FAST)
    _run(opt, toy, 5)
    for x in (0.1, 0.5, 0.9):  # the multi-fidelity surrogate spot on, the target-only GP 5 sd off
        _target_run(opt, x, 0.0, 5.0)
    assert opt.fidelity_check_scores()["n"] == 3
    assert not opt.target_only_mode()
    assert opt.predict_target({"x": 0.3, "lr": 1e-3, "act": "silu"})["model"] == "multi-fidelity"
    (c,) = opt.ask(1)
    assert opt.trials[c.trial_index].metadata["source"] != "model:target-only"
    opt.abandon(c.trial_index, "test")
    for x in (0.2, 0.3, 0.4, 0.6):  # now the cheap runs mislead: 6 sd off, the target-only GP right
        _target_run(opt, x, 6.0, 0.0)
    scores = opt.fidelity_check_scores()
    assert scores["n"] == 7 and scores["target_only"] > scores["multi_fidelity"]
    assert opt.target_only_mode()
    (c,) = opt.ask(1)
    assert opt.trials[c.trial_index].metadata["source"] == "model:target-only"
    assert (c.data_fraction, c.epochs) == (1.0, 20)
    # before it runs it is predicted by both models, and the recommendation is a target-run design
    md = opt.trials[c.trial_index].metadata
    assert {"prediction", "prediction_target_only"} <= set(md)
    # its z-score (calibration at target) is against the model that proposed it
    assert md["prediction_model"] == "target-only"
    assert opt.predict_target(c.params)["model"] == "target-only"
    out = toy(c.params, c.data_fraction, c.epochs)
    opt.tell(c.trial_index, out["curve"], out["cost"])
    to = md["prediction_target_only"]
    assert md["z"] == pytest.approx((out["curve"][-1] - to["mean"]) / to["sd"])
    assert opt.run_prediction(opt.trials[c.trial_index]) is to
    ran = [t.params for t in opt.trials if t.status == "completed" and (t.data_fraction, t.epochs) == (1.0, 20)]
    assert opt.recommend() in ran
    # the standing survives a state round trip
    again = MultiFidelityOptimizer.from_state_dict(opt.state_dict())
    assert again.fidelity_check and again.target_only_mode()
    assert again.fidelity_check_scores() == pytest.approx(opt.fidelity_check_scores())


def misleading(p, frac, epochs):
    """Cheap runs rank designs the wrong way round: at target x = 0.8 is best, but its loss falls slowly,
    so after a few epochs (or on little data) designs near x = 0.2 look best."""
    a = (p["x"] - 0.8) ** 2 + 0.05 * (math.log10(p["lr"]) + 2.5) ** 2 + 0.2 * (1.0 - frac)
    b = 2.0 * p["x"] ** 2
    curve = [a + b * (t ** -0.7 - 20 ** -0.7) * (2.0 - frac) for t in range(1, epochs + 1)]
    return {"curve": curve, "cost": 10.0 * frac * epochs / 20}


misleading.full_fidelity_cost = 10.0


def test_misleading_cheap_runs_hand_proposals_to_the_target_only_model():
    opt = MultiFidelityOptimizer(SPACE, seed=0, recommendation="target", fidelity_check=True,
                                 verify_every=0.1, **FAST)
    _run(opt, misleading, 26)
    sources = [t.metadata.get("source") for t in opt.trials]
    assert opt.fidelity_check_scores()["n"] >= 2
    assert "model:target-only" in sources, (sources, opt.fidelity_check_scores())
    # the target-only proposals head for the target optimum the cheap runs hide
    xs = [t.params["x"] for t in opt.trials if t.metadata.get("source") == "model:target-only"]
    assert np.median(xs) > 0.5, xs


def test_fidelity_check_is_validated():
    with pytest.raises(OptimizerError, match="recommendation='target'"):
        MultiFidelityOptimizer(SPACE, fidelity_check=True)
    with pytest.raises(OptimizerError, match="fidelity_check"):
        MultiFidelityOptimizer(SPACE, recommendation="target", fidelity_check="yes")
    opt = MultiFidelityOptimizer(SPACE, recommendation="target")
    assert not opt.fidelity_check and not opt.target_only_mode()


def test_minimize_reports_the_checks_standing():
    from mfbo.optimize import minimize

    result = minimize(misleading, SPACE, budget=3.0, seed=0, recommendation="target", fidelity_check=True,
                      verify_every=0.1, **FAST)
    info = result.info["fidelity_check"]
    opt = result.optimizer
    assert info["n"] == opt.fidelity_check_scores()["n"]
    switched = [t for t in result.trials if t.metadata.get("source") == "model:target-only"]
    assert info["target_only_trials"] == len(switched)
    assert (info["ffe_before_first_target_only"] is None) == (not switched)
    assert minimize(toy, SPACE, budget=2.0, seed=0, **FAST).info["fidelity_check"] is None


def test_target_only_acquisition_weighs_expected_improvement_against_predicted_cost():
    # a GP whose posterior is symmetric about x = 0.5: designs 0.4 and 0.6 promise the same improvement
    Xd = np.array([[0.2], [0.5], [0.8]])
    model, _ = fit_target_gp(Xd, np.array([0.5, 0.3, 0.5]), 1e-4)
    configs = [{"x": 0.4}, {"x": 0.6}]
    X, ok = np.array([[0.4], [0.6]]), np.ones(2, dtype=bool)
    best_f = -math.log(0.3)
    for log_cost, cheaper in (([1.0, 0.0], 0.6), ([0.0, 1.0], 0.4)):
        pick = MultiFidelityOptimizer._ei_argmax(model, X, best_f, configs, ok, log_cost=np.array(log_cost))
        assert pick == {"x": cheaper}


def test_target_only_cost_is_the_cost_models_cooled_prediction_at_target():
    opt = MultiFidelityOptimizer(SPACE, seed=0, recommendation="target", fidelity_check=True, budget=20.0,
                                 cost_cooling=True, **FAST)
    configs = [{"x": 0.2, "lr": 1e-3, "act": "silu"}, {"x": 0.7, "lr": 1e-2, "act": "tanh"}]
    assert opt._target_log_cost(configs) is None  # no cost model before a trial finished
    _run(opt, toy, 6)
    enc = opt.encoder
    X = enc.encode(configs, [1.0, 1.0], [20, 20])
    alpha = opt.design_cost_exponent()
    assert 0.0 < alpha < 1.0
    expect = np.log(opt.cost_model.predict(X, design_exponent=alpha))
    assert opt._target_log_cost(configs) == pytest.approx(expect)
