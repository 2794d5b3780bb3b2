"""``SurrogateView``: what a fitted multi-fidelity surrogate believes, as numbers and figures.

Built from ``(space, trials, surrogate[, prior])`` only, so it serves a running study, a
finished one and a bare :class:`mfbo.optimize.MultiFidelityOptimizer` alike. Figures are
matplotlib ``Figure`` objects made without pyplot (Agg canvas), safe in notebooks, scripts
and threads.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mfbo.errors import MfboError
from mfbo.inspect import _analysis as A
from mfbo.inspect._model import ModelAccess
from mfbo.optimize import SearchSpace
from mfbo.training._baselines import is_error_scale

__all__ = ["SurrogateView", "InspectError"]


class InspectError(MfboError):
    """A study or surrogate cannot be inspected (the message says what is missing)."""


def _figure(nrows: int = 1, ncols: int = 1, size=(6.4, 4.2)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] * ncols, size[1] * nrows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def log_ticks(vmin: float, vmax: float, max_ticks: int = 8) -> list[float]:
    """Major tick values for a log axis over ``[vmin, vmax]`` with at least three inside it.

    Whole decades when the range spans enough of them; otherwise the 1-2-5 values, then finer
    round values (1, 1.5, 2, 3, 4, 5, 6, 8 per decade), then evenly spaced round values for ranges
    narrower than that; at most ``max_ticks`` (every k-th kept).
    """
    from matplotlib.ticker import MaxNLocator

    lo, hi = sorted((float(vmin), float(vmax)))
    if not (lo > 0 and np.isfinite(hi) and hi > lo):
        return [lo, hi] if lo > 0 else [hi]
    k0, k1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    eps = 1e-9 * hi
    for mantissas in ((1.0,), (1.0, 2.0, 5.0), (1.0, 2.0, 3.0, 5.0, 7.0), (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)):
        ticks = [m * 10.0 ** k for k in range(k0, k1 + 1) for m in mantissas]
        ticks = [t for t in ticks if lo - eps <= t <= hi + eps]
        if len(ticks) >= 3:
            step = -(-len(ticks) // max_ticks)
            return ticks[::step]
    ticks: list[float] = []
    for nbins in (4, 6, 9):
        ticks = [float(t) for t in MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
                 if lo - eps <= t <= hi + eps and t > 0]
        if len(ticks) >= 3:
            break
    return ticks


def _log_locator():
    from matplotlib.ticker import Locator

    class _LogTicks(Locator):
        def __call__(self):
            return self.tick_values(*self.axis.get_view_interval())

        def tick_values(self, vmin, vmax):
            return log_ticks(vmin, vmax)

    return _LogTicks()


def _log(ax, axis: str = "y") -> None:
    """Log scale with at least three plain tick labels (0.2, 1e-05) whatever the range; plain labels
    avoid mathtext, whose parser is slow to start."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_locator(_log_locator())
    target.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    target.set_minor_locator(LogLocator(subs=tuple(range(2, 10))))
    target.set_minor_formatter(NullFormatter())


def _integer_axis(ax, axis: str = "x") -> None:
    """Tick labels at whole numbers only (an integer hyperparameter)."""
    from matplotlib.ticker import MaxNLocator

    (ax.xaxis if axis == "x" else ax.yaxis).set_major_locator(MaxNLocator(integer=True))


