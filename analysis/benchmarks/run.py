"""Benchmark mfbo against its baselines on the multi-fidelity problems with known optima.

For every problem x method x seed it runs the method on the problem (problem noise seeded by the same
seed), scores every history point by its simple regret at target fidelity (noise-free), and writes

- ``OUT/runs/PROBLEM/METHOD/seedK.json``: one run (reused on a rerun unless ``--force``);
- ``OUT/results.json``: every number: per-run regret traces, medians and quartiles of regret on a cost
  grid, cost-to-target (regret <= 5 % and 1 % of the problem's initial-design regret), the ratios of
  mfbo to the best baseline and to random search, timings (wall and process CPU);
- ``OUT/summary.md``: the summary as Markdown tables;
- ``OUT/PROBLEM.png``: median regret (quartile bands) vs cumulative cost in FFE, and cost-to-target.

Initial-design regret of a problem = the median regret of 1024 quasi-random configurations at target
fidelity (what one initial-design point achieves in the median). Cost-to-target of a run = the cumulative
cost (FFE) at which its recommendation first reaches the threshold (inf if never within the budget).

Example (the reduced run committed under analysis/benchmarks/results)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python analysis/benchmarks/run.py \\
        --problems hartmann6_mf learning_curve --methods mfbo random ax-sf optuna-tpe-hb hyperband \\
        --seeds 10 --jobs 2 --out analysis/benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_PROBLEMS = ["hartmann6_mf", "learning_curve", "yahpo_lcbench", "yahpo_rbv2_xgboost", "oc20_gmp"]
DEFAULT_METHODS = ["mfbo", "random", "ax-sf", "optuna-tpe-hb", "hyperband"]
DEFAULT_BUDGETS = {"hartmann6_mf": 30.0, "learning_curve": 30.0, "yahpo_lcbench": 30.0, "yahpo_rbv2_xgboost": 30.0,
                   "oc20_gmp": 30.0, "mlip_si": 30.0, "mlip_mo": 30.0, "mlip_oc20": 30.0}
TARGETS = {"5pct": 0.05, "1pct": 0.01}


def _limit_threads() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def _jsonable(x: Any, digits: int | None = None) -> Any:
    """JSON-safe copy (inf as "inf", NaN as null); ``digits``: round floats to that many significant digits."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v, digits) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v, digits) for v in x]
    if isinstance(x, (np.floating, float)):
        v = float(x)
        if math.isfinite(v) and digits is not None:
            v = float(f"{v:.{digits}g}")
        return v if math.isfinite(v) else (None if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


def _float(v: Any) -> float:
    if v == "inf":
        return math.inf
    if v == "-inf":
        return -math.inf
    return math.nan if v is None else float(v)


def run_one(problem: str, method: str, seed: int, budget: float, problem_kwargs: dict,
            method_options: dict, run_timeout: float | None = None) -> dict:
    """One run: returns its record (regret trace at every history point, timings).

    ``run_timeout`` (s): the method is asked to stop (its callback returns True) once a run has taken
    this long; the record then says ``timed_out`` and its regret trace ends where the run stopped.
    """
    _limit_threads()
    import warnings

    warnings.filterwarnings("ignore")
    from mfbo.optimize.problems import get_problem

    prob = get_problem(problem, seed=seed, **problem_kwargs)
    t0, c0 = time.perf_counter(), time.process_time()
    error = None
    timed_out = False

    def callback(trial, entry) -> bool:
        nonlocal timed_out
        if run_timeout is not None and time.perf_counter() - t0 > run_timeout:
            timed_out = True
        return timed_out

    try:
        if method == "mfbo":
            from mfbo.optimize import minimize

            res = minimize(prob, prob.space, budget, seed=seed, method="mfbo", callback=callback,
                           **method_options)
        else:
            from mfbo.optimize.baselines import get_baseline

            res = get_baseline(method)(prob, prob.space, budget, seed=seed, callback=callback, **method_options)
    except Exception as exc:  # noqa: BLE001 - a crashing method is recorded, not fatal to the benchmark
        error = f"{type(exc).__name__}: {exc}"
        res = None
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rec: dict[str, Any] = {"problem": problem, "method": method, "seed": seed, "budget_ffe": budget,
                           "wall_s": wall, "cpu_s": cpu, "error": error, "timed_out": timed_out}
    if res is None:
        return rec
    cache: dict[str, float] = {}

    def regret(p: dict) -> float:
        key = json.dumps(p, sort_keys=True, default=str)
        if key not in cache:
            cache[key] = prob.regret(p)
        return cache[key]

    hist = [h for h in res.history if h.get("recommended")]
    rec["cost_ffe"] = [float(h["cost_ffe"]) for h in hist]
    rec["regret"] = [regret(h["recommended"]) for h in hist]
    rec["final_regret"] = regret(res.best_params)
    rec["final_cost_ffe"] = float(res.cost_spent)
    rec["best_params"] = res.best_params
    rec["n_trials"] = len(res.trials)
    ffe = prob.full_fidelity_cost
    tgt = prob.target
    at_target = sum(t.cost for t in res.trials
                    if t.data_fraction >= tgt.get("data_fraction", 1.0) - 1e-9 and t.epochs >= tgt.get("epochs", 1))
    rec["target_fidelity_share"] = at_target / max(res.cost_spent_seconds, 1e-12)
    rec["ffe_seconds"] = ffe
    # calibration at target (mfbo): the verification's and every target-fidelity run's z-score against the
    # surrogate's prediction made before the run
    ver = (res.info or {}).get("verification") or {}
    rec["verification_z"] = ver.get("z")
    rec["target_runs_z"] = (res.info or {}).get("target_runs_z")
    # mfbo with fidelity_check=True: the two models' scores and when proposals went to the target-only GP
    rec["fidelity_check"] = (res.info or {}).get("fidelity_check")
    rec["retrain_z"] = _retrain_z(prob, res)
    return rec


def _retrain_z(prob: Any, res: Any) -> float | None:
    """Calibration of the final recommendation (mfbo): the z-score of a fresh target-fidelity run of it (a
    new training seed, drawn after the run and outside its budget) against the prediction the optimiser
    makes for such a run at the end (:meth:`MultiFidelityOptimizer.predict_target`, by the model then
    proposing). Unlike the verification z it is free of the selection of the recommendation by its own
    earlier result. None for a method without predictions."""
    opt = getattr(res, "optimizer", None)
    if opt is None or not callable(getattr(opt, "predict_target", None)):
        return None
    try:
        pred = opt.predict_target(res.best_params)
    except Exception:  # noqa: BLE001 - a method that cannot predict has no calibration record
        return None
    if not pred or not pred.get("sd", 0) > 0:
        return None
    enc = opt.encoder
    value = float(prob(res.best_params, enc.data_fraction_default(), enc.epochs_default())["curve"][-1])
    return (value - float(pred["mean"])) / float(pred["sd"])


def initial_design_regret(problem: str, problem_kwargs: dict, n: int = 1024) -> float:
    from mfbo.optimize.problems import get_problem

    prob = get_problem(problem, seed=0, **problem_kwargs)
    configs = prob.space.sample(n, seed=2024)
    if hasattr(prob, "values_at_target"):
        vals = np.asarray(prob.values_at_target(configs))
    else:
        vals = np.array([prob.value_at_target(c) for c in configs])
    return float(np.median(vals - prob.optimum_value))


def regret_on_grid(rec: dict, grid: np.ndarray, r0: float) -> np.ndarray:
    """Regret of the run's recommendation at each cost in ``grid`` (r0 before its first recommendation)."""
    out = np.full(len(grid), r0, dtype=float)
    costs, regs = np.asarray(rec.get("cost_ffe", [])), np.asarray(rec.get("regret", []), dtype=float)
    if len(costs) == 0:
        return out
    idx = np.searchsorted(costs, grid, side="right") - 1
    ok = idx >= 0
    out[ok] = regs[idx[ok]]
    if rec.get("timed_out"):
        # A run stopped by --run-timeout says nothing about costs it never reached.
        out[grid > costs[-1] + 1e-12] = np.nan
    else:
        # Nor does a run about costs past its own budget (baselines may run longer than mfbo).
        out[grid > max(costs[-1], _float(rec.get("budget_ffe", math.inf))) + 1e-12] = np.nan
    return out


def cost_to_target(rec: dict, threshold: float) -> float:
    for c, r in zip(rec.get("cost_ffe", []), rec.get("regret", [])):
        if r <= threshold:
            return float(c)
    return math.inf


def _quantile_inf(x: np.ndarray, q: float) -> float:
    """Quantile of values that may be inf (runs that never reached the target count as the largest)."""
    x = np.asarray(x, dtype=float)
    if np.all(np.isfinite(x)):
        return float(np.quantile(x, q))
    if not np.any(np.isfinite(x)):
        return math.inf
    top = float(np.max(x[np.isfinite(x)]))
    v = float(np.quantile(np.where(np.isfinite(x), x, 2 * abs(top) + 1.0), q))
    # anything interpolated towards a run that never reached the target is itself "not reached"
    return math.inf if v > top else v


def summarise(records: list[dict], budgets: dict, r0s: dict) -> dict:
    out: dict[str, Any] = {}
    for problem in sorted({r["problem"] for r in records}):
        recs = [r for r in records if r["problem"] == problem]
        budget = budgets[problem]
        method_budget = {m: max(_float(r.get("budget_ffe", budget)) for r in recs if r["method"] == m)
                         for m in {r["method"] for r in recs}}
        r0 = r0s[problem]
        top = max([budget, *method_budget.values()])
        # linear up to the common budget, then geometric (plots use a log cost axis past it)
        grid = np.unique(np.concatenate([np.linspace(0.0, budget, 121), np.geomspace(0.01, top, 161)]))
        pout: dict[str, Any] = {"budget_ffe": budget, "method_budget_ffe": method_budget,
                                "initial_design_regret": r0,
                                "thresholds": {k: f * r0 for k, f in TARGETS.items()},
                                "cost_grid_ffe": grid.tolist(), "methods": {}}
        for method in sorted({r["method"] for r in recs}):
            mr = sorted((r for r in recs if r["method"] == method), key=lambda r: r["seed"])
            ok = [r for r in mr if not r.get("error")]
            m: dict[str, Any] = {"n_runs": len(mr), "n_failed": len(mr) - len(ok),
                                 "budget_ffe": method_budget[method],
                                 "errors": sorted({r["error"] for r in mr if r.get("error")})}
            if ok:
                R = np.array([regret_on_grid(r, grid, r0) for r in ok])
                # Statistics only where at least half of the runs got to that cost (timed-out runs stop early).
                enough = np.sum(np.isfinite(R), axis=0) >= (len(ok) + 1) // 2
                with np.errstate(all="ignore"):
                    import warnings

                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        stats = {q: np.where(enough, np.nanquantile(np.where(enough, R, 0.0), q, axis=0), np.nan)
                                 for q in (0.25, 0.5, 0.75)}
                m["regret_median"] = stats[0.5].tolist()
                m["regret_q25"] = stats[0.25].tolist()
                m["regret_q75"] = stats[0.75].tolist()
                m["n_runs_at_cost"] = np.sum(np.isfinite(R), axis=0).tolist()
                # Median regret at a few fixed costs (NaN where fewer than half the runs got there).
                m["regret_median_at_ffe"] = {
                    f"{c:g}": float(stats[0.5][np.searchsorted(grid, c, side="right") - 1])
                    for c in (0.5, 1, 2, 5, 10, 20, 30, 50, 100, 300, 1000) if c <= top}
                m["final_regret"] = [r["final_regret"] for r in ok]
                m["final_regret_median"] = float(np.median(m["final_regret"]))
                for key, frac in TARGETS.items():
                    ctt = np.array([cost_to_target(r, frac * r0) for r in ok])
                    m[f"cost_to_target_{key}"] = ctt.tolist()
                    for label, q in (("median", 0.5), ("q25", 0.25), ("q75", 0.75)):
                        m[f"cost_to_target_{key}_{label}"] = _quantile_inf(ctt, q)
                    m[f"reached_{key}"] = float(np.mean(np.isfinite(ctt)))
                m["wall_s_median"] = float(np.median([r["wall_s"] for r in ok]))
                m["cpu_s_median"] = float(np.median([r["cpu_s"] for r in ok]))
                m["n_timed_out"] = int(sum(bool(r.get("timed_out")) for r in ok))
                m["n_trials_median"] = float(np.median([r["n_trials"] for r in ok]))
                m["cost_spent_median_ffe"] = float(np.median([r["final_cost_ffe"] for r in ok]))
                m["target_fidelity_share_median"] = float(np.median([r["target_fidelity_share"] for r in ok]))
                zs = [_float(r["verification_z"]) for r in ok if r.get("verification_z") is not None]
                if zs:
                    # calibration: share of runs whose final recommendation's target run lay within 2 sd
                    # of the prediction made before it ran, and the same over every target-fidelity run
                    m["verification_z"] = zs
                    m["verification_within_2sd"] = float(np.mean(np.abs(zs) <= 2))
                    allz = [_float(z) for r in ok for z in (r.get("target_runs_z") or [])]
                    m["target_runs_within_2sd"] = float(np.mean(np.abs(allz) <= 2)) if allz else None
                rz = [_float(r["retrain_z"]) for r in ok if r.get("retrain_z") is not None]
                if rz:
                    # a fresh retrain of the final recommendation against the final prediction for it
                    m["retrain_z"] = rz
                    m["retrain_within_2sd"] = float(np.mean(np.abs(rz) <= 2))
            pout["methods"][method] = m
        pout["ratios"] = _ratios(pout["methods"], budget)
        out[problem] = pout
    return out


def _ratios(methods: dict, budget: float) -> dict:
    """mfbo's median cost-to-target over the best baseline's and random search's.

    A baseline that never reaches the target within its budget has cost-to-target > that budget, so the
    ratio is reported as an upper bound (``"<="``) computed with the baseline's budget in its place.
    """
    res: dict[str, Any] = {}
    if "mfbo" not in methods or "cost_to_target_5pct_median" not in methods["mfbo"]:
        return res
    for key in TARGETS:
        mf = methods["mfbo"][f"cost_to_target_{key}_median"]
        base = {k: v[f"cost_to_target_{key}_median"] for k, v in methods.items()
                if k != "mfbo" and f"cost_to_target_{key}_median" in v}
        entry: dict[str, Any] = {"mfbo_median": mf}
        if base:
            best_name = min(base, key=base.get)
            for label, name in (("vs_best_baseline", best_name), ("vs_random", "random")):
                if name not in base:
                    continue
                b = base[name]
                if not math.isfinite(mf):
                    entry[label] = {"baseline": name, "ratio": math.inf, "bound": "mfbo did not reach the target"}
                elif math.isfinite(b):
                    entry[label] = {"baseline": name, "ratio": mf / b, "bound": "="}
                else:
                    b_budget = _float(methods[name].get("budget_ffe", budget))
                    entry[label] = {"baseline": name, "ratio": mf / b_budget, "bound": "<=",
                                    "baseline_budget_ffe": b_budget}
        res[key] = entry
    return res


COLORS = {"mfbo": "tab:red", "random": "tab:gray", "ax-sf": "tab:blue", "optuna-tpe-hb": "tab:green",
          "hyperband": "tab:orange", "dehb": "tab:purple", "smac-mf": "tab:brown"}


def plot(summary: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for problem, ps in summary.items():
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1.6, 1]})
        grid = np.asarray(ps["cost_grid_ffe"])
        names = list(ps["methods"])
        for name in names:
            m = ps["methods"][name]
            if "regret_median" not in m:
                continue
            c = COLORS.get(name)
            floor = 1e-6
            med = np.array([_float(v) for v in m["regret_median"]])
            q25 = np.array([_float(v) for v in m["regret_q25"]])
            q75 = np.array([_float(v) for v in m["regret_q75"]])
            label = f"{name} (n={m['n_runs']}" + (f", {m['n_timed_out']} timed out)" if m.get("n_timed_out") else ")")
            ax1.plot(grid, np.maximum(med, floor), label=label, color=c)
            ax1.fill_between(grid, np.maximum(q25, floor), np.maximum(q75, floor), color=c, alpha=0.15)
        for key, thr in ps["thresholds"].items():
            ax1.axhline(thr, ls="--", lw=0.8, color="k")
            ax1.text(grid[-1], thr, f" {key}", va="center", fontsize=8)
        ax1.set_yscale("log")
        wide = grid[-1] > 1.5 * ps["budget_ffe"]
        if wide:  # baselines ran far past mfbo's budget: a log cost axis keeps both readable
            ax1.set_xscale("log")
            ax1.set_xlim(0.05, grid[-1])
        ax1.set_xlabel("cumulative cost [full-fidelity equivalents]")
        ax1.set_ylabel("simple regret at target fidelity")
        ax1.set_title(f"{problem}: median and quartiles over seeds")
        ax1.legend(fontsize=8)
        budget = max([ps["budget_ffe"], *ps.get("method_budget_ffe", {}).values()])
        for j, name in enumerate(names):
            m = ps["methods"][name]
            for k, (key, marker) in enumerate((("5pct", "o"), ("1pct", "s"))):
                vals = np.asarray([_float(v) for v in m.get(f"cost_to_target_{key}", [])], dtype=float)
                if len(vals) == 0:
                    continue
                shown = np.where(np.isfinite(vals), vals, budget * 1.08)
                x = j + (k - 0.5) * 0.3 + np.linspace(-0.06, 0.06, len(vals))
                ax2.scatter(x, shown, marker=marker, s=14, color=COLORS.get(name), alpha=0.6,
                            label=key if j == 0 else None, facecolors="none" if key == "1pct" else None)
                med = _float(m.get(f"cost_to_target_{key}_median"))
                ax2.hlines(med if math.isfinite(med) else budget * 1.08, j + (k - 0.5) * 0.3 - 0.12,
                           j + (k - 0.5) * 0.3 + 0.12, color="k")
        ax2.axhline(budget, color="k", lw=0.6)
        ax2.text(len(names) - 0.5, budget * 1.08, " not\n reached", fontsize=7, va="center")
        ax2.set_xticks(range(len(names)), names, rotation=30, fontsize=8)
        ax2.set_xlim(-0.6, len(names) + 0.2)
        if wide:
            ax2.set_yscale("log")
        ax2.set_ylabel("cost-to-target [FFE] (bar: median)")
        ax2.set_title("cost-to-target: o 5 %, s 1 % of initial regret", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"{problem}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def _ffe(v: Any) -> str:
    v = _float(v)
    return "not reached" if not math.isfinite(v) else f"{v:.3g}"


def markdown(summary: dict) -> str:
    """The summary as Markdown tables, one per problem (what results/README.md shows)."""
    lines: list[str] = []
    for problem, ps in summary.items():
        th = ps["thresholds"]
        lines += [f"### {problem} (initial-design regret {ps['initial_design_regret']:.4g}; "
                  f"5 % = {th['5pct']:.3g}, 1 % = {th['1pct']:.3g})", "",
                  "| method | budget FFE | runs (timed out) | cost-to-target 5 % median [q25, q75] | reached 5 % "
                  "| cost-to-target 1 % median | reached 1 % | median regret at 1 / 10 / 30 FFE | final regret median "
                  "| cost spent median | CPU s median |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, m in ps["methods"].items():
            if "regret_median" not in m:
                lines.append(f"| {name} | {m.get('budget_ffe', '')} | {m['n_runs']} | failed: {m['errors']} |")
                continue
            at = m["regret_median_at_ffe"]
            regs = " / ".join("n/a" if not math.isfinite(_float(at.get(k, math.nan))) else f"{_float(at[k]):.3g}"
                              for k in ("1", "10", "30"))
            lines.append(
                f"| {name} | {m['budget_ffe']:g} | {m['n_runs']} ({m['n_timed_out']}) | "
                f"{_ffe(m['cost_to_target_5pct_median'])} [{_ffe(m['cost_to_target_5pct_q25'])}, "
                f"{_ffe(m['cost_to_target_5pct_q75'])}] | {m['reached_5pct']:.0%} | "
                f"{_ffe(m['cost_to_target_1pct_median'])} | {m['reached_1pct']:.0%} | {regs} | "
                f"{m['final_regret_median']:.3g} | {m['cost_spent_median_ffe']:.3g} | {m['cpu_s_median']:.0f} |")
        lines.append("")
        for name, m in ps["methods"].items():
            if m.get("verification_z"):
                tr = m.get("target_runs_within_2sd")
                lines.append(f"- {name} calibration at target: the recommendation's target run within 2 predicted sd "
                             f"in {m['verification_within_2sd']:.0%} of {len(m['verification_z'])} runs"
                             + (f"; every target-fidelity run: {tr:.0%}" if tr is not None else ""))
            if m.get("retrain_z"):
                lines.append(f"- {name} calibration of the final recommendation: a fresh target-fidelity run of it "
                             f"within 2 sd of the final prediction in {m['retrain_within_2sd']:.0%} of "
                             f"{len(m['retrain_z'])} runs")
        for key, e in ps.get("ratios", {}).items():
            mf = _ffe(e["mfbo_median"])
            lines.append(f"- {key}: mfbo median {mf}{' FFE' if mf != 'not reached' else ''}; mfbo / best baseline "
                         f"{_fmt_ratio(e.get('vs_best_baseline'))}; mfbo / random {_fmt_ratio(e.get('vs_random'))}")
        lines.append("")
    return "\n".join(lines)


def _fmt_ratio(e: dict | None) -> str:
    if not e:
        return "n/a"
    r = _float(e["ratio"])
    s = "inf" if not math.isfinite(r) else f"{r:.3f}"
    return f"{'<= ' if e['bound'] == '<=' else ''}{s} (vs {e['baseline']})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="mfbo multi-fidelity benchmark (see module docstring)")
    ap.add_argument("--problems", nargs="+", default=DEFAULT_PROBLEMS)
    ap.add_argument("--methods", nargs="+", default=DEFAULT_METHODS)
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1")
    ap.add_argument("--budget", nargs="*", default=[], metavar="PROBLEM=FFE",
                    help=f"budget overrides in FFE (defaults {DEFAULT_BUDGETS})")
    ap.add_argument("--method-budget", nargs="*", default=[], metavar="[PROBLEM:]METHOD=FFE",
                    help="per-method budget overrides, e.g. random=1000 (cheap baselines run far past mfbo's "
                         "budget so that their cost-to-target is measured, not bounded)")
    ap.add_argument("--method-options", default="{}",
                    help='JSON {"method": {option: value}} passed to the method, e.g. {"ax-sf": {"method": "fast"}}')
    ap.add_argument("--yahpo-data", default=None, help="YAHPO Gym data folder (default $MFBO_YAHPO_DATA or "
                                                       "../shared/data/yahpo)")
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    ap.add_argument("--run-timeout", type=float, default=None,
                    help="seconds after which a run is asked to stop (recorded as timed_out)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--force", action="store_true", help="rerun runs whose JSON already exists")
    ap.add_argument("--summarise-only", action="store_true", help="only rebuild results.json and plots")
    ap.add_argument("--runs-from", default=None, metavar="RESULTS_JSON",
                    help="first write the runs recorded in this results.json (e.g. the committed one, whose "
                         "runs/ folder is not kept) into OUT/runs, keeping run files that already exist")
    args = ap.parse_args(argv)

    budgets = dict(DEFAULT_BUDGETS)
    def ffe(option: str, item: str) -> tuple[str, float]:
        key, _, val = item.partition("=")
        try:
            value = float(val)
        except ValueError:
            value = math.nan
        if not key or not math.isfinite(value) or value <= 0:
            ap.error(f"{option} {item!r}: expected NAME=FFE with a positive number of FFE")
        return key, value

    for item in args.budget:
        name, val = ffe("--budget", item)
        budgets[name] = val
    method_budgets: dict[tuple[str, str], float] = {}
    for item in args.method_budget:
        key, val = ffe("--method-budget", item)
        prob_name, _, meth = key.rpartition(":")
        for p in ([prob_name] if prob_name else args.problems):
            method_budgets[(p, meth)] = val

    def budget_of(problem: str, method: str) -> float:
        return method_budgets.get((problem, method), budgets[problem])

    method_options = json.loads(args.method_options)
    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    if args.runs_from:
        try:
            stored = json.loads(Path(args.runs_from).read_text())["runs"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            ap.error(f"--runs-from {args.runs_from}: not a readable results.json with 'runs' ({exc})")
        for rec in stored:
            path = out / "runs" / rec["problem"] / rec["method"] / f"seed{rec['seed']}.json"
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(rec))

    def pkw(problem: str) -> dict:
        return {"data_dir": args.yahpo_data} if problem.startswith("yahpo") and args.yahpo_data else {}

    todo, records = [], []
    for problem in args.problems:
        for method in args.methods:
            for seed in range(args.seeds):
                path = out / "runs" / problem / method / f"seed{seed}.json"
                if path.exists() and not args.force:
                    rec = json.loads(path.read_text())
                    if _float(rec.get("budget_ffe")) == budget_of(problem, method) or args.summarise_only:
                        records.append(rec)
                        continue
                if not args.summarise_only:
                    todo.append((problem, method, seed, path))

    from tqdm import tqdm

    if todo:
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
            futs = {pool.submit(run_one, p, m, s, budget_of(p, m), pkw(p), method_options.get(m, {}),
                                 args.run_timeout): path
                    for p, m, s, path in todo}
            for fut in tqdm(as_completed(futs), total=len(futs), desc="runs", file=sys.stderr):
                path = futs[fut]
                try:
                    rec = fut.result()
                except Exception as exc:  # noqa: BLE001 - e.g. a worker process died; record, go on
                    problem, method, seed = path.parts[-3], path.parts[-2], int(path.stem[4:])
                    rec = {"problem": problem, "method": method, "seed": seed,
                           "budget_ffe": budget_of(problem, method),
                           "wall_s": math.nan, "cpu_s": math.nan, "error": f"{type(exc).__name__}: {exc}",
                           "timed_out": False}
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(_jsonable(rec)))
                records.append(json.loads(path.read_text()))
                if rec.get("error"):
                    print(f"  {rec['problem']}/{rec['method']}/seed{rec['seed']}: {rec['error']}", file=sys.stderr)
        print(f"{len(todo)} runs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    for rec in records:  # JSON round trip stores inf as a string
        rec["regret"] = [_float(v) for v in rec.get("regret", [])]
    problems = sorted({r["problem"] for r in records})
    r0s = {p: initial_design_regret(p, pkw(p)) for p in problems}
    summary = summarise(records, budgets, r0s)
    import platform

    import mfbo

    meta = {"command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
            "mfbo_version": mfbo.__version__, "python": platform.python_version(), "seeds": args.seeds,
            "budgets_ffe": {p: budgets[p] for p in problems},
            "method_budgets_ffe": {f"{p}:{m}": b for (p, m), b in method_budgets.items() if p in problems},
            "targets": TARGETS,
            "definitions": {
                "regret": "value_at_target(recommendation) - optimum_value (noise-free)",
                "initial_design_regret": "median regret of 1024 scrambled-Sobol configurations",
                "cost_to_target": "first cumulative cost (FFE) at which the recommendation's regret <= "
                                  "fraction x initial_design_regret; inf if never within the budget",
                "ratio_bound_<=": "the baseline never reached the target within the budget: its cost-to-target "
                                  "exceeds the budget, so mfbo/budget bounds the ratio from above"}}
    # 7 significant digits and no indentation: every run's trace is in it (summary.md is the readable view)
    (out / "results.json").write_text(json.dumps(_jsonable({"meta": meta, "problems": summary,
                                                            "runs": records}, digits=7), separators=(",", ":")))
    plot(summary, out)
    (out / "summary.md").write_text(markdown(summary))
    print(f"{'problem':<20} {'method':<14} {'ctt5% med':>9} {'ctt1% med':>9} {'reach5%':>7} {'final regret':>12} "
          f"{'wall s':>7} {'cpu s':>7}")
    for problem, ps in summary.items():
        for name, m in ps["methods"].items():
            if "regret_median" not in m:
                print(f"{problem:<20} {name:<14} failed: {m['errors']}")
                continue
            print(f"{problem:<20} {name:<14} {m['cost_to_target_5pct_median']:>9.3g} "
                  f"{m['cost_to_target_1pct_median']:>9.3g} {m['reached_5pct']:>7.0%} "
                  f"{m['final_regret_median']:>12.4g} {m['wall_s_median']:>7.1f} {m['cpu_s_median']:>7.1f}")
        for key, e in ps.get("ratios", {}).items():
            print(f"  {problem} {key}: mfbo median {e['mfbo_median']:.3g} FFE; mfbo/best baseline "
                  f"{_fmt_ratio(e.get('vs_best_baseline'))}; mfbo/random {_fmt_ratio(e.get('vs_random'))}")
    for problem, ps in summary.items():
        for name, m in ps["methods"].items():
            if m.get("verification_z"):
                print(f"  {problem} {name}: recommendation's target run within 2 sd of its prediction in "
                      f"{m['verification_within_2sd']:.0%} of {len(m['verification_z'])} runs; every target run: "
                      + ("n/a" if m.get("target_runs_within_2sd") is None else f"{m['target_runs_within_2sd']:.0%}"))
    print(f"wrote {out / 'results.json'}, {out / 'summary.md'} and {', '.join(p.name for p in out.glob('*.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
