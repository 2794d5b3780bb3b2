"""The numbers behind the report: progress, incumbent, Sobol indices, fidelity trust, prior vs posterior.

Every function works from ``(space, trials, predict)`` only, where
``predict(configs, data_fraction, epochs) -> (mean, sd)`` is the surrogate's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mfbo.optimize import Parameter, SearchSpace, Trial

__all__ = [
    "as_trial", "completed", "config_key", "target_fidelity", "progress", "sobol_indices",
    "fidelity_trust", "curve_trust", "prior_posterior", "unit_to_configs", "unit_values", "saltelli", "on_bounds",
]

Predict = Callable[[list, float, int], tuple]


def as_trial(t: Any, i: int = 0) -> Trial:
    """A :class:`Trial` from a Trial or a plain record (dict with the same fields)."""
    if isinstance(t, Trial):
        return t
    if isinstance(t, Mapping):
        get = t.get
    else:
        def get(k, d=None):
            return getattr(t, k, d)
    curve = [float(v) for v in (get("curve") or [])]
    return Trial(
        index=int(get("index", i) if get("index", i) is not None else i),
        params=dict(get("params") or {}),
        data_fraction=float(get("data_fraction", 1.0) if get("data_fraction") is not None else 1.0),
        epochs=int(get("epochs") or len(curve)),
        curve=curve,
        cost=float(get("cost") or 0.0),
        status=str(get("status") or "completed"),
        error=get("error"),
        metadata=dict(get("metadata") or {}),
    )


def completed(trials: Sequence[Trial]) -> list[Trial]:
    """Trials that finished with at least one finite observation."""
    return [t for t in trials if t.status == "completed" and t.curve and np.isfinite(t.curve[-1])]


def config_key(space: SearchSpace, params: Mapping) -> tuple:
    """A hashable key identifying a design configuration (floats rounded to 12 significant digits)."""
    out = []
    for p in space.design_parameters:
        v = params.get(p.name)
        if isinstance(v, float):
            v = float(f"{v:.12g}")
        out.append(v)
    return tuple(out)


def target_fidelity(space: SearchSpace) -> tuple[float, int]:
    """``(data_fraction, epochs)`` at target (1.0 / the last epoch seen when the space lacks one)."""
    df = float(space.data_fidelity.target) if space.data_fidelity is not None else 1.0
    ep = int(space.iteration_fidelity.target) if space.iteration_fidelity is not None else 1
    return df, ep


def at_target(space: SearchSpace, t: Trial) -> bool:
    df, ep = target_fidelity(space)
    ok_df = space.data_fidelity is None or abs(t.data_fraction - df) <= 1e-9 * max(1.0, df)
    ok_ep = space.iteration_fidelity is None or len(t.curve) >= ep
    return ok_df and ok_ep


def value_at(t: Trial, epoch: int) -> float | None:
    """Observed value after ``epoch`` epochs (1-based), None if the trial did not get there."""
    return float(t.curve[epoch - 1]) if 1 <= epoch <= len(t.curve) else None


def cost_fraction(space: SearchSpace, t: Trial) -> float:
    """Fidelity of a trial as a fraction of a target run's size: (fraction/target) x (epochs/target)."""
    df, ep = target_fidelity(space)
    f = t.data_fraction / df if space.data_fidelity is not None else 1.0
    e = len(t.curve) / ep if space.iteration_fidelity is not None else 1.0
    return float(f * e)