def _plain_colorbar(cb) -> None:
    """Plain tick labels on a (log) colour bar, as for :func:`_log`."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    cb.ax.yaxis.set_major_locator(_log_locator())
    cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    cb.ax.yaxis.set_minor_formatter(NullFormatter())


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True, fontsize=10,
            color="0.35")
    ax.set_xticks([])
    ax.set_yticks([])


class SurrogateView:
    """Inspect a fitted multi-fidelity surrogate.

    Args:
        space: the study's :class:`~mfbo.optimize.SearchSpace` (or its plain-dict form).
        trials: every trial so far (:class:`~mfbo.optimize.Trial` objects or their dict records).
        surrogate: object with ``predict(configs, data_fraction, epochs) -> (mean, sd)`` (objective
            units), e.g. ``MultiFidelityOptimizer.surrogate()``; a fitted BoTorch model reachable as
            ``surrogate.model`` adds leave-one-out, lengthscales and joint samples.
        prior: optional :class:`mfbo.priors.Prior` (anything with ``log_prob(configs)``).
        objective_name: label of the objective for axes, e.g. "validation energy MAE (eV/atom)".
        seed: seed of every random choice (Sobol sequences, posterior samples).
        experiment: optional Ax ``Experiment`` recording the trials (``MultiFidelityOptimizer.experiment``);
            when given, the trials table comes from Ax's ``Summary`` analysis.
    """

    def __init__(self, space: SearchSpace | Mapping, trials: Sequence[Any], surrogate: Any, prior: Any = None,
                 *, objective_name: str = "objective", seed: int = 0, experiment: Any = None,
                 final: Mapping | None = None, recommendation: Mapping | None = None):
        self.space = SearchSpace.from_dict(space)
        self.trials = [A.as_trial(t, i) for i, t in enumerate(trials)]
        if surrogate is None or not callable(getattr(surrogate, "predict", None)):
            raise InspectError("the surrogate must have predict(configs, data_fraction, epochs) -> (mean, sd); "
                               "fit one first (a study needs at least one completed trial)")
        self.surrogate = surrogate
        self.prior = prior
        self.objective_name = objective_name
        self.seed = int(seed)
        self.experiment = experiment
        self.done = A.completed(self.trials)
        if not self.done:
            raise InspectError("no completed trial to inspect yet; wait for the first trial to finish")
        self.target = A.target_fidelity(self.space)
        self._model = ModelAccess(self.space, surrogate)
        self.final: dict | None = None
        self.recommendation: dict | None = None
        self.set_recommendation(recommendation, final=final)

    def set_recommendation(self, recommendation: Mapping | None = None, *, final: Mapping | None = None) -> None:
        """Say which configuration the report recommends (it is drawn as "recommended" everywhere).

        Args:
            recommendation: the optimiser's recommended design (``MultiFidelityOptimizer.recommend()``).
            final: a study's ``best.json`` content: the recommendation retrained at target fidelity
                (``params``, ``fidelity``, ``validation_curve``, ``test_metrics`` and, when present,
                ``test_baselines``). Its ``params`` win over ``recommendation`` when ``final`` is true.

        Without either (or when neither is a valid design of the space), the recommendation is the
        evaluated configuration with the lowest posterior mean plus one sd at target fidelity.
        """
        self.final = dict(final) if final else None
        self.recommendation = dict(recommendation) if recommendation else None
        self.__dict__.pop("_incumbent_info", None)

    def _design(self, params: Mapping | None) -> dict | None:
        """``params`` restricted to the design hyperparameters, or None when it is not a valid design."""
        if not isinstance(params, Mapping):
            return None
        names = [p.name for p in self.space.design_parameters]
        if any(n not in params for n in names):
            return None
        try:
            return self.space.validate({n: params[n] for n in names})
        except Exception:  # noqa: BLE001 - a best.json from another space is not this space's design
            return None

    # -- predictions -------------------------------------------------------------------
    def predict(self, params: Mapping | Sequence[Mapping], fidelity: Mapping | None = None):
        """Posterior mean and sd of the objective.

        Args:
            params: one design configuration or a list of them (natural units).
            fidelity: e.g. ``{"data_fraction": 0.25, "epochs": 10}`` or ``(0.25, 10)``; missing
                entries (or None) mean target fidelity.

        Returns:
            ``(mean, sd)``: floats for one configuration, ``(n,)`` arrays for a list (objective units).
        """
        single = isinstance(params, Mapping)
        configs = [dict(params)] if single else [dict(p) for p in params]
        configs = [self.space.validate(c) for c in configs]
        if fidelity is not None and not isinstance(fidelity, Mapping):
            fidelity = dict(zip(("data_fraction", "epochs"), fidelity))  # (data_fraction, epochs)
        fidelity = dict(fidelity or {})
        df, ep = self.target
        if self.space.data_fidelity is not None:
            df = float(fidelity.get(self.space.data_fidelity.name, fidelity.get("data_fraction", df)))
        if self.space.iteration_fidelity is not None:
            ep = int(fidelity.get(self.space.iteration_fidelity.name, fidelity.get("epochs", ep)))
        mean, sd = self._predict(configs, df, ep)
        return (float(mean[0]), float(sd[0])) if single else (mean, sd)

    def _predict(self, configs, data_fraction, epochs, chunk: int = 256):
        # Chunks: a GP posterior over m points builds an m x m test covariance; 256 keeps that cheap.
        configs = list(configs)
        means, sds = [], []
        for i in range(0, max(len(configs), 1), chunk):
            mean, sd = self.surrogate.predict(configs[i: i + chunk], data_fraction, epochs)
            means.append(np.asarray(mean, dtype=float).ravel())
            sds.append(np.asarray(sd, dtype=float).ravel())
        return np.concatenate(means), np.concatenate(sds)

    # -- numbers -----------------------------------------------------------------------
    @property
    def incumbent(self) -> dict:
        """The recommended configuration: ``best.json``'s when the study retrained one at target fidelity,
        else the optimiser's recommendation when given, else the evaluated configuration with the lowest
        posterior mean plus one sd at target fidelity (the optimiser's default rule, in the objective's
        units: a configuration seen only at low fidelity wins only when the model is sure of it)."""
        return dict(self._incumbent_info[0])

    @property
    def incumbent_source(self) -> str:
        """Where :attr:`incumbent` comes from: "final", "optimizer" or "surrogate"."""
        return self._incumbent_info[1]

    @functools.cached_property
    def _incumbent_info(self) -> tuple[dict, str]:
        if self.final and self.final.get("final"):
            params = self._design(self.final.get("params"))
            if params is not None:
                return params, "final"
        params = self._design(self.recommendation)
        if params is not None:
            return params, "optimizer"
        seen, configs = set(), []
        for t in self.done:
            k = A.config_key(self.space, t.params)
            if k not in seen:
                seen.add(k)
                configs.append(t.params)
        mean, sd = self._predict(configs, *self.target)
        return dict(configs[int(np.argmin(mean + sd))]), "surrogate"

    def interval(self, params: Mapping, data_fraction: float, epochs: int) -> dict:
        """The surrogate's 95% predictive interval (observation noise included) for one configuration.

        Returns:
            ``{"mean", "sd", "lower", "upper", "latent": bool}`` in objective units; ``latent`` says
            whether the interval was formed in the GP's own outcome units (then mapped through the
            link, so it can be asymmetric) or, without a readable model, as mean ± 1.96 sd.
        """
        from mfbo.inspect._model import _LINKS

        cfg = self.space.validate(dict(params))
        mean, sd = self._predict([cfg], data_fraction, epochs)
        out = {"mean": float(mean[0]), "sd": float(sd[0]), "latent": False,
               "lower": float(mean[0] - 1.959964 * sd[0]), "upper": float(mean[0] + 1.959964 * sd[0])}
        lat = self._model.latent([cfg], data_fraction, epochs)
        if lat is not None:
            mu, s = float(lat[0][0]), float(lat[1][0])
            tot = math.hypot(s, self._model.noise_sd() or 0.0)
            g = _LINKS[self._model.link or "identity"][1]
            a, b = float(g(np.array(mu - 1.959964 * tot))), float(g(np.array(mu + 1.959964 * tot)))
            out.update({"lower": min(a, b), "upper": max(a, b), "latent": True})
        return out

    def final_check(self) -> dict | None:
        """The final retraining of the recommendation against what the surrogate predicted for it.

        The final run is not one of the surrogate's observations, so this is an out-of-sample test.

        Returns:
            ``{"observed", "data_fraction", "epochs", "mean", "sd", "lower", "upper", "inside_95"}``
            (objective units), plus ``"prediction_before"`` (``{"mean", "sd"}``, made before the
            retraining) and ``"z"`` (its z-score) when best.json has them; None without a completed
            final retraining.
        """
        f = self.final
        if not f or not f.get("final") or self.incumbent_source != "final":
            return None
        obs = A.finite_or_none(f.get("validation_value"))
        if obs is None:
            curve = f.get("validation_curve") or []
            obs = A.finite_or_none(curve[-1]) if curve else None
        if obs is None:
            return None
        fid = f.get("fidelity") or {}
        df = float(fid.get("data_fraction", self.target[0]) or self.target[0])
        ep = int(fid.get("epochs", self.target[1]) or self.target[1])
        iv = self.interval(self.incumbent, df, ep)
        out = {"observed": obs, "data_fraction": df, "epochs": ep, **iv,
               "inside_95": bool(iv["lower"] <= obs <= iv["upper"])}
        pred = f.get("prediction") or {}
        if f.get("z") is not None and pred.get("mean") is not None:
            # what the optimiser predicted before the retraining ran (run-to-run noise included)
            out["prediction_before"] = {"mean": float(pred["mean"]), "sd": float(pred["sd"])}
            out["z"] = float(f["z"])
        return out

    def importance(self, n_samples: int = 1024) -> dict[str, dict[str, float]]:
        """Hyperparameter importance at target fidelity.

        Returns:
            ``{"sobol_first": {name: S_i}, "sobol_total": {name: S_Ti}, "sobol_first_se": {...},
            "sobol_total_se": {...}, "inverse_lengthscale": {...}}``: Sobol indices of the surrogate mean
            (Saltelli/Jansen estimators on centred values) with their bootstrap Monte-Carlo standard errors,
            inverse ARD lengthscales of the GP's design kernel in unit-cube coordinates (empty when the
            surrogate has no GP).
        """
        return dict(self._importance(n_samples))

    @functools.lru_cache(maxsize=4)  # noqa: B019 - one view per study, few calls
    def _importance(self, n_samples: int) -> tuple:
        s = A.sobol_indices(self.space, self._predict, n_samples=n_samples, seed=self.seed)
        inv = None
        own = getattr(self.surrogate, "inverse_lengthscales", None)
        if callable(own):
            try:
                inv = dict(own())
            except Exception:  # noqa: BLE001 - fall back to reading the kernel ourselves
                inv = None
        if not inv:
            inv = self._model.inverse_lengthscales() or {}
        return (("sobol_first", s["first"]), ("sobol_total", s["total"]), ("sobol_first_se", s["first_se"]),
                ("sobol_total_se", s["total_se"]), ("inverse_lengthscale", inv))

    def fidelity_hyperparameters(self) -> dict[str, float]:
        own = getattr(self.surrogate, "fidelity_hyperparameters", None)
        try:
            return dict(own()) if callable(own) else {}
        except Exception:  # noqa: BLE001 - optional extra
            return {}

    @functools.cached_property
    def _loo(self) -> dict | None:
        return self._model.loo()

    def loo(self) -> dict:
        """Leave-one-configuration-out cross-validation of the surrogate (see ``ModelAccess.loo``).

        Returns:
            ``{"available", "reason", "n", "coverage_95", "rmse", "mean_abs_z", "points": [...]}``;
            coverage is the fraction of held-out observations inside their nominal 95% interval.
        """
        r = self._loo
        if r is None:
            return {"available": False, "reason": self._model.reason or "fewer than two configurations",
                    "n": 0, "coverage_95": None, "rmse": None, "points": []}
        obs, pred = r["observed"], r["predicted"]
        pts = [
            {"observed": float(o), "predicted": float(p), "lower": float(lo), "upper": float(hi),
             "z": A.finite_or_none(z), "covered": bool(c), "data_fraction": A.finite_or_none(df),
             "epochs": A.finite_or_none(ep)}
            for o, p, lo, hi, z, c, df, ep in zip(obs, pred, r["lower"], r["upper"], r["z"], r["covered"],
                                                  r["data_fraction"], r["epochs"])
        ]
        return {"available": True, "reason": None, "n": len(pts),
                "coverage_95": float(np.mean(r["covered"])),
                "rmse": float(np.sqrt(np.mean((obs - pred) ** 2))),
                "mean_abs_z": float(np.mean(np.abs(r["z"]))),
                "points": pts}

    @functools.cached_property
    def _trust(self) -> list[dict]:
        return A.fidelity_trust(self.space, self.trials, self._predict)

    def fidelity_trust(self) -> list[dict]:
        """Spearman/Kendall rank correlation of each observed fidelity level with target (see ``_analysis``)."""
        return [dict(r) for r in self._trust]

    @functools.cached_property
    def _prior_post(self) -> dict:
        sampler = None
        if self._model.available:
            def sampler(configs, n, seed):
                return self._model.sample(configs, *self.target, n_samples=n, seed=seed)
        return A.prior_posterior(self.space, self.prior, self._predict, sampler=sampler, seed=self.seed)

    def prior_posterior(self) -> dict:
        """Prior vs posterior belief about the optimum's location per hyperparameter with a prior."""
        return self._prior_post

    def summary(self) -> dict:
        """Counts, cost, the recommended configuration with its prediction at target fidelity, its
        final retraining (when the study made one) and the hyperparameters it has on a bound."""
        prog = A.progress(self.space, self.trials)
        inc = self.incumbent
        m, s = self.predict(inc)
        status = {}
        for t in self.trials:
            status[t.status] = status.get(t.status, 0) + 1
        best_t = prog.best_at_target[-1] if len(prog.best_at_target) else np.nan
        check = self.final_check()
        best = min(self.done, key=lambda t: t.curve[-1])
        return {
            "n_trials": len(self.trials), "status": status,
            "cost_seconds": float(prog.cumulative_cost[-1]) if len(prog.cumulative_cost) else 0.0,
            "cost_ffe": float(np.sum(prog.fidelity)),
            "target_fidelity": self._target_dict(),
            "incumbent": inc, "incumbent_source": self.incumbent_source, "incumbent_mean": m, "incumbent_sd": s,
            "on_bounds": A.on_bounds(self.space, inc),
            "incumbent_interval": self.interval(inc, *self.target),
            "best_observed_at_target": A.finite_or_none(best_t),
            "best_observed": {"value": float(best.curve[-1]), "trial": best.index,
                              "data_fraction": best.data_fraction, "epochs": len(best.curve)},
            "n_at_target": int(np.sum(prog.at_target)),
            "n_final": int(check is not None),
            "final": check,
            "test": self.test_comparison(),
            "model": {"botorch_model": type(self._model.model).__name__ if self._model.model is not None else None,
                      "link": self._model.link, "note": self._model.reason},
            "fidelity_hyperparameters": self.fidelity_hyperparameters(),
        }

    #: best.json test metric -> (label, unit, baselines compared with it).
    TEST_METRICS = (
        ("energy_mae_per_atom", "energy MAE per atom", "eV/atom", ("linear_fit", "mean_energy")),
        ("energy_mae", "energy MAE", "eV", ("linear_fit", "mean_energy")),
        ("force_mae", "force MAE", "eV/Å", ("zero_forces",)),
        ("force_mae_free", "force MAE, free atoms", "eV/Å", ("zero_forces",)),
    )
    BASELINES = {"linear_fit": "per-element linear fit", "mean_energy": "mean energy per atom",
                 "zero_forces": "zero forces"}

    def test_comparison(self) -> dict | None:
        """The retrained recommendation's held-out test errors against the baselines in ``best.json``.

        Returns:
            ``{"n_images", "rows": [{"metric", "label", "unit", "model", "baselines": {name: {"label",
            "value", "ratio"}}}]}`` (ratio = model / baseline, < 1 means better than the baseline; None
            for a baseline without error, see :func:`mfbo.training._baselines.is_error_scale`), or
            None without test metrics. Baselines are optional: a ``best.json`` without
            ``test_baselines`` gives rows with empty ``baselines``.
        """
        f = self.final or {}
        metrics = f.get("test_metrics") if f.get("final") else None
        if not isinstance(metrics, Mapping):
            return None
        base = f.get("test_baselines") if isinstance(f.get("test_baselines"), Mapping) else {}
        rows = []
        for key, label, unit, names in self.TEST_METRICS:
            v = A.finite_or_none(metrics.get(key))
            if v is None:
                continue
            bl = {}
            for b in names:
                bv = A.finite_or_none((base.get(b) or {}).get(key)) if isinstance(base.get(b), Mapping) else None
                if bv is not None:
                    bl[b] = {"label": self.BASELINES[b], "value": bv, "ratio": v / bv if is_error_scale(bv) else None}
            rows.append({"metric": key, "label": label, "unit": unit, "model": v, "baselines": bl})
        return {"n_images": base.get("n_images"), "rows": rows} if rows else None

    def fidelity_trust_headline(self) -> dict | None:
        """The single most informative fidelity-trust number for the summary.

        In order of strength of evidence: the observed comparison (configurations run both at a lower
        fidelity and at target) with the most pairs, the cheapest level among ties; else the
        learning-curve comparison (:meth:`curve_trust`) at the longest level up to a third of the
        reference epochs; else the comparison against the surrogate's target-fidelity mean, which is
        weak evidence (the surrogate learned from the same runs).

        Returns:
            the row with ``"against"`` ("observed", "curves" or "surrogate"), ``"rho"`` (Spearman) and
            ``"n_pairs"`` added, or None.
        """
        rows = self.fidelity_trust()
        obs = [r for r in rows if r["spearman"] is not None]
        if obs:
            r = max(obs, key=lambda r: (r["n"], -r["data_fraction"][1] * r["epochs"]))
            return {**r, "against": "observed", "rho": r["spearman"], "n_pairs": r["n"]}
        cur = [r for r in self.curve_trust() if r["spearman"] is not None]
        if cur:
            short = [r for r in cur if 3 * r["epochs"] <= r["reference_epochs"]]
            r = max(short, key=lambda r: r["epochs"]) if short else min(cur, key=lambda r: r["epochs"])
            return {**r, "against": "curves", "rho": r["spearman"], "n_pairs": r["n"]}
        sur = [r for r in rows if r.get("spearman_vs_surrogate") is not None]
        if sur:
            r = max(sur, key=lambda r: (r["n_level"], -r["data_fraction"][1] * r["epochs"]))
            return {**r, "against": "surrogate", "rho": r["spearman_vs_surrogate"], "n_pairs": r["n_level"]}
        return None

    @functools.cached_property
    def _curve_trust(self) -> list[dict]:
        return A.curve_trust(self.space, self.trials)

    def curve_trust(self) -> list[dict]:
        """Rank correlation between early and late epochs of the same learning curves (see ``_analysis``)."""
        return [dict(r) for r in self._curve_trust]

    def _target_dict(self) -> dict:
        return self.space.target_fidelities()

    def trials_table(self) -> dict:
        """One row per trial: Ax's ``Summary`` analysis of the experiment when there is one, else from the trials.

        Returns:
            ``{"source": "ax.analysis.Summary" | "mfbo", "columns": [...], "rows": [[...], ...]}``.
        """
        if self.experiment is not None:
            try:
                from ax.analysis.summary import Summary

                df = Summary().compute(experiment=self.experiment).df
                rows = [[None if (isinstance(v, float) and not np.isfinite(v)) else
                         (v.item() if hasattr(v, "item") else v) for v in r]
                        for r in df.itertuples(index=False)]
                return {"source": "ax.analysis.Summary", "columns": [str(c) for c in df.columns], "rows": rows}
            except Exception:  # noqa: BLE001 - an Ax version without it must not break the report
                pass
        names = [p.name for p in self.space.design_parameters]
        fids = [p.name for p in self.space.fidelity_parameters]
        rows = []
        for t in self.trials:
            fv = {self.space.data_fidelity.name: t.data_fraction} if self.space.data_fidelity else {}
            if self.space.iteration_fidelity:
                fv[self.space.iteration_fidelity.name] = t.epochs
            rows.append([t.index, t.status, t.final_value, *[t.params.get(n) for n in names],
                         *[fv.get(n) for n in fids], t.cost])
        return {"source": "mfbo", "columns": ["trial_index", "status", "objective", *names, *fids, "cost_s"],
                "rows": rows}

    def to_dict(self) -> dict:
        """Every number of the report (JSON-able)."""
        return {
            "trials": self.trials_table(),
            "summary": self.summary(),
            "importance": self.importance(),
            "loo": self.loo(),
            "fidelity_trust": self.fidelity_trust(),
            "curve_trust": self.curve_trust(),
            "fidelity_trust_headline": self.fidelity_trust_headline(),
            "prior_posterior": self.prior_posterior(),
        }

    # -- helpers for figures -----------------------------------------------------------
    def _ylabel(self) -> str:
        return self.objective_name

    def _fid_label(self) -> str:
        return "fidelity (× size of a target run)"

    def _fid_norm(self):
        """Log colour scale for trial fidelities: multi-fidelity studies span decades below target."""
        from matplotlib.colors import LogNorm

        f = [A.cost_fraction(self.space, t) for t in self.trials]
        f = [v for v in f if v > 0]
        lo = min(min(f) if f else 0.1, 0.5)
        return LogNorm(vmin=max(lo, 1e-4), vmax=max(1.0, max(f) if f else 1.0))

    def _positive(self) -> bool:
        return all(v > 0 for t in self.done for v in t.curve if np.isfinite(v))

    def _others(self, k: int = 3) -> list[dict]:
        """Up to k more evaluated configurations with the best observed values, distinct from the incumbent."""
        inc_key = A.config_key(self.space, self.incumbent)
        ranked = sorted(self.done, key=lambda t: t.curve[-1])
        out, seen = [], {inc_key}
        for t in ranked:
            kk = A.config_key(self.space, t.params)
            if kk not in seen:
                seen.add(kk)
                out.append(t.params)
            if len(out) >= k:
                break
        return out

    def _grid(self, p, n: int = 60):
        if p.type == "categorical":
            return list(p.choices)
        v = p.from_unit(np.linspace(0, 1, n))
        return [int(x) for x in np.unique(v)] if p.is_integer else [float(x) for x in v]

    def _axis_label(self, p) -> str:
        units = {"sigma_min": "Å", "sigma_max": "Å", "cutoff": "Å"}
        u = units.get(p.name)
        return f"{p.name} ({u})" if u else p.name

    # -- figures -----------------------------------------------------------------------
    def plot_progress(self):
        """Best-so-far objective against cumulative cost, trials coloured by fidelity."""
        prog = A.progress(self.space, self.trials)
        fig, axes = _figure(size=(7.5, 4.5))
        ax = axes[0, 0]
        x = prog.cumulative_cost
        ok = np.isfinite(prog.final_values)
        sc = ax.scatter(x[ok], prog.final_values[ok], c=prog.fidelity[ok], cmap="viridis", norm=self._fid_norm(),
                        s=28, edgecolor="k", linewidth=0.3, label="trial (final value at its fidelity)", zorder=3)
        _plain_colorbar(fig.colorbar(sc, ax=ax, label=self._fid_label()))
        ax.step(x, prog.best_any, where="post", color="0.5", ls="--", label="best so far, any fidelity")
        if np.any(np.isfinite(prog.best_at_target)):
            ax.step(x, prog.best_at_target, where="post", color="C3", lw=2, label="best so far at target fidelity")
        failed = np.array([t.status in ("failed", "abandoned") for t in self.trials])
        if failed.any():
            ax.scatter(x[failed], np.full(failed.sum(), np.nanmin(prog.final_values)), marker="x", color="C3",
                       label="failed / abandoned trial (drawn at the lowest value)", zorder=4)
        if self._positive():
            _log(ax, "y")
        ax.set_xlabel("cumulative cost (s)")
        ax.set_ylabel(self._ylabel())
        ax.set_title("Best so far against cumulative cost")
        ax.legend(fontsize=8, loc="best", framealpha=0.85)
        ax.grid(alpha=0.3)
        return fig

    def plot_learning_curves(self):
        """Every trial's learning curve, coloured by data fraction."""
        import matplotlib as mpl

        fig, axes = _figure(size=(7.5, 4.5))
        ax = axes[0, 0]
        cmap = mpl.colormaps["plasma"]
        dfp = self.space.data_fidelity
        lo, hi = (dfp.low, dfp.high) if dfp is not None else (0.0, 1.0)
        norm = mpl.colors.Normalize(vmin=lo, vmax=hi)
        for t in self.done:
            e = np.arange(1, len(t.curve) + 1)
            ax.plot(e, t.curve, color=cmap(norm(t.data_fraction)), lw=1, alpha=0.8,
                    marker="." if len(e) < 3 else None)
        fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="data fraction")
        if self._positive():
            _log(ax, "y")
        if self.space.iteration_fidelity is not None:
            ax.axvline(self.target[1], color="0.4", ls=":", lw=1, label=f"target epochs = {self.target[1]}")
            ax.legend(fontsize=8)
        ax.set_xlabel("epoch")
        ax.set_ylabel(self._ylabel())
        ax.set_title(f"Learning curves of {len(self.done)} completed trials")
        ax.grid(alpha=0.3)
        return fig

    def plot_slices(self):
        """Posterior mean +- 2 sd at target fidelity along each hyperparameter through the incumbent."""
        params = self.space.design_parameters
        ncols = min(3, len(params))
        nrows = -(-len(params) // ncols)
        fig, axes = _figure(nrows, ncols, size=(4.3, 3.4))
        inc = self.incumbent
        for ax, p in zip(axes.flat, params):
            grid = self._grid(p)
            cfgs = [{**inc, p.name: v} for v in grid]
            m, s = self._predict(cfgs, *self.target)
            obs_x = [t.params[p.name] for t in self.done]
            obs_y = [t.curve[-1] for t in self.done]
            fid = [A.cost_fraction(self.space, t) for t in self.done]
            if p.type == "categorical":
                xs = np.arange(len(grid))
                ax.errorbar(xs, m, yerr=2 * s, fmt="o", color="C0", capsize=4, label="mean ± 2 sd")
                ox = [list(p.choices).index(v) + 0.15 for v in obs_x]
                ax.set_xticks(xs, [str(c) for c in grid])
            elif p.is_integer:
                # Whole numbers only: the surrogate is defined at the integers, not between them.
                ax.errorbar(grid, m, yerr=2 * s, fmt="o-", color="C0", capsize=3, lw=0.8, ms=4,
                            label="posterior mean ± 2 sd")
                ox = obs_x
                ax.axvline(inc[p.name], color="C3", ls=":", lw=1, label="recommended")
                if p.log:
                    _log(ax, "x")
                else:
                    _integer_axis(ax, "x")
            else:
                ax.plot(grid, m, color="C0", label="posterior mean")
                ax.fill_between(grid, m - 2 * s, m + 2 * s, color="C0", alpha=0.2, label="± 2 sd")
                ox = obs_x
                ax.axvline(inc[p.name], color="C3", ls=":", lw=1, label="recommended")
                if p.log:
                    _log(ax, "x")
            sc = ax.scatter(ox, obs_y, c=fid, cmap="viridis", norm=self._fid_norm(), s=14, edgecolor="k",
                            linewidth=0.3, zorder=3, label="observed (colour: fidelity)")
            ax.set_xlabel(self._axis_label(p))
            ax.set_ylabel(self._ylabel())
            ax.set_title(f"{p.name}", fontsize=10)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(params):]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=7)
        _plain_colorbar(fig.colorbar(sc, ax=axes[:, -1].tolist(), label=self._fid_label(), shrink=0.8))
        fig.suptitle("Posterior at target fidelity along each hyperparameter through the recommended configuration")
        return fig

    def top_two(self) -> list[str]:
        """Names of the two most influential numeric hyperparameters (total Sobol index)."""
        total = self.importance()["sobol_total"]
        numeric = [p.name for p in self.space.design_parameters if p.type != "categorical"]
        return sorted(numeric, key=lambda n: -total.get(n, 0.0))[:2]

    def plot_contour(self):
        """2-D posterior mean and sd at target fidelity over the two most influential hyperparameters."""
        names = self.top_two()
        if len(names) < 2:
            fig, axes = _figure()
            _note(axes[0, 0], "A contour needs two numeric hyperparameters; this space has fewer.")
            return fig
        px, py = self.space[names[0]], self.space[names[1]]
        n = 36
        # Integer axes are evaluated at their whole numbers and drawn as cells, not interpolated.
        vx, vy = self._grid(px, n), self._grid(py, n)
        gx, gy = np.meshgrid(np.asarray(vx, dtype=float), np.asarray(vy, dtype=float))
        inc = self.incumbent
        cfgs = [{**inc, px.name: (int(a) if px.is_integer else float(a)), py.name: (int(b) if py.is_integer else float(b))}
                for a, b in zip(gx.ravel(), gy.ravel())]
        m, s = self._predict(cfgs, *self.target)
        discrete = px.is_integer or py.is_integer
        fig, axes = _figure(1, 2, size=(5.2, 4.3))
        for ax, z, title, cmap in ((axes[0, 0], m, "posterior mean", "viridis_r"),
                                   (axes[0, 1], s, "posterior sd", "magma")):
            zz = z.reshape(gx.shape)
            if discrete:
                cs = ax.pcolormesh(gx, gy, zz, shading="nearest", cmap=cmap)
            else:
                cs = ax.contourf(gx, gy, zz, levels=20, cmap=cmap)
            fig.colorbar(cs, ax=ax, label=f"{title} of {self._ylabel()}")
            ax.scatter([t.params[px.name] for t in self.done], [t.params[py.name] for t in self.done],
                       c="w", edgecolor="k", s=18, label="evaluated configurations")
            ax.scatter([inc[px.name]], [inc[py.name]], marker="*", s=160, c="C3", edgecolor="k",
                       label="recommended")
            ax.set_xlabel(self._axis_label(px))
            ax.set_ylabel(self._axis_label(py))
            for p, axis in ((px, "x"), (py, "y")):
                if p.log:
                    _log(ax, axis)
                elif p.is_integer:
                    _integer_axis(ax, axis)
            ax.set_title(title)
        axes[0, 0].legend(fontsize=7, loc="upper right")
        fig.suptitle(f"Target fidelity, other hyperparameters at the recommended configuration ({names[0]} × {names[1]})")
        return fig

    def plot_fidelity_response(self):
        """Predicted objective against epochs and against data fraction, observed traces overlaid."""
        sp = self.space
        panels = [k for k, p in (("epochs", sp.iteration_fidelity), ("data", sp.data_fidelity)) if p is not None]
        fig, axes = _figure(1, len(panels), size=(6.0, 4.4))
        configs = [self.incumbent] + self._others(3)
        labels = ["recommended"] + [f"config {i + 1}" for i in range(len(configs) - 1)]
        df_t, ep_t = self.target
        # One surrogate call per fidelity value, all configurations at once.
        ep_grid = df_grid = None
        if sp.iteration_fidelity is not None:
            p = sp.iteration_fidelity
            ep_grid = np.unique(np.round(np.geomspace(p.low, p.high, 40)).astype(int))
            ep_pred = [self._predict(configs, df_t, int(e)) for e in ep_grid]
            ep_m = np.array([a[0] for a in ep_pred])  # (n_grid, n_configs)
            ep_s = np.array([a[1] for a in ep_pred])
        if sp.data_fidelity is not None:
            p = sp.data_fidelity
            df_grid = np.linspace(p.low, p.high, 30)
            df_pred = [self._predict(configs, float(f), ep_t) for f in df_grid]
            df_m = np.array([a[0] for a in df_pred])
            df_s = np.array([a[1] for a in df_pred])
        for ax, kind in zip(axes.flat, panels):
            for i, (cfg, lab) in enumerate(zip(configs, labels)):
                col = f"C{i}"
                key = A.config_key(sp, cfg)
                mine = [t for t in self.done if A.config_key(sp, t.params) == key]
                if kind == "epochs":
                    m, s = ep_m[:, i], ep_s[:, i]
                    ax.plot(ep_grid, m, color=col, label=f"{lab}: predicted at data fraction {df_t:g}")
                    ax.fill_between(ep_grid, m - 2 * s, m + 2 * s, color=col, alpha=0.12)
                    for t in mine:
                        same = abs(t.data_fraction - df_t) < 1e-9
                        ax.plot(np.arange(1, len(t.curve) + 1), t.curve, color=col, ls="-" if same else "--",
                                marker="o", ms=2.5, lw=0.9, alpha=0.9)
                    ax.set_xlabel("epochs")
                    ax.set_title("Response to epochs (target data fraction)")
                else:
                    m, s = df_m[:, i], df_s[:, i]
                    ax.plot(df_grid, m, color=col, label=f"{lab}: predicted at {ep_t} epochs")
                    ax.fill_between(df_grid, m - 2 * s, m + 2 * s, color=col, alpha=0.12)
                    for t in mine:
                        full = len(t.curve) >= ep_t
                        ax.scatter([t.data_fraction], [t.curve[min(len(t.curve), ep_t) - 1]], color=col,
                                   marker="o" if full else "^", s=30, edgecolor="k", linewidth=0.4, zorder=3)
                    ax.set_xlabel("data fraction (of the training set)")
                    ax.set_title(f"Response to data fraction ({ep_t} epochs)")
            if self._positive():
                _log(ax, "y")
            ax.set_ylabel(self._ylabel())
            ax.grid(alpha=0.3)
        axes.flat[0].legend(fontsize=7)
        fig.suptitle("Fidelity response: lines = surrogate ± 2 sd; markers = observed "
                     "(solid/circles: target fidelity, dashed/triangles: lower)", fontsize=10)
        return fig

    def plot_loo(self):
        """Leave-one-configuration-out predicted vs observed with 95% intervals."""
        fig, axes = _figure(size=(5.8, 5.2))
        ax = axes[0, 0]
        r = self.loo()
        if not r["available"]:
            _note(ax, f"Leave-one-out not available: {r['reason']}")
            return fig
        pts = r["points"]
        obs = np.array([q["observed"] for q in pts])
        pred = np.array([q["predicted"] for q in pts])
        lo = np.array([q["lower"] for q in pts])
        hi = np.array([q["upper"] for q in pts])
        cov = np.array([q["covered"] for q in pts])
        for mask, colr, lab in ((cov, "C0", "inside 95% interval"), (~cov, "C3", "outside 95% interval")):
            if mask.any():
                ax.errorbar(obs[mask], pred[mask], yerr=[pred[mask] - lo[mask], hi[mask] - pred[mask]], fmt="o",
                            color=colr, ms=4, capsize=2, lw=0.8, label=lab)
        allv = np.concatenate([obs, lo, hi])
        allv = allv[np.isfinite(allv)]
        a, b = allv.min(), allv.max()
        ax.plot([a, b], [a, b], color="0.3", ls="--", lw=1, label="y = x")
        if self._positive() and a > 0:
            _log(ax, "x")
            _log(ax, "y")
        ax.set_xlabel(f"observed {self._ylabel()}")
        ax.set_ylabel(f"predicted (held out) {self._ylabel()}")
        ax.set_title(f"Leave-one-configuration-out cross-validation\n"
                     f"coverage of nominal 95% intervals = {r['coverage_95']:.0%} (n = {r['n']})", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        return fig

    def plot_importance(self):
        """Sobol indices (first-order, total) and inverse lengthscales per hyperparameter."""
        imp = self.importance()
        names = [p.name for p in self.space.design_parameters]
        fig, axes = _figure(1, 2, size=(5.4, 0.9 + 0.45 * len(names) + 1.5))
        y = np.arange(len(names))
        ax = axes[0, 0]
        fse, tse = imp.get("sobol_first_se") or {}, imp.get("sobol_total_se") or {}
        ax.barh(y - 0.2, [imp["sobol_first"][n] for n in names], height=0.4, label="first order",
                xerr=[fse.get(n, 0.0) for n in names], error_kw={"lw": 0.8, "capsize": 2})
        ax.barh(y + 0.2, [imp["sobol_total"][n] for n in names], height=0.4, label="total (with interactions)",
                xerr=[tse.get(n, 0.0) for n in names], error_kw={"lw": 0.8, "capsize": 2})
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_xlabel("Sobol index (fraction of variance of the surrogate mean)")
        ax.set_ylabel("hyperparameter")
        ax.set_title("Sobol indices at target fidelity (± Monte-Carlo error)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, axis="x")
        ax = axes[0, 1]
        inv = imp["inverse_lengthscale"]
        if inv:
            ax.barh(y, [inv.get(n, 0.0) for n in names], color="C2")
            ax.set_yticks(y, names)
            ax.invert_yaxis()
            ax.set_xlabel("inverse lengthscale (1 / unit-cube length)")
            ax.set_ylabel("hyperparameter")
            ax.set_title("GP inverse ARD lengthscales")
            ax.grid(alpha=0.3, axis="x")
        else:
            _note(ax, "The surrogate exposes no ARD lengthscales.")
        return fig

    def plot_prior_posterior(self):
        """Prior vs posterior (argmin of posterior samples) for each hyperparameter with a prior."""
        pp = self.prior_posterior()["parameters"]
        if not pp:
            fig, axes = _figure(size=(6.0, 2.5))
            _note(axes[0, 0], "No hyperparameter has a prior in this study." if self.prior is None
                  else "The prior is flat in every hyperparameter.")
            return fig
        names = list(pp)
        ncols = min(3, len(names))
        nrows = -(-len(names) // ncols)
        fig, axes = _figure(nrows, ncols, size=(4.3, 3.3))
        for ax, n in zip(axes.flat, names):
            pr, po = pp[n]["prior"], pp[n]["posterior"]
            p = self.space[n]
            if pr["kind"] in ("categorical", "integer"):
                xs = np.arange(len(pr["prob"]))
                lab = pr.get("choices") or pr.get("values")
                ax.bar(xs - 0.2, pr["prob"], width=0.4, label="prior", color="0.6")
                ax.bar(xs + 0.2, po["prob"], width=0.4, label="posterior", color="C0")
                ax.set_xticks(xs, [str(v) for v in lab], rotation=45 if len(lab) > 6 else 0)
                ax.set_ylabel("probability")
            else:
                edges = np.asarray(pr["edges"])
                ax.stairs(pr["prob"], edges, fill=True, alpha=0.35, color="0.5", label="prior")
                ax.stairs(po["prob"], edges, lw=2, color="C0", label="posterior (argmin of samples)")
                if p.log:
                    _log(ax, "x")
                ax.set_ylabel("probability per bin")
            ax.set_xlabel(self._axis_label(p))
            ax.set_title(n, fontsize=10)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(names):]:
            ax.set_visible(False)
        axes.flat[0].legend(fontsize=7)
        how = "joint posterior samples" if self.prior_posterior()["joint"] else "independent marginal samples"
        fig.suptitle(f"Where is the optimum? Prior belief vs surrogate posterior ({how})", fontsize=10)
        return fig

    def plot_fidelity_trust(self):
        """Rank correlation of lower fidelities with higher ones: against observed target runs, within
        learning curves, and against the surrogate's target-fidelity mean (only panels with data)."""
        rows = self.fidelity_trust()
        curves = [r for r in self.curve_trust() if r["spearman"] is not None]
        groups: dict[tuple, list[dict]] = {}
        for r in rows:
            groups.setdefault(tuple(r["data_fraction"]), []).append(r)
        panels = []
        if any(r["spearman"] is not None for r in rows):
            panels.append(("", "vs observed target-fidelity runs of the same configurations"))
        if curves:
            ref = curves[0]["reference_epochs"]
            panels.append(("curves", f"within learning curves: epoch e vs epoch {ref} ({curves[0]['n']} trials)"))
        if any(r.get("spearman_vs_surrogate") is not None for r in rows):
            panels.append(("_vs_surrogate", "vs the surrogate's target mean (weak: it learned from these runs)"))
        if not panels:
            fig, axes = _figure(size=(6.4, 2.6))
            _note(axes[0, 0], "No measure yet: fewer than 3 configurations were seen at a lower fidelity and "
                              "at target,\nand fewer than 4 trials ran two epochs or more.")
            return fig
        fig, axes = _figure(1, len(panels), size=(4.6 if len(panels) > 2 else 5.4, 4.2))
        for ax, (key, title) in zip(axes.flat, panels):
            if key == "curves":
                ep = [r["epochs"] for r in curves]
                ax.plot(ep, [r["spearman"] for r in curves], marker="o", color="C0", label="spearman")
                ax.plot(ep, [r["kendall"] for r in curves], marker="s", ls="--", color="C0", label="kendall")
            else:
                for i, (dfr, rs) in enumerate(sorted(groups.items())):
                    lab = f"data fraction {dfr[0]:.3g}" if dfr[0] == dfr[1] else f"data fraction {dfr[0]:.3g}–{dfr[1]:.3g}"
                    ep = [r["epochs"] for r in rs]
                    for stat, mk, ls in (("spearman", "o", "-"), ("kendall", "s", "--")):
                        v = [r.get(stat + key) for r in rs]
                        v = [np.nan if x is None else x for x in v]
                        if not np.all(np.isnan(v)):
                            ax.plot(ep, v, marker=mk, ls=ls, color=f"C{i}", label=f"{stat} — {lab}")
                    if key == "":
                        for r in rs:
                            if r["spearman"] is not None:
                                ax.annotate(f"n={r['n']}", (r["epochs"], r["spearman"]), fontsize=6,
                                            textcoords="offset points", xytext=(2, 4))
            ax.axhline(0, color="0.4", lw=0.8)
            ax.set_ylim(-1.05, 1.05)
            if self.space.iteration_fidelity is not None:
                _log(ax, "x")
            ax.set_xlabel("epochs at the lower fidelity")
            ax.set_ylabel("rank correlation")
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=6)
            ax.grid(alpha=0.3)
        fig.suptitle("Fidelity trust: do cheap runs rank configurations like expensive runs?", fontsize=10)
        return fig

    #: section id -> (title, figure method, description) in report order.
    SECTIONS = (
        ("progress", "Best so far against cost", "plot_progress"),
        ("learning_curves", "Learning curves", "plot_learning_curves"),
        ("slices", "Posterior slices through the recommended configuration", "plot_slices"),
        ("contour", "Contour of the two most influential hyperparameters", "plot_contour"),
        ("fidelity_response", "Fidelity response", "plot_fidelity_response"),
        ("loo", "Leave-one-out cross-validation", "plot_loo"),
        ("importance", "Hyperparameter importance", "plot_importance"),
        ("prior_posterior", "Prior vs posterior", "plot_prior_posterior"),
        ("fidelity_trust", "Fidelity trust", "plot_fidelity_trust"),
    )

    def figures(self) -> dict:
        """Every figure of the report, ``{section id: Figure}``."""
        return {sid: getattr(self, meth)() for sid, _, meth in self.SECTIONS}
