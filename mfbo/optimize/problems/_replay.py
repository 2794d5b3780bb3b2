"""Replay problems: a surrogate fitted to recorded training runs, with seed noise (YAHPO style).

:class:`ReplayProblem` reads a record written by ``analysis/benchmarks/mlip/record.py`` (format
``mfbo-mlip-records-1``): real training runs of mfbo's trainer on a space-filling design of configurations,
at several data fractions, with several training seeds per cell, each run recorded after every epoch. It
fits Gaussian processes (scikit-learn, ARD Matérn-5/2 + white noise) to the records:

- the **mean curve**: for every recorded (configuration, fraction) cell, the mean over seeds of the log
  metric after each epoch (one output per epoch, so a replayed curve keeps the recorded shape); the
  per-cell variance of that mean enters as known observation noise;
- the **seed spread**: the standard deviation over seeds of the log metric after each epoch (log of it,
  corrected for the bias of the log of a sample standard deviation);
- the **cost**: log featurisation seconds of the test split and of the pool, and log seconds per epoch.

A call ``problem(params, data_fraction, epochs)`` returns ``exp(m + s z)`` for epochs ``1..epochs``, with
``m``/``s`` the fitted mean and spread at ``(params, data_fraction)`` and ``z ~ N(0, 1)`` one draw per call
(a run's seed moves its whole curve), and the cost ``featurize_test + f featurize_pool + setup + t epoch_s``
in process CPU seconds (``clock="wall"`` for wall seconds). The ground truth is the expected value over
seeds: ``value_at_target(params) = exp(m + s^2 / 2)`` at the highest fraction and epoch count.
``optimum_value`` is the best value found by a Sobol search of 16 384 points plus Nelder-Mead refinement
of the best ten (best-known, not proven; computed once per fit and stored with it).

:func:`fit_replay` fits and returns the surrogate state (kernel hyperparameters, optimum, fit error:
held-out R² and Spearman rank correlation over configurations in a 5-fold cross-validation); a state saved
with :func:`save_fit` beside the record (``<record>.fit.json``) is reused when it matches the record and
the metric, so constructing a problem does not refit. Registered problems: ``mlip_si``, ``mlip_mo``,
``mlip_oc20`` (records under ``analysis/benchmarks/mlip/``; a missing record raises :class:`RecordError`
naming the command that records it) and ``replay`` (``records=PATH``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mfbo.errors import BackendUnavailable, ConfigError, DataError
from mfbo.optimize._space import SearchSpace
from mfbo.optimize.problems._base import Problem

__all__ = ["ReplayProblem", "MlipReplay", "RecordError", "fit_replay", "save_fit", "default_records",
           "RECORDS_FORMAT"]

RECORDS_FORMAT = "mfbo-mlip-records-1"
FIT_FORMAT = "mfbo-replay-fit-1"
RECORD_COMMAND = ("OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python analysis/benchmarks/mlip/record.py "
                  "--dataset {dataset}")


class RecordError(DataError):
    """A replay problem's record file is missing or malformed (the message names the file and the fault)."""


def default_records(dataset: str) -> Path:
    """``$MFBO_MLIP_RECORDS/<dataset>.json.gz`` if set, else ``analysis/benchmarks/mlip/<dataset>.json.gz``
    of the checkout this package was imported from."""
    env = os.environ.get("MFBO_MLIP_RECORDS")
    base = Path(env) if env else Path(__file__).resolve().parents[3] / "analysis" / "benchmarks" / "mlip"
    return base / f"{dataset}.json.gz"