@dataclass
class Progress:
    """Best-so-far against cumulative cost.

    Attributes:
        cumulative_cost: seconds, after each trial in order (failed ones included: they cost too).
        final_values: each trial's last observed value (NaN if failed).
        fidelity: each trial's fidelity as a fraction of a target run.
        best_at_target: best observed value at target fidelity so far (NaN before the first).
        best_any: best observed value at any fidelity so far.
    """

    cumulative_cost: np.ndarray
    final_values: np.ndarray
    fidelity: np.ndarray
    best_at_target: np.ndarray
    best_any: np.ndarray
    at_target: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def progress(space: SearchSpace, trials: Sequence[Trial]) -> Progress:
    costs = np.array([max(t.cost, 0.0) for t in trials], dtype=float)
    vals = np.array([t.curve[-1] if (t.status == "completed" and t.curve) else np.nan for t in trials])
    vals = np.where(np.isfinite(vals), vals, np.nan)
    tgt = np.array([t.status == "completed" and bool(t.curve) and at_target(space, t) for t in trials])
    ep_t = target_fidelity(space)[1]
    # A trial run past target epochs is read at the target epoch.
    tvals = np.array([
        (t.curve[ep_t - 1] if space.iteration_fidelity is not None else t.curve[-1]) if ok else np.nan
        for t, ok in zip(trials, tgt)
    ], dtype=float)
    best_t = np.fmin.accumulate(np.where(np.isnan(tvals), np.inf, tvals)) if len(trials) else tvals
    best_a = np.fmin.accumulate(np.where(np.isnan(vals), np.inf, vals)) if len(trials) else vals
    return Progress(
        cumulative_cost=np.cumsum(costs),
        final_values=vals,
        fidelity=np.array([cost_fraction(space, t) for t in trials]),
        best_at_target=np.where(np.isinf(best_t), np.nan, best_t),
        best_any=np.where(np.isinf(best_a), np.nan, best_a),
        at_target=tgt,
    )


def on_bounds(space: SearchSpace, params: Mapping, tol: float = 0.02) -> list[dict]:
    """Numeric design hyperparameters of ``params`` at (or within ``tol`` of the range of) a bound.

    An optimum found on the edge of the searched range may lie outside it. Integers count only when
    equal to a bound; floats when within ``tol`` of the range (in the parameter's own scale, log or
    linear) of one.

    Returns:
        one ``{"name", "value", "low", "high", "side"}`` per flagged hyperparameter (``side`` is
        "lower" or "upper").
    """
    out = []
    for p in space.design_parameters:
        if p.type == "categorical" or p.name not in params:
            continue
        v = float(params[p.name])
        if p.is_integer:
            side = "lower" if v <= p.low else "upper" if v >= p.high else None
        else:
            u = float(p.to_unit(v))
            side = "lower" if u <= tol else "upper" if u >= 1.0 - tol else None
        if side is not None:
            out.append({"name": p.name, "value": params[p.name], "low": p.low, "high": p.high, "side": side})
    return out


# -- Sobol indices -------------------------------------------------------------------
def unit_values(p: Parameter, u: np.ndarray) -> np.ndarray:
    """Values of numeric parameter ``p`` at unit coordinates ``u``.

    A linear integer with k values takes ``low + floor(u * k)``, so every value gets equal mass
    (rounding ``p.from_unit`` would give the two bounds half the mass of the others); continuous and
    log-scaled parameters use ``p.from_unit``.
    """
    u = np.asarray(u, dtype=float)
    if p.is_integer and not p.log:
        k = int(p.high) - int(p.low) + 1
        return int(p.low) + np.minimum(np.floor(u * k), k - 1)
    return p.from_unit(u)


def unit_to_configs(space: SearchSpace, U: np.ndarray) -> list[dict]:
    """Rows of ``U`` in ``[0, 1]^n_design`` (one column per design parameter) -> configurations.

    Categoricals take choice ``floor(u * k)`` and linear integers value ``low + floor(u * k)``, so
    every choice and every whole number gets equal mass.
    """
    U = np.atleast_2d(np.asarray(U, dtype=float))
    cols: list[list] = []
    for j, p in enumerate(space.design_parameters):
        if p.type == "categorical":
            idx = np.minimum((U[:, j] * len(p.choices)).astype(int), len(p.choices) - 1)
            cols.append([p.choices[i] for i in idx])
        else:
            v = unit_values(p, U[:, j])
            cols.append([int(x) for x in v] if p.is_integer else [float(x) for x in v])
    names = [p.name for p in space.design_parameters]
    return [dict(zip(names, row)) for row in zip(*cols)] if cols else [{} for _ in range(len(U))]


