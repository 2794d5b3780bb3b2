"""Fit the replay surrogate of a recorded dataset, report its fit error and the recorded landscape.

Reads ``<dataset>.json.gz`` (written by ``record.py``), fits :func:`mfbo.optimize.problems._replay.fit_replay`
(GPs of the mean log curve, the seed spread and the cost; best-known optimum; 5-fold held-out fit error over
configurations) and writes ``<dataset>.json.gz.fit.json``, which ``get_problem("mlip_<dataset>")`` reuses.
It adds a ``summary`` of the records themselves: recorded target values, the seed spread, the gap of the
top 5 %, and the Spearman rank correlation of every recorded fidelity with the target (means over seeds).

Run::

    OMP_NUM_THREADS=1 .venv/bin/python analysis/benchmarks/mlip/fit.py --dataset si
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def summarise(rec: dict, metric: dict) -> dict:
    from scipy.stats import spearmanr

    T, fr = rec["max_epochs"], sorted(rec["fractions"])
    cells: dict[tuple[int, float], list[np.ndarray]] = {}
    n_runs = n_div = 0
    cpu = 0.0
    for c in rec["configs"]:
        cpu += c["featurize"].get("test_cpu_s", 0.0) + c["featurize"].get("pool_cpu_s", 0.0)
        for r in c["runs"]:
            n_runs += 1
            cpu += r.get("total_cpu_s", 0.0)
            n = len(r["curves"][next(iter(metric))])
            if n < T:
                n_div += 1
                continue
            curve = sum(w * np.asarray(r["curves"][m], dtype=float) for m, w in metric.items())
            cells.setdefault((c["index"], float(r["fraction"])), []).append(curve)
    ids = sorted({i for i, f in cells if f == fr[-1] and len(cells[(i, f)]) >= 2})
    target = np.array([np.mean([cv[-1] for cv in cells[(i, fr[-1])]]) for i in ids])
    spread = np.array([np.ptp([cv[-1] for cv in cells[(i, fr[-1])]]) for i in ids])
    sd_log = np.array([np.std(np.log([cv[-1] for cv in cells[(i, fr[-1])]]), ddof=1) for i in ids])
    order = np.sort(target)
    top = order[: max(1, int(np.ceil(0.05 * len(order))))]
    rho = {}
    for f in fr:
        for t in sorted({1, max(1, T // 4), max(1, T // 2), T}):
            if f == fr[-1] and t == T:
                continue
            x = [np.mean([cv[t - 1] for cv in cells[(i, f)]]) if (i, f) in cells else np.nan for i in ids]
            ok = np.isfinite(x)
            if ok.sum() > 3:
                rho[f"{f:g}@{t}"] = round(float(spearmanr(np.asarray(x)[ok], target[ok]).statistic), 3)
    return {"n_configs": len(rec["configs"]), "n_runs": n_runs, "n_diverged": n_div,
            "recording_cpu_s": round(cpu, 1),
            "target_mean_over_seeds": {"min": float(order[0]), "median": float(np.median(order)),
                                       "max": float(order[-1])},
            "seed_range_at_target": {"median": float(np.median(spread)), "max": float(np.max(spread))},
            "seed_sd_log_at_target_median": float(np.median(sd_log)),
            "top5pct_within": float(top[-1] - top[0]), "n_top5pct": int(len(top)),
            "spearman_with_target": rho}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--dir", type=Path, default=HERE)
    args = ap.parse_args(argv)
    path = args.dir / f"{args.dataset}.json.gz"
    if not path.is_file():
        raise SystemExit(f"fit: {path} not found; record it first with analysis/benchmarks/mlip/record.py "
                         f"--dataset {args.dataset}")
    from mfbo.optimize.problems._replay import ReplayProblem, fit_replay, save_fit

    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rec = json.load(fh)
    t0 = time.perf_counter()
    state = fit_replay(rec)
    state["fit_seconds"] = round(time.perf_counter() - t0, 1)
    state["summary"] = summarise(rec, state["metric"])
    p = ReplayProblem(seed=0, records=rec, fit=state)
    vals = p.values_at_target(p.space.sample(1024, seed=2024))
    state["summary"]["replay"] = {"initial_design_regret": float(np.median(vals - p.optimum_value)),
                                  "sobol1024_target_median": float(np.median(vals)),
                                  "ffe_seconds": p.full_fidelity_cost}
    save_fit(state, str(path) + ".fit.json")
    print(json.dumps({k: v for k, v in state.items() if k != "thetas"}, indent=1))
    print(f"wrote {path}.fit.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
