"""How well cheap fidelities rank configurations on the replayed MLIP problems, over all and near the top.

    OMP_NUM_THREADS=1 python analysis/benchmarks/mlip/rank_correlation.py \
        --out analysis/benchmarks/mlip/results/rank_correlation.json

For each replayed problem (``mlip_si``, ``mlip_mo``, ``mlip_oc20``) it draws ``--n`` configurations (scrambled
Sobol, seed 3), takes each one's expected value at target fidelity from the replay, and prints the Spearman rank
correlation between that and the replay's expected curve at every recorded data fraction after 1, 3, 10
epochs and the target epochs: over all configurations, and over the best ``--top`` share of them by target
value (what separates candidates near the optimum, which is what the end of a search has to do). For a
table (``oc20_gmp``) it uses the recorded configurations and curves instead of a sample.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np


def correlations(name: str, n: int, top: float) -> dict:
    from scipy.stats import spearmanr

    from mfbo.optimize.problems import get_problem

    p = get_problem(name, seed=0)
    if hasattr(p, "values"):  # a table (oc20_gmp): its recorded configurations and curves
        table = p.values  # (configs, fractions, epochs)
        target = table[:, -1, -1]
        keep = np.isfinite(target)
        table, target = table[keep], target[keep]
        best = np.argsort(target)[: max(10, int(round(top * len(target))))]
        epochs = sorted({1, 3, 10, p.max_epochs} & set(range(1, p.max_epochs + 1)))
        out = {"n_configs": int(len(target)), "top_share": top, "n_top": len(best), "target_epochs": p.max_epochs,
               "fractions": [float(f) for f in p.fractions], "epochs": epochs, "all": {}, "top": {}}
        for i, f in enumerate(p.fractions):
            out["all"][str(f)] = [float(spearmanr(table[:, i, e - 1], target).correlation) for e in epochs]
            out["top"][str(f)] = [float(spearmanr(table[best, i, e - 1], target[best]).correlation) for e in epochs]
        return out
    configs = p.space.sample(n, seed=3)
    target = p.values_at_target(configs)
    best = np.argsort(target)[: max(10, int(round(top * n)))]
    epochs = sorted({1, 3, 10, p.max_epochs} & set(range(1, p.max_epochs + 1)))
    out: dict = {"n_configs": n, "top_share": top, "n_top": len(best), "target_epochs": p.max_epochs,
                 "fractions": [float(f) for f in p.fractions], "epochs": epochs, "all": {}, "top": {}}
    for f in p.fractions:
        m, _ = p.surrogate.mean_sd(configs, [f] * len(configs))
        out["all"][str(f)] = [float(spearmanr(m[:, e - 1], target).correlation) for e in epochs]
        out["top"][str(f)] = [float(spearmanr(m[best, e - 1], target[best]).correlation) for e in epochs]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", default=["mlip_si", "mlip_mo", "mlip_oc20", "oc20_gmp"])
    ap.add_argument("--n", type=int, default=4000, help="configurations per problem")
    ap.add_argument("--top", type=float, default=0.05, help="share of the best configurations")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    report = {}
    for name in args.problems:
        r = report[name] = correlations(name, args.n, args.top)
        print(f"{name}: Spearman with the target value; all {r['n_configs']} configurations | best {r['n_top']}")
        print("  fraction  " + "  ".join(f"e{e:<4d}" for e in r["epochs"]) + " | " + "  ".join(f"e{e:<4d}" for e in r["epochs"]))
        for f in r["all"]:
            print(f"  {float(f):<8.3f}  " + "  ".join(f"{v:5.2f}" for v in r["all"][f]) + " | "
                  + "  ".join(f"{v:5.2f}" for v in r["top"][f]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