def _read_records(path: Path, regenerate: str | None) -> dict:
    if not path.is_file():
        how = f"; record it with `{regenerate}`" if regenerate else ""
        raise RecordError(f"replay record {path} not found{how} (or pass records=PATH)")
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecordError(f"replay record {path} is not readable (gzipped) JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != RECORDS_FORMAT:
        raise RecordError(f"replay record {path}: field 'format' must be {RECORDS_FORMAT!r}")
    for key in ("space", "fractions", "max_epochs", "metrics", "configs"):
        if key not in data:
            raise RecordError(f"replay record {path}: missing field {key!r}")
    return data


def _digest(data: dict, metric: Mapping[str, float]) -> str:
    h = hashlib.sha256(json.dumps([data["configs"], sorted(metric.items())], sort_keys=True).encode())
    return h.hexdigest()[:16]


def _log_sd_bias(n: int) -> float:
    """E[log s] - log sigma for the sample sd of n normal draws: 0.5 (digamma(k/2) - log(k/2)), k = n - 1."""
    from scipy.special import digamma

    k = max(n - 1, 1)
    return 0.5 * (float(digamma(k / 2)) - math.log(k / 2))


class _Cells:
    """The records as arrays: one row per recorded (configuration, fraction) cell."""

    def __init__(self, data: dict, space: SearchSpace, metric: Mapping[str, float], clock: str, where: str):
        fr = sorted(float(f) for f in data["fractions"])
        T = int(data["max_epochs"])
        self.fmin = fr[0]
        rows, ymean, ysd, nseed, cfg_id, frac = [], [], [], [], [], []
        feat_test, feat_pool, feat_x, setup, epoch_s, epoch_x = [], [], [], [], [], []
        curves_all: list[np.ndarray] = []
        pending = []
        for c in data["configs"]:
            try:
                config = space.validate(c["config"])
            except ConfigError as exc:
                raise RecordError(f"{where}: configuration {c.get('index')}: {exc}") from None
            fe = c["featurize"]
            feat_x.append(config)
            feat_test.append(float(fe[f"test_{clock}_s"]))
            feat_pool.append(float(fe[f"pool_{clock}_s"]))
            by_f: dict[float, list[np.ndarray]] = {}
            for r in c["runs"]:
                f = float(r["fraction"])
                n = len(r["curves"][next(iter(metric))])
                curve = np.full(T, np.nan)
                if n:
                    curve[:n] = sum(w * np.asarray(r["curves"][m][:n], dtype=float) for m, w in metric.items())
                if n < T and "diverged_at" not in r:
                    raise RecordError(f"{where}: configuration {c['index']} seed {r.get('seed')} fraction {f}: "
                                      f"{n} epochs recorded, expected {T}")
                by_f.setdefault(f, []).append(curve)
                if n:
                    es = np.asarray(r[f"epoch_{clock}_s"], dtype=float)
                    epoch_s.append(float(np.median(es)))
                    epoch_x.append((config, f))
                    setup.append(float(r[f"setup_{clock}_s"]))
            for f, curves in sorted(by_f.items()):
                pending.append((config, len(feat_x) - 1, f, np.array(curves)))
                curves_all.extend(curves)
        if not pending:
            raise RecordError(f"{where}: no recorded runs")
        # A run that diverged counts with the worst value recorded at its (fraction, epoch).
        worst: dict[float, np.ndarray] = {}
        for _, _, f, C in pending:
            w = np.nanmax(np.where(np.isfinite(C), C, np.nan), axis=0) if np.isfinite(C).any() else None
            if w is not None:
                worst[f] = np.fmax(worst.get(f, w), w)
        for config, ci, f, C in pending:
            C = np.where(np.isfinite(C), C, worst.get(f, np.nanmax(np.array(curves_all))))
            L = np.log(np.maximum(C, 1e-12))
            rows.append(config)
            cfg_id.append(ci)
            frac.append(f)
            nseed.append(len(C))
            ymean.append(L.mean(axis=0))
            ysd.append(L.std(axis=0, ddof=1) if len(C) > 1 else np.full(T, np.nan))
        self.configs, self.cfg_id, self.frac = rows, np.array(cfg_id), np.array(frac)
        self.nseed = np.array(nseed)
        self.ymean, self.ysd = np.array(ymean), np.array(ysd)
        self.feat_configs = feat_x
        self.feat_test, self.feat_pool = np.array(feat_test), np.array(feat_pool)
        self.epoch_x, self.epoch_s = epoch_x, np.array(epoch_s)
        self.setup = float(np.median(setup)) if setup else 0.0
        self.T, self.fractions = T, fr


def _encode(space: SearchSpace, configs, fractions, fmin: float) -> np.ndarray:
    X = space.encode(list(configs))
    if fractions is None:
        return X
    f = np.asarray(fractions, dtype=float).reshape(-1, 1)
    u = np.log(f / fmin) / math.log(1.0 / fmin) if fmin < 1 else np.zeros_like(f)
    return np.hstack([X, u])


def _sklearn():
    try:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendUnavailable("replay problems need scikit-learn: pip install scikit-learn (or mfbo[bench])") \
            from exc
    return GaussianProcessRegressor, ConstantKernel, Matern, WhiteKernel


def _gp(X: np.ndarray, Y: np.ndarray, alpha, theta: list | None, seed: int = 0):
    """A fitted GP (hyperparameters optimised, or fixed to ``theta``)."""
    import warnings

    GPR, C, Matern, White = _sklearn()
    kernel = (C(1.0, (1e-3, 1e3)) * Matern(np.full(X.shape[1], 0.5), (1e-2, 1e2), nu=2.5)
              + White(1e-2, (1e-6, 1e1)))
    if theta is not None:
        kernel = kernel.clone_with_theta(np.asarray(theta, dtype=float))
    gp = GPR(kernel, alpha=alpha, normalize_y=True, optimizer=None if theta is not None else "fmin_l_bfgs_b",
             n_restarts_optimizer=0 if theta is not None else 2, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gp.fit(X, Y)
    return gp


class _Surrogate:
    """The fitted GPs of one record and metric."""

    def __init__(self, cells: _Cells, space: SearchSpace, thetas: dict | None = None, only_mean: bool = False):
        self.space, self.fmin, self.T = space, cells.fmin, cells.T
        X = _encode(space, cells.configs, cells.frac, cells.fmin)
        Y = cells.ymean
        var_y = np.maximum(Y.var(axis=0).mean(), 1e-12)
        sd = cells.ysd
        if np.isfinite(sd).any():
            sd = np.where(np.isfinite(sd), sd, np.nanmedian(sd, axis=0))
        sd = np.nan_to_num(sd, nan=0.0)
        # the variance of each cell's mean over its seeds, in normalised units (sklearn adds alpha after
        # normalising y)
        alpha = np.maximum((sd ** 2).mean(axis=1) / cells.nseed / var_y, 1e-8)
        t = thetas or {}
        self.gp_mean = _gp(X, Y, alpha, t.get("mean"))
        if only_mean:
            return
        many = cells.nseed > 1
        bias = np.array([_log_sd_bias(int(n)) for n in cells.nseed[many]])[:, None]
        logsd = np.log(np.maximum(cells.ysd[many], 1e-6)) - bias
        self.gp_sd = _gp(X[many], logsd, 1e-6, t.get("sd"))
        Xf = space.encode(cells.feat_configs)
        self.gp_featurize = _gp(Xf, np.log(np.maximum(np.c_[cells.feat_test, cells.feat_pool], 1e-6)), 1e-6,
                           t.get("featurize"))
        Xe = _encode(space, [c for c, _ in cells.epoch_x], [f for _, f in cells.epoch_x], cells.fmin)
        self.gp_epoch = _gp(Xe, np.log(np.maximum(cells.epoch_s, 1e-6)), 1e-6, t.get("epoch"))
        self.setup = cells.setup

    def thetas(self) -> dict:
        return {k: [float(v) for v in getattr(self, f"gp_{k}").kernel_.theta]
                for k in ("mean", "sd", "featurize", "epoch")}

    def mean_sd(self, configs, fractions) -> tuple[np.ndarray, np.ndarray]:
        """Log-space mean and seed spread ``(n, T)`` each."""
        X = _encode(self.space, configs, fractions, self.fmin)
        m = np.asarray(self.gp_mean.predict(X)).reshape(len(X), -1)
        s = np.exp(np.asarray(self.gp_sd.predict(X)).reshape(len(X), -1))
        return m, s

    def expected(self, configs, fraction: float = 1.0) -> np.ndarray:
        """Expected value over seeds after the last epoch at ``fraction``: ``(n,)``."""
        m, s = self.mean_sd(configs, np.full(len(configs), fraction))
        return np.exp(m[:, -1] + 0.5 * s[:, -1] ** 2)

    def cost(self, configs, fraction: float, epochs: int) -> np.ndarray:
        feat = np.exp(np.asarray(self.gp_featurize.predict(self.space.encode(list(configs)))).reshape(len(configs), 2))
        ep = np.exp(np.asarray(self.gp_epoch.predict(
            _encode(self.space, configs, np.full(len(configs), fraction), self.fmin))).ravel())
        return feat[:, 0] + fraction * feat[:, 1] + self.setup + epochs * ep


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    return float(1.0 - np.sum((y - p) ** 2) / max(np.sum((y - y.mean()) ** 2), 1e-300))


def _cross_validate(cells: _Cells, space: SearchSpace, folds: int = 5, seed: int = 0) -> dict:
    """Held-out fit error over configurations (each fold's configurations unseen by its GP)."""
    ids = np.unique(cells.cfg_id)
    perm = np.random.default_rng(seed).permutation(ids)
    pred = np.full_like(cells.ymean, np.nan)
    for k in range(folds):
        held = set(perm[k::folds].tolist())
        train = np.array([i not in held for i in cells.cfg_id])
        sub = _subset(cells, train)
        X = _encode(space, [cells.configs[i] for i in np.flatnonzero(~train)], cells.frac[~train], cells.fmin)
        gp = _Surrogate(sub, space, None, only_mean=True).gp_mean  # hyperparameters refitted per fold
        pred[~train] = np.asarray(gp.predict(X)).reshape(int((~train).sum()), -1)
    top = cells.frac == cells.fractions[-1]
    y_t, p_t = np.exp(cells.ymean[top, -1]), np.exp(pred[top, -1])
    # the noise ceiling: how well one seed's value predicts the mean of the others at target
    return {"folds": folds, "n_configs": int(len(ids)), "n_cells": int(len(cells.frac)),
            "r2_log_all_cells_all_epochs": _r2(cells.ymean.ravel(), pred.ravel()),
            "r2_target": _r2(y_t, p_t), "spearman_target": _spearman(y_t, p_t),
            "r2_log_target": _r2(cells.ymean[top, -1], pred[top, -1]),
            "seed_sd_log_target_median": float(np.nanmedian(cells.ysd[top, -1]))}


def _subset(cells: _Cells, mask: np.ndarray) -> _Cells:
    sub = object.__new__(_Cells)
    sub.__dict__.update(cells.__dict__)
    sub.configs = [c for c, keep in zip(cells.configs, mask) if keep]
    for k in ("cfg_id", "frac", "nseed", "ymean", "ysd"):
        setattr(sub, k, getattr(cells, k)[mask])
    return sub


def _search_optimum(sur: _Surrogate, space: SearchSpace, recorded: list[dict], n: int = 16384,
                    n_refine: int = 10, seed: int = 0) -> tuple[float, dict]:
    from scipy.optimize import minimize

    cands = space.sample(n, seed=seed) + list(recorded)
    vals = np.concatenate([sur.expected(cands[i:i + 4096]) for i in range(0, len(cands), 4096)])
    order = np.argsort(vals)[:n_refine]
    best_v, best_c = float(vals[order[0]]), dict(cands[order[0]])
    for i in order:
        u0 = space.encode([cands[i]])[0]

        def f(u):
            return float(sur.expected(space.decode(np.clip(u, 0, 1)[None, :]))[0])

        res = minimize(f, u0, method="Nelder-Mead", options={"maxfev": 300, "xatol": 1e-3, "fatol": 1e-6,
                                                             "initial_simplex": None})
        c = space.decode(np.clip(res.x, 0, 1)[None, :])[0]
        v = float(sur.expected([c])[0])
        if v < best_v:
            best_v, best_c = v, c
    return best_v, best_c


def _space_of(data: dict, where: str) -> SearchSpace:
    spec = dict(data["space"])
    fr = sorted(float(f) for f in data["fractions"])
    if len(fr) > 1:
        spec["data_fraction"] = {"type": "fidelity", "bounds": [fr[0], fr[-1]], "target": fr[-1]}
    if int(data["max_epochs"]) > 1:
        spec["epochs"] = {"type": "fidelity", "bounds": [1, int(data["max_epochs"])],
                          "target": int(data["max_epochs"])}
    try:
        return SearchSpace.from_dict(spec)
    except ConfigError as exc:
        raise RecordError(f"{where}: field 'space': {exc}") from None


def _metric_of(data: dict, metric) -> dict[str, float]:
    metric = metric if metric is not None else data.get("default_metric", data["metrics"][0])
    weights = {metric: 1.0} if isinstance(metric, str) else dict(metric) if isinstance(metric, Mapping) else None
    if not weights:
        raise ConfigError(f"metric {metric!r} must be a recorded curve name or a dict of name -> weight")
    for m, w in weights.items():
        if m not in data["metrics"]:
            raise ConfigError(f"metric {m!r} is not recorded; choose from {data['metrics']}")
        if not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
            raise ConfigError(f"metric weight of {m!r} must be a positive number, got {w!r}")
    return {m: float(w) for m, w in weights.items()}


def fit_replay(records: str | os.PathLike | Mapping, metric=None, clock: str = "cpu", seed: int = 0,
               cross_validate: bool = True) -> dict:
    """Fit the replay surrogate to a record; returns the state :class:`ReplayProblem` reuses.

    Returns:
        ``{"format", "digest", "metric", "clock", "thetas", "optimum_value", "optimizer_location",
        "full_fidelity_cost", "fit_error" (5-fold over configurations: R² of the log mean over every cell
        and epoch, R² and Spearman rank correlation of the expected value at target), "n_cells"}``.
    """
    data = records if isinstance(records, Mapping) else _read_records(Path(records), None)
    where = "replay record" if isinstance(records, Mapping) else f"replay record {records}"
    weights = _metric_of(data, metric)
    space = _space_of(data, where)
    cells = _Cells(data, space, weights, clock, where)
    sur = _Surrogate(cells, space)
    thetas = sur.thetas()
    recorded = list({json.dumps(c, sort_keys=True): c for c in cells.configs}.values())
    opt_v, opt_c = _search_optimum(sur, space, recorded, seed=seed)
    top = cells.frac == cells.fractions[-1]
    target_cost = sur.cost([cells.configs[i] for i in np.flatnonzero(top)], cells.fractions[-1], cells.T)
    state = {"format": FIT_FORMAT, "digest": _digest(data, weights), "metric": weights, "clock": clock,
             "thetas": thetas, "optimum_value": opt_v, "optimizer_location": opt_c,
             "full_fidelity_cost": float(np.median(target_cost)), "n_cells": int(len(cells.frac))}
    if cross_validate:
        state["fit_error"] = _cross_validate(cells, space)
    return state


def save_fit(state: dict, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")


class ReplayProblem(Problem):
    """Replay recorded training runs through a fitted surrogate with seed noise (see the module docstring).

    Args:
        seed: seed of the replayed seed noise.
        records: the record (``.json.gz`` path or dict).
        metric: a recorded curve or ``{name: weight}``; default: the record's ``default_metric``.
        clock: ``"cpu"`` (default) or ``"wall"`` seconds for the cost.
        fit: a saved fit state (path or dict); default ``<records>.fit.json`` when present. A state that
            does not match the record and metric is refitted.
        name: the problem's name (default: the record's ``name``).

    Attributes (besides Problem's): ``fit_state`` (thetas, optimum, fit error), ``surrogate``,
    ``optimizer_location``, ``records_meta`` (the record's keys besides its runs).
    """

    name = "replay"
    regenerate: str | None = None

    def __init__(self, seed: int = 0, records: str | os.PathLike | Mapping | None = None, metric=None,
                 clock: str | None = None, fit: str | os.PathLike | Mapping | None = None, name: str | None = None):
        super().__init__(seed)
        if records is None:
            raise ConfigError("the replay problem needs records=PATH (a record of analysis/benchmarks/mlip/record.py)")
        if isinstance(records, Mapping):
            data, where, path = dict(records), "replay record (dict)", None
        else:
            path = Path(records)
            data, where = _read_records(path, self.regenerate), f"replay record {path}"
        self.name = str(name) if name is not None else str(data.get("name", type(self).name))
        self.metric = _metric_of(data, metric)
        clock = clock if clock is not None else data.get("default_clock", "cpu")
        if clock not in ("cpu", "wall"):
            raise ConfigError(f"{self.name}: clock must be 'cpu' or 'wall', got {clock!r}")
        self.clock = clock
        self.space = _space_of(data, where)
        state = None
        if fit is None and path is not None and Path(str(path) + ".fit.json").is_file():
            fit = Path(str(path) + ".fit.json")
        if isinstance(fit, Mapping):
            state = dict(fit)
        elif fit is not None:
            try:
                state = json.loads(Path(fit).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise RecordError(f"replay fit {fit} is not readable JSON: {exc}") from None
        if (state is None or state.get("format") != FIT_FORMAT or state.get("digest") != _digest(data, self.metric)
                or state.get("clock") != clock):
            state = fit_replay(data, self.metric, clock, cross_validate=False)
        self.fit_state = state
        cells = _Cells(data, self.space, self.metric, clock, where)
        self.surrogate = _Surrogate(cells, self.space, state["thetas"])
        self.optimum_value = float(state["optimum_value"])
        self.optimizer_location = dict(state["optimizer_location"])
        self.full_fidelity_cost = float(state["full_fidelity_cost"])
        self.records_meta = {k: v for k, v in data.items() if k != "configs"}
        self.max_epochs = cells.T
        self.recorded_configs = list(cells.feat_configs)
        self.fractions = cells.fractions

    def _evaluate(self, params, data_fraction, epochs, rng):
        m, s = self.surrogate.mean_sd([params], [data_fraction])
        m, s = m[0, :epochs], s[0, :epochs]
        if rng is None:
            curve = np.exp(m + 0.5 * s ** 2)
        else:
            curve = np.exp(m + s * rng.standard_normal())
        return curve, float(self.surrogate.cost([params], data_fraction, epochs)[0])

    def values_at_target(self, configs: list[Mapping[str, Any]]) -> np.ndarray:
        """Expected values over seeds at target fidelity of many configurations: ``(n,)``."""
        configs = [self.space.validate(c) for c in configs]
        return np.concatenate([self.surrogate.expected(configs[i:i + 4096], self.fractions[-1])
                               for i in range(0, len(configs), 4096)]) if configs else np.zeros(0)

    def value_at_target(self, params: Mapping[str, Any]) -> float:
        return float(self.values_at_target([params])[0])

    def cost(self, data_fraction: float, epochs: int) -> float:
        """Median over the recorded configurations of the cost (s) at these fidelities."""
        df, ep = self._fidelities(data_fraction, epochs)
        return float(np.median(self.surrogate.cost(self.recorded_configs, df, ep)))


class MlipReplay(ReplayProblem):
    """A replay of the recorded mlearn / OC20 runs (``mlip_si``, ``mlip_mo``, ``mlip_oc20``)."""

    dataset = ""

    def __init__(self, seed: int = 0, records: str | os.PathLike | Mapping | None = None, metric=None,
                 clock: str | None = None, fit=None):
        self.regenerate = RECORD_COMMAND.format(dataset=self.dataset)
        super().__init__(seed, records=default_records(self.dataset) if records is None else records,
                         metric=metric, clock=clock, fit=fit, name=f"mlip_{self.dataset}")


class MlipSi(MlipReplay):
    """mlearn Si (official split), recorded by ``analysis/benchmarks/mlip/record.py --dataset si``."""

    dataset = "si"


class MlipMo(MlipReplay):
    """mlearn Mo (official split), recorded by ``analysis/benchmarks/mlip/record.py --dataset mo``."""

    dataset = "mo"


class MlipOC20(MlipReplay):
    """The bundled OC20 pool, recorded by ``analysis/benchmarks/mlip/record.py --dataset oc20``."""

    dataset = "oc20"
