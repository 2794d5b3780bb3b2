"""Summarise the ``oc20_gmp`` table: optimum, FFE unit, landscape spread, how informative low fidelities are.

Run (a second, no training)::

    .venv/bin/python analysis/benchmarks/oc20_gmp/summarise.py

Prints a Markdown report and writes ``summary.json`` beside the table. For every fidelity pair
(data fraction, epochs) it gives the median cost in FFE and the Spearman rank correlation, over all grid
configurations, between the value there and the value at target fidelity, plus whether the
configuration that is best there is within the top 5 % at target (low-fidelity rankings are informative
when the correlation is high, and imperfect when it is below 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

HERE = Path(__file__).resolve().parent

FIDELITIES = [(0.125, 1), (0.125, 5), (0.125, 20), (0.25, 5), (0.25, 20), (0.5, 5), (0.5, 10), (0.5, 20),
              (1.0, 1), (1.0, 3), (1.0, 5), (1.0, 10), (1.0, 15), (1.0, 20)]


def summarise(table: Path, metric=None) -> dict:
    from mfbo.optimize.problems import get_problem

    p = get_problem("oc20_gmp", table=table, **({"metric": metric} if metric else {}))
    target = p.values[:, -1, -1]
    n = len(target)
    order = np.argsort(target)
    top5 = set(order[: max(1, int(round(0.05 * n)))].tolist())
    rows = []
    for f, t in FIDELITIES:
        k = p.fractions.index(f)
        v = p.values[:, k, t - 1]
        rho = float(spearmanr(v, target).statistic)
        best_here = int(np.argmin(v))
        rows.append({"data_fraction": f, "epochs": t, "cost_ffe": p.cost(f, t) / p.full_fidelity_cost,
                     "spearman_vs_target": rho, "best_here_regret": float(target[best_here] - p.optimum_value),
                     "best_here_in_top5pct": best_here in top5})
    sample = p.space.sample(1024, seed=2024)
    regrets = p.values_at_target(sample) - p.optimum_value
    best = p.optimizer_location
    meta = p.table_meta
    out = {
        "metric": p.metric, "clock": p.clock, "n_configs": n,
        "optimum_value": p.optimum_value, "optimizer_location": best, "optimizer_hyperparameters":
            p.hyperparameters(best),
        "optimum_components": {m: float(get_problem("oc20_gmp", table=table, metric=m).value_at_target(best))
                               for m in p.metric_names},
        "full_fidelity_cost_s": p.full_fidelity_cost,
        "target_cost_s_min_max": [float(np.min(p.costs[:, -1, -1])), float(np.max(p.costs[:, -1, -1]))],
        "target_value_quantiles": {q: float(np.quantile(target, q)) for q in (0.0, 0.05, 0.25, 0.5, 0.75, 1.0)},
        "initial_design_regret_median": float(np.median(regrets)),
        "random_top5pct_probability": len(top5) / n,
        "fidelities": rows,
        "axis_effects": {},
        "exhaustive_timing": meta.get("timing"),
        "environment": meta.get("environment"),
    }
    # Main effect of every axis: the mean target value at each of its levels.
    cells = np.array([[a.index_of_param(c[a.param]) for a in p.axes] for c in p.configs])
    for j, a in enumerate(p.axes):
        out["axis_effects"][a.name] = {str(val): float(target[cells[:, j] == k].mean()) for k, val in enumerate(a.values)}
    return out


def report(s: dict) -> str:
    lines = [f"metric {s['metric']} ({s['clock']} seconds), {s['n_configs']} configurations",
             f"optimum {s['optimum_value']:.5f} at {s['optimizer_hyperparameters']} "
             f"(components {', '.join(f'{k} {v:.4f}' for k, v in s['optimum_components'].items())})",
             f"1 FFE = median target-fidelity cost = {s['full_fidelity_cost_s']:.2f} s "
             f"(range {s['target_cost_s_min_max'][0]:.2f}-{s['target_cost_s_min_max'][1]:.2f} s)",
             "target values: " + ", ".join(f"q{int(100 * float(q))} {v:.4f}"
                                            for q, v in s["target_value_quantiles"].items()),
             f"median regret of a random configuration: {s['initial_design_regret_median']:.4f}", "",
             "| data fraction | epochs | cost (FFE) | Spearman vs target | regret of its best | best in top 5 % |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in s["fidelities"]:
        lines.append(f"| {r['data_fraction']} | {r['epochs']} | {r['cost_ffe']:.3f} | {r['spearman_vs_target']:.3f} "
                     f"| {r['best_here_regret']:.4f} | {'yes' if r['best_here_in_top5pct'] else 'no'} |")
    lines += ["", "main effects (mean target value per level):"]
    for name, eff in s["axis_effects"].items():
        lines.append(f"  {name}: " + ", ".join(f"{k} -> {v:.4f}" for k, v in eff.items()))
    t = s.get("exhaustive_timing") or {}
    if t:
        lines += ["", f"exhaustive run: training {t['runs_s']['cpu']:.0f} s CPU / {t['runs_s']['wall']:.0f} s wall, "
                      f"featurisation {t['featurize_s']['cpu']:.0f} s CPU; sessions {t.get('sessions')}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", type=Path, default=HERE / "table.json")
    ap.add_argument("--out", type=Path, default=HERE / "summary.json")
    args = ap.parse_args(argv)
    s = summarise(args.table)
    args.out.write_text(json.dumps(s, indent=1) + "\n")
    print(report(s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