def saltelli(f: Callable[[np.ndarray], np.ndarray], d: int, n_samples: int = 512, seed: int = 0,
             *, n_boot: int = 0) -> tuple[np.ndarray, ...]:
    """First-order and total Sobol indices of ``f`` on ``[0, 1]^d``.

    Estimators of Saltelli et al. (2010, Comput. Phys. Commun. 181, 259): first order
    ``S_i = mean(g_B (g_AB_i - g_A)) / V`` and Jansen's total ``S_Ti = mean((g_A - g_AB_i)^2) / (2 V)``,
    with ``A`` and ``B`` the two halves of one scrambled Sobol sequence of dimension ``2d``
    (so they are independent, as the estimators need) and ``g = f - mean(f)``. Centring does not
    change what the first-order estimator estimates, but without it the estimator's Monte-Carlo
    error grows with ``mean(f)^2 / V``: an objective of 0.05 that varies by 0.002 gives first-order
    indices off by more than 0.1 and larger than the total ones.

    Args:
        f: vectorised function, ``(m, d) -> (m,)``.
        d: number of inputs.
        n_samples: base sample size N (rounded up to a power of two); f is called on N (d + 2) points.
        seed: scrambling (and bootstrap) seed.
        n_boot: bootstrap resamples of the N rows for the Monte-Carlo standard errors (0: none).

    Returns:
        ``(first, total)``, each ``(d,)``; with ``n_boot > 0`` also ``(first_se, total_se)``: the
        bootstrap standard deviations of the estimates (their Monte-Carlo error).
    """
    from scipy.stats import qmc

    m = int(2 ** math.ceil(math.log2(max(n_samples, 2))))
    AB = qmc.Sobol(d=2 * d, scramble=True, seed=seed).random(m)
    Amat, Bmat = AB[:, :d], AB[:, d:]
    blocks = [Amat, Bmat]
    for i in range(d):
        ABi = Amat.copy()
        ABi[:, i] = Bmat[:, i]
        blocks.append(ABi)
    y = np.asarray(f(np.vstack(blocks)), dtype=float).reshape(d + 2, m)

    def estimate(yy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        yy = yy - yy[:2].mean()
        fA, fB, fABi = yy[0], yy[1], yy[2:]
        var = np.var(np.concatenate([fA, fB]))
        if not var > 1e-300:
            return np.zeros(d), np.zeros(d)
        return (np.mean(fB * (fABi - fA), axis=1) / var,
                0.5 * np.mean((fA - fABi) ** 2, axis=1) / var)

    first, total = estimate(y)
    if n_boot <= 0:
        return first, total
    rng = np.random.default_rng(seed)
    boot = [estimate(y[:, rng.integers(0, m, m)]) for _ in range(n_boot)]
    first_se = np.std([b[0] for b in boot], axis=0)
    total_se = np.std([b[1] for b in boot], axis=0)
    return first, total, first_se, total_se


def sobol_indices(space: SearchSpace, predict: Predict, n_samples: int = 512, seed: int = 0,
                  n_boot: int = 200) -> dict[str, dict[str, float]]:
    """First-order and total Sobol indices of the surrogate mean at target fidelity.

    One unit interval per design hyperparameter, so a categorical is one factor (choices
    equally likely) and an integer one factor. Not Ax's ``SobolSensitivityGPMean``: it treats
    each one-hot column as a separate continuous input, and its quasi-random mode draws the two
    base matrices from separately seeded Sobol sequences, which gave wrong indices on a
    function with known indices (its random mode uses the unseeded global RNG).

    Returns:
        ``{"first": {name: S_i}, "total": {name: S_Ti}, "first_se": {...}, "total_se": {...}}``:
        estimates clipped to [0, 1] (Monte-Carlo noise can push those of unimportant parameters
        slightly below zero) and their bootstrap standard errors.
    """
    params = space.design_parameters
    df, ep = target_fidelity(space)

    def f(U: np.ndarray) -> np.ndarray:
        mean, _ = predict(unit_to_configs(space, U), df, ep)
        return np.asarray(mean, dtype=float).ravel()

    first, total, first_se, total_se = saltelli(f, len(params), n_samples=n_samples, seed=seed,
                                                n_boot=max(int(n_boot), 2))
    return {
        "first": {p.name: float(np.clip(v, 0.0, 1.0)) for p, v in zip(params, first)},
        "total": {p.name: float(np.clip(v, 0.0, 1.0)) for p, v in zip(params, total)},
        "first_se": {p.name: float(v) for p, v in zip(params, first_se)},
        "total_se": {p.name: float(v) for p, v in zip(params, total_se)},
    }


# -- fidelity trust ------------------------------------------------------------------
def _epoch_levels(target: int, seen: Sequence[int]) -> list[int]:
    levels = {e for e in (2 ** k for k in range(0, 20)) if e < target}
    levels |= {e for e in seen if e < target}
    levels = sorted(levels)
    if len(levels) > 8:  # keep at most 8, spread in log space
        idx = np.unique(np.round(np.geomspace(1, len(levels), 8)).astype(int) - 1)
        levels = [levels[i] for i in idx]
    return levels


def _df_bins(space: SearchSpace, fractions: Sequence[float]) -> list[tuple[float, float]]:
    """Data-fraction levels as closed intervals: each distinct value, or <= 4 quantile bins."""
    if space.data_fidelity is None:
        return [(1.0, 1.0)]
    vals = np.unique(np.round(np.asarray(fractions, dtype=float), 6))
    if len(vals) <= 4:
        return [(float(v), float(v)) for v in vals]
    edges = np.quantile(vals, np.linspace(0, 1, 5))
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        bins.append((float(lo), float(hi)))
    return bins


def fidelity_trust(space: SearchSpace, trials: Sequence[Trial], predict: Predict | None = None,
                   min_pairs: int = 3) -> list[dict]:
    """Rank agreement between each observed fidelity level and target fidelity.

    A level is a data-fraction value (or bin) and an epoch count. For every configuration
    observed both at the level and at target fidelity, its value at the level is paired with
    its value at target (the mean when a configuration ran more than once); Spearman's rho and
    Kendall's tau (scipy.stats) of those pairs say whether cheap runs ranked configurations as
    expensive runs did. When ``predict`` is given, the same is computed against the surrogate's
    target-fidelity mean for every configuration seen at the level (``*_vs_surrogate``), which
    is informative before many target runs exist.

    Returns:
        One dict per level: ``data_fraction`` [lo, hi], ``epochs``, ``n`` (pairs), ``spearman``,
        ``spearman_p``, ``kendall``, ``kendall_p`` (None when n < min_pairs or no variation),
        ``n_level`` and the ``*_vs_surrogate`` counterparts.
    """
    from scipy.stats import kendalltau, spearmanr

    done = completed(trials)
    df_t, ep_t = target_fidelity(space)
    targets: dict[tuple, list[float]] = {}
    cfgs: dict[tuple, dict] = {}
    for t in done:
        k = config_key(space, t.params)
        cfgs[k] = t.params
        if at_target(space, t):
            targets.setdefault(k, []).append(t.curve[ep_t - 1] if space.iteration_fidelity else t.curve[-1])
    tgt_mean = {k: float(np.mean(v)) for k, v in targets.items()}
    low = [t for t in done if not (space.data_fidelity is None or abs(t.data_fraction - df_t) <= 1e-9)]
    on_target_df = [t for t in done if t not in low]
    bins = _df_bins(space, [t.data_fraction for t in low])
    seen_epochs = [len(t.curve) for t in done]
    levels = []
    if space.iteration_fidelity is not None:
        for e in _epoch_levels(ep_t, seen_epochs):
            levels.append(((df_t, df_t), e, on_target_df))
    ep_levels = _epoch_levels(ep_t, seen_epochs) + [ep_t] if space.iteration_fidelity else [1]
    for lo, hi in bins:
        members = [t for t in low if lo - 1e-9 <= t.data_fraction <= hi + 1e-9]
        for e in ep_levels:
            levels.append(((lo, hi), e, members))

    def corr(x, y):
        if len(x) < min_pairs or np.ptp(x) == 0 or np.ptp(y) == 0:
            return None, None, None, None
        r = spearmanr(x, y)
        k = kendalltau(x, y)
        return float(r.statistic), float(r.pvalue), float(k.statistic), float(k.pvalue)

    out = []
    for (lo, hi), e, members in levels:
        at_level: dict[tuple, list[float]] = {}
        for t in members:
            v = value_at(t, e) if space.iteration_fidelity is not None else t.curve[-1]
            if v is not None and np.isfinite(v):
                at_level.setdefault(config_key(space, t.params), []).append(v)
        if not at_level:
            continue
        lvl = {k: float(np.mean(v)) for k, v in at_level.items()}
        common = [k for k in lvl if k in tgt_mean]
        x = np.array([lvl[k] for k in common])
        y = np.array([tgt_mean[k] for k in common])
        rho, rho_p, tau, tau_p = corr(x, y)
        row = {
            "data_fraction": [lo, hi], "epochs": int(e), "n": len(common), "n_level": len(lvl),
            "spearman": rho, "spearman_p": rho_p, "kendall": tau, "kendall_p": tau_p,
        }
        if predict is not None:
            keys = list(lvl)
            mean, _ = predict([cfgs[k] for k in keys], df_t, ep_t)
            rs, rsp, ts, tsp = corr(np.array([lvl[k] for k in keys]), np.asarray(mean, float).ravel())
            row.update({"spearman_vs_surrogate": rs, "kendall_vs_surrogate": ts,
                        "spearman_vs_surrogate_p": rsp, "kendall_vs_surrogate_p": tsp})
        out.append(row)
    return out


def curve_trust(space: SearchSpace, trials: Sequence[Trial], min_pairs: int = 3, min_reference: int = 4
                ) -> list[dict]:
    """Rank agreement between early and late epochs of the same trials' learning curves.

    Observed evidence about the epoch fidelity that needs no configuration to run twice: the
    reference is the longest epoch count ``E`` that at least ``min_reference`` completed trials
    reached (below target epochs it is still the most expensive observation of each), and each
    lower epoch level ``e`` pairs every such trial's value after ``e`` epochs with its value after
    ``E``. Each trial keeps its own data fraction on both sides.

    Returns:
        One dict per level: ``epochs``, ``reference_epochs``, ``n`` (trials), ``spearman``,
        ``spearman_p``, ``kendall``, ``kendall_p`` (None when n < min_pairs or no variation); empty
        without an iteration fidelity or when fewer than ``min_reference`` trials ran two epochs.
    """
    from scipy.stats import kendalltau, spearmanr

    if space.iteration_fidelity is None:
        return []
    done = [t for t in completed(trials) if np.all(np.isfinite(t.curve))]
    lengths = sorted((len(t.curve) for t in done), reverse=True)
    if len(lengths) < min_reference or lengths[min_reference - 1] < 2:
        return []
    ref = min(lengths[min_reference - 1], target_fidelity(space)[1])
    members = [t for t in done if len(t.curve) >= ref]
    out = []
    for e in _epoch_levels(ref, [len(t.curve) for t in done]):
        x = np.array([t.curve[e - 1] for t in members])
        y = np.array([t.curve[ref - 1] for t in members])
        row = {"epochs": int(e), "reference_epochs": int(ref), "n": len(members), "spearman": None,
               "spearman_p": None, "kendall": None, "kendall_p": None}
        if len(members) >= min_pairs and np.ptp(x) > 0 and np.ptp(y) > 0:
            r, k = spearmanr(x, y), kendalltau(x, y)
            row.update({"spearman": float(r.statistic), "spearman_p": float(r.pvalue),
                        "kendall": float(k.statistic), "kendall_p": float(k.pvalue)})
        out.append(row)
    return out


# -- prior vs posterior --------------------------------------------------------------
def _grid(p: Parameter, n: int) -> np.ndarray | tuple:
    if p.type == "categorical":
        return p.choices
    u = np.linspace(0.0, 1.0, n)
    v = p.from_unit(u)
    return np.unique(v) if p.is_integer else v


def _marginal(space: SearchSpace, p: Parameter, U: np.ndarray, col: int, weights: np.ndarray,
              n_bins: int = 24) -> dict:
    """Weighted marginal density of parameter p from unit samples U (columns per design parameter)."""
    w = weights / weights.sum() if weights.sum() > 0 else np.full(len(weights), 1 / len(weights))
    if p.type == "categorical":
        idx = np.minimum((U[:, col] * len(p.choices)).astype(int), len(p.choices) - 1)
        probs = np.array([w[idx == i].sum() for i in range(len(p.choices))])
        return {"kind": "categorical", "choices": list(p.choices), "prob": probs.tolist()}
    if p.is_integer and p.high - p.low + 1 <= 30:
        vals = unit_values(p, U[:, col])
        support = np.arange(int(p.low), int(p.high) + 1)
        probs = np.array([w[vals == s].sum() for s in support])
        return {"kind": "integer", "values": support.tolist(), "prob": probs.tolist()}
    edges = np.linspace(0, 1, n_bins + 1)
    h, _ = np.histogram(U[:, col], bins=edges, weights=w)
    centres_u = 0.5 * (edges[:-1] + edges[1:])
    return {"kind": "continuous", "log": p.log, "values": p.from_unit(centres_u).tolist(),
            "edges": p.from_unit(edges).tolist(), "prob": h.tolist()}


def has_prior_on(space: SearchSpace, prior, name: str, seed: int = 0) -> bool:
    """Does ``prior.log_prob`` depend on parameter ``name``? (probed at a few reference points)."""
    p = space[name]
    refs = space.sample(4, seed=seed)
    grid = _grid(p, 9)
    for ref in refs:
        cfgs = [{**ref, name: (v.item() if hasattr(v, "item") else v)} for v in grid]
        if p.is_integer:
            for c in cfgs:
                c[name] = int(c[name])
        lp = np.asarray(prior.log_prob(cfgs), dtype=float)
        lp = lp[np.isfinite(lp)]
        if lp.size >= 2 and np.ptp(lp) > 1e-9:
            return True
    return False


def prior_posterior(space: SearchSpace, prior, predict: Predict, sampler=None, n_candidates: int = 1024,
                    n_samples: int = 256, seed: int = 0) -> dict:
    """Prior and posterior beliefs about where the optimum lies, per hyperparameter with a prior.

    Prior marginal: uniform quasi-random configurations importance-weighted by
    ``exp(prior.log_prob)``. Posterior: the distribution of the argmin of joint posterior
    samples of the surrogate at target fidelity over the same candidates (Thompson
    sampling); ``sampler(configs, n_samples, seed) -> (n_samples, n)`` draws them (without
    one, independent draws from the marginal mean/sd are used and the result says so).

    Returns:
        ``{"parameters": {name: {"prior": marginal, "posterior": marginal}}, "joint": bool}``,
        each marginal as from :func:`_marginal`; an empty ``parameters`` when no prior.
    """
    from scipy.stats import qmc

    if prior is None:
        return {"parameters": {}, "joint": sampler is not None}
    names = [p.name for p in space.design_parameters if has_prior_on(space, prior, p.name, seed)]
    if not names:
        return {"parameters": {}, "joint": sampler is not None}
    d = len(space.design_parameters)
    U = qmc.Sobol(d=d, scramble=True, seed=seed).random(n_candidates)
    cfgs = unit_to_configs(space, U)
    lp = np.asarray(prior.log_prob(cfgs), dtype=float)
    lp = np.where(np.isfinite(lp), lp, -np.inf)
    w_prior = np.exp(lp - lp.max()) if np.isfinite(lp.max()) else np.ones(len(cfgs))
    df, ep = target_fidelity(space)
    joint = sampler is not None
    draws = sampler(cfgs, n_samples, seed) if joint else None
    if draws is None:
        joint = False
        mean, sd = predict(cfgs, df, ep)
        rng = np.random.default_rng(seed)
        draws = np.asarray(mean, float).ravel() + rng.standard_normal((n_samples, len(cfgs))) * np.asarray(
            sd, float).ravel()
    counts = np.bincount(np.argmin(draws, axis=1), minlength=len(cfgs)).astype(float)
    out = {}
    for name in names:
        col = [p.name for p in space.design_parameters].index(name)
        p = space[name]
        out[name] = {"prior": _marginal(space, p, U, col, w_prior),
                     "posterior": _marginal(space, p, U, col, counts)}
    return {"parameters": out, "joint": joint}


def finite_or_none(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None
