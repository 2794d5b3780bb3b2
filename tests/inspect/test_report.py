"""The report: every section present, figures valid PNGs, numbers sane."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mfbo.inspect import SECTION_IDS, InspectError, SurrogateView


def test_every_figure_is_labelled(view):
    """One method per section returns a matplotlib Figure with titles, axis labels and legends."""
    from matplotlib.figure import Figure

    figs = view.figures()
    assert list(figs) == list(SECTION_IDS)
    for sid, fig in figs.items():
        assert isinstance(fig, Figure), sid
        axes = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]
        assert axes, sid
        titled = bool(fig._suptitle and fig._suptitle.get_text()) or any(ax.get_title() for ax in axes)
        assert titled, sid
        for ax in axes:
            assert ax.get_xlabel() and ax.get_ylabel(), (sid, ax.get_title())
        assert any(ax.get_legend() is not None for ax in axes) or sid in ("learning_curves", "importance",
                                                                          "contour"), sid
    # Units on the axes where they are physical.
    assert figs["progress"].axes[0].get_xlabel() == "cumulative cost (s)"
    assert "(eV/atom)" in figs["progress"].axes[0].get_ylabel()


def test_loo_coverage_is_reported_and_in_unit_interval(view, stored_run):
    space, trials, _, _ = stored_run
    loo = view.loo()
    assert loo["available"], loo["reason"]
    assert 0.0 <= loo["coverage_95"] <= 1.0
    n_configs = len({tuple(sorted(t.params.items())) for t in trials if t.status == "completed"})
    assert loo["n"] == n_configs
    covered = [p["covered"] for p in loo["points"]]
    assert loo["coverage_95"] == pytest.approx(np.mean(covered))
    for p in loo["points"]:
        assert p["lower"] <= p["predicted"] <= p["upper"]
        assert p["covered"] == (p["lower"] <= p["observed"] <= p["upper"])
    assert f"{loo['coverage_95']:.0%}" in view.plot_loo().axes[0].get_title()


def test_prediction_at_observed_points_matches_within_noise(view, stored_run):
    space, trials, _, _ = stored_run
    target = [t for t in trials if t.status == "completed" and t.data_fraction == 1.0 and t.epochs == 27]
    assert target
    mean, sd = view.predict([t.params for t in target], {"data_fraction": 1.0, "epochs": 27})
    obs = np.array([t.curve[-1] for t in target])
    assert np.all(sd > 0)
    # In the GP's own (latent) units: residual against posterior sd combined with the learned noise.
    latent_mean, latent_sd = view._model.latent([t.params for t in target], 1.0, 27)
    noise = view._model.noise_sd()
    z = (view._model.to_latent(obs) - latent_mean) / np.sqrt(latent_sd**2 + noise**2)
    assert np.all(np.abs(z) < 3.0), z
    # And plainly: within 5% in objective units (the synthetic noise is 1%).
    assert np.all(np.abs(mean - obs) / obs < 0.05)
    # Scalar form.
    m1, s1 = view.predict(target[0].params)
    assert m1 == pytest.approx(mean[0]) and s1 == pytest.approx(sd[0])


def test_summary_and_importance(view):
    s = view.summary()
    assert s["n_trials"] == len(view.trials) and s["status"]["failed"] == 1
    assert s["model"]["botorch_model"] == "SingleTaskMultiFidelityGP"
    imp = view.importance()
    assert set(imp["sobol_total"]) == {"x", "lr", "layers", "act"}
    # The synthetic function depends most on x (quadratic, range 0.29) and not at all on... lr only weakly.
    assert max(imp["sobol_total"], key=imp["sobol_total"].get) == "x"
    assert imp["sobol_total"]["lr"] < imp["sobol_total"]["x"]
    assert all(v > 0 for v in imp["inverse_lengthscale"].values())


def test_prior_posterior_covers_exactly_the_parameters_with_a_prior(view):
    pp = view.prior_posterior()
    assert set(pp["parameters"]) == {"x", "lr"} and pp["joint"]
    for d in pp["parameters"].values():
        for which in ("prior", "posterior"):
            assert math.isclose(sum(d[which]["prob"]), 1.0, rel_tol=1e-9)
    # The prior centres x at 0.35: its mode must be there.
    prior_x = pp["parameters"]["x"]["prior"]
    mode = prior_x["values"][int(np.argmax(prior_x["prob"]))]
    assert abs(mode - 0.35) < 0.08


def test_view_without_completed_trials_is_a_clear_error(stored_run):
    space, trials, surrogate, _ = stored_run
    failed = [t for t in trials if t.status != "completed"]
    with pytest.raises(InspectError, match="no completed trial"):
        SurrogateView(space, failed, surrogate)
    with pytest.raises(InspectError, match="predict"):
        SurrogateView(space, trials, object())


class _PredictOnly:
    """A surrogate with nothing but predict (an analytic stand-in, no GP): the view must degrade, not fail."""

    def predict(self, configs, data_fraction, epochs):
        m = np.array([0.1 + (c["x"] - 0.3) ** 2 + 0.2 * (1 - data_fraction) + 1.0 / epochs for c in configs])
        return m, np.full(len(m), 0.01)


def test_a_predict_only_surrogate_still_gives_a_report(stored_run):
    space, trials, _, prior = stored_run
    v = SurrogateView(space, trials, _PredictOnly(), prior)
    d = v.to_dict()
    assert d["loo"]["available"] is False and "BoTorch" in d["loo"]["reason"]
    assert d["importance"]["inverse_lengthscale"] == {}
    assert d["importance"]["sobol_total"]["x"] == pytest.approx(1.0, abs=0.02)
    assert d["prior_posterior"]["joint"] is False and set(d["prior_posterior"]["parameters"]) == {"x", "lr"}
    assert "not available" in v.plot_loo().axes[0].texts[0].get_text()
    m, s = v.predict({"x": 0.3, "lr": 1e-3, "layers": 2, "act": "tanh"}, (0.5, 10))
    assert m == pytest.approx(0.1 + 0.1 + 0.1) and s == pytest.approx(0.01)


def test_trials_table_from_ax_summary(stored_run):
    """With the optimiser's Ax experiment, the trials table is Ax's Summary analysis of it."""
    import torch

    from mfbo.optimize import MultiFidelityOptimizer

    space, trials, surrogate, _ = stored_run
    torch.manual_seed(0)
    opt = MultiFidelityOptimizer(space, seed=0)
    for t in trials[:4]:
        opt.tell(opt.attach(t.params, t.data_fraction, t.epochs), t.curve, t.cost)
    v = SurrogateView(space, opt.trials, surrogate, experiment=opt.experiment)
    tt = v.trials_table()
    assert tt["source"] == "ax.analysis.Summary" and len(tt["rows"]) == 4
    col = tt["columns"].index("trial_index")
    assert [r[col] for r in tt["rows"]] == [0, 1, 2, 3]
    assert SurrogateView(space, trials, surrogate).trials_table()["source"] == "mfbo"


class _UnsureOfOne:
    """One evaluated x has the lowest predicted mean but a wide sd; the others are worse and certain."""

    def __init__(self, unsure_x: float):
        self.unsure_x = unsure_x

    def predict(self, configs, data_fraction, epochs):
        unsure = np.array([abs(c["x"] - self.unsure_x) < 1e-9 for c in configs])
        m = np.where(unsure, 0.10, [0.12 + abs(c["x"] - 0.5) for c in configs])
        return m, np.where(unsure, 0.5, 0.001)


def test_incumbent_is_the_pessimistic_best_evaluated_configuration(stored_run):
    space, trials, _, prior = stored_run
    trials = [t for t in trials if t.status == "completed"]
    xs = sorted({t.params["x"] for t in trials})
    unsure = xs[0]
    v = SurrogateView(space, trials, _UnsureOfOne(unsure), prior)
    inc = v.incumbent
    assert inc in [t.params for t in trials]
    # the lowest mean is unsure: the most certain of the rest wins (mean + sd, like the optimiser)
    expected = min(xs[1:], key=lambda x: abs(x - 0.5))
    assert inc["x"] == pytest.approx(expected) and inc["x"] != unsure


def _visible_labels(ax, axis: str) -> list[str]:
    """Tick labels drawn inside the view interval of one axis (after a draw)."""
    ax.figure.canvas.draw()
    a = ax.xaxis if axis == "x" else ax.yaxis
    lo, hi = sorted(a.get_view_interval())
    return [t.get_text() for t in a.get_ticklabels() if t.get_text() and lo <= t.get_position()[0 if axis == "x"
                                                                                               else 1] <= hi]


@pytest.mark.parametrize("lo,hi", [(0.03, 0.08), (0.2, 0.5), (1.5, 2.5), (0.0301, 0.0305), (1e-5, 0.1), (1, 27)])
def test_log_axes_carry_at_least_three_tick_labels(lo, hi):
    from mfbo.inspect._view import _figure, _log

    fig, axes = _figure()
    ax = axes[0, 0]
    ax.plot([lo, hi], [lo, hi])
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    _log(ax, "x")
    _log(ax, "y")
    for axis in ("x", "y"):
        labels = _visible_labels(ax, axis)
        assert 3 <= len(labels) <= 10, (lo, hi, labels)
        assert all(float(v) > 0 for v in labels)


def test_integer_hyperparameters_are_drawn_at_whole_numbers(view):
    fig = view.plot_slices()
    ax = next(a for a in fig.axes if a.get_xlabel() == "layers")
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)
    # The posterior is evaluated at the four whole numbers of [1, 4] only.
    xs = np.concatenate([line.get_xdata() for line in ax.lines if len(line.get_xdata()) > 2])
    assert set(np.unique(xs)) == {1, 2, 3, 4}


def _best_json(params: dict, *, baselines: bool = True) -> dict:
    best = {"params": params, "final": True, "fidelity": {"data_fraction": 1.0, "epochs": 27},
            "validation_curve": [0.2, 0.1], "validation_value": 0.1,
            "test_metrics": {"energy_mae": 1.2, "energy_mae_per_atom": 0.02, "force_mae": 0.15,
                             "force_mae_free": 0.12}}
    if baselines:
        best["test_baselines"] = {"n_images": 60,
                                  "linear_fit": {"energy_mae": 2.4, "energy_mae_per_atom": 0.04},
                                  "mean_energy": {"energy_mae": 12.0, "energy_mae_per_atom": 0.2},
                                  "zero_forces": {"force_mae": 0.5, "force_mae_free": None}}
    return best


def test_the_retrained_configuration_is_the_recommendation_with_its_test_against_baselines(stored_run, tmp_path):
    from mfbo.inspect import build_report

    space, trials, surrogate, prior = stored_run
    done = [t for t in trials if t.status == "completed"]
    # Not the view's own pick: the retrained configuration is the one reported.
    own = SurrogateView(space, trials, surrogate, prior).incumbent
    chosen = next(t.params for t in done if t.params != own)
    v = SurrogateView(space, trials, surrogate, prior, objective_name="validation energy MAE (eV/atom)",
                      final=_best_json({**chosen, "unused": 1}))
    assert v.incumbent == chosen and v.incumbent_source == "final"
    s = v.summary()
    assert s["incumbent"] == chosen and s["n_final"] == 1
    assert s["final"]["observed"] == 0.1 and s["final"]["lower"] < s["final"]["upper"]
    rows = {r["metric"]: r for r in s["test"]["rows"]}
    assert rows["energy_mae_per_atom"]["baselines"]["linear_fit"]["ratio"] == pytest.approx(0.5)
    assert rows["energy_mae"]["baselines"]["mean_energy"]["ratio"] == pytest.approx(0.1)
    assert rows["force_mae"]["baselines"]["zero_forces"]["ratio"] == pytest.approx(0.3)
    assert rows["force_mae_free"]["baselines"] == {}  # a null baseline is left out, not a failure
    html = build_report(v, tmp_path / "rep")["html"]
    text = open(html, encoding="utf-8").read()
    summary = text[text.index("<div id='summary'>"): text.index("<nav>")]
    assert "better than per-element linear fit" in summary and "0.50×" in summary and "(eV/atom)" in summary
    # A baseline without error (zero forces on perfectly symmetric cells) gives no ratio.
    still = _best_json(chosen)
    still["test_baselines"]["zero_forces"]["force_mae"] = 1e-16
    v.set_recommendation(final=still)
    rows = {r["metric"]: r for r in v.test_comparison()["rows"]}
    assert rows["force_mae"]["baselines"]["zero_forces"]["ratio"] is None
    # Without baselines (an older best.json) the test errors are still shown, with no ratio.
    v.set_recommendation(final=_best_json(chosen, baselines=False))
    assert all(r["baselines"] == {} for r in v.test_comparison()["rows"])
    text = open(build_report(v, tmp_path / "rep2")["html"], encoding="utf-8").read()
    assert "no <code>test_baselines</code>" in text
    # A best.json of another space is ignored: the view falls back to the optimiser's pick, then its own.
    v.set_recommendation(done[0].params, final=_best_json({"other": 1.0}))
    assert v.incumbent == done[0].params and v.incumbent_source == "optimizer"
    v.set_recommendation(None)
    assert v.incumbent == own and v.incumbent_source == "surrogate" and v.summary()["test"] is None


def test_a_recommendation_on_the_edge_of_the_space_is_flagged(stored_run, tmp_path):
    from mfbo.inspect import build_report

    space, trials, surrogate, prior = stored_run
    params = {"x": 0.001, "lr": 1e-3, "layers": 4, "act": "tanh"}
    v = SurrogateView(space, trials, surrogate, prior, recommendation=params)
    assert {b["name"]: b["side"] for b in v.summary()["on_bounds"]} == {"x": "lower", "layers": "upper"}
    text = open(build_report(v, tmp_path / "rep")["html"], encoding="utf-8").read()
    assert "On the edge of the searched range" in text and "x = 0.001 (lower end of [0, 1])" in text


def test_sobol_first_order_does_not_exceed_total_on_a_fitted_surrogate(view):
    imp = view.importance()
    for n, total in imp["sobol_total"].items():
        err = math.hypot(imp["sobol_first_se"][n], imp["sobol_total_se"][n])
        assert imp["sobol_first"][n] <= total + 3 * err, (n, imp)
