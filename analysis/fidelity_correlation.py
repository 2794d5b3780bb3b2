"""How informative does the surrogate think each fidelity is, against the truth of the oc20_gmp table?

For each seed: 60 trials of the oc20_gmp problem (random grid configurations, data fraction drawn from
its four recorded levels, epochs from {1, 2, 5, 10, 20}; every fourth trial at target fidelity) are told
to a ``MultiFidelityOptimizer``, whose surrogate is then fitted as in a run. For every fidelity that
``analysis/benchmarks/oc20_gmp/summary.json`` lists, the script prints the surrogate's learned
correlation between a run there and a target-fidelity run of the same design
(``Surrogate.fidelity_correlation``, averaged over the 162 configurations) beside the table's Spearman
rank correlation with the target value over all 162 configurations (the ground truth), and the inferred
observation-noise sd (of log loss). The ratio column is learned / true.

    OMP_NUM_THREADS=1 .venv/bin/python analysis/fidelity_correlation.py [--seeds 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--fidelity-discrepancy", action="store_true",
                    help="add the fidelity-discrepancy term to the surrogate's kernel")
    ap.add_argument("--json", help="write the numbers to this file")
    args = ap.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    from mfbo.optimize import MultiFidelityOptimizer
    from mfbo.optimize.problems import get_problem

    truth = json.loads((HERE / "benchmarks" / "oc20_gmp" / "summary.json").read_text())["fidelities"]
    levels = (0.125, 0.25, 0.5, 1.0)
    epochs = (1, 2, 5, 10, 20)
    learned: dict[tuple, list[float]] = {}
    noise = []
    for seed in range(args.seeds):
        prob = get_problem("oc20_gmp", seed=seed)
        rng = np.random.default_rng(seed)
        opt = MultiFidelityOptimizer(prob.space, seed=seed, fidelity_discrepancy=args.fidelity_discrepancy)
        for i, cfg in enumerate(prob.space.sample(args.trials, seed=seed)):
            frac, ep = (1.0, 20) if i % 4 == 0 else (float(rng.choice(levels)), int(rng.choice(epochs)))
            out = prob(cfg, frac, ep)
            idx = opt.attach(cfg, frac, ep)
            opt.tell(idx, out["curve"], out["cost"])
        sur = opt.surrogate()
        noise.append(sur.noise_sd())
        grid = [dict(zip([p.name for p in prob.space.design_parameters], v)) for v in itertools.product(
            *[range(int(p.low), int(p.high) + 1) for p in prob.space.design_parameters])]
        grid = [prob.space.validate(c) for c in grid]
        for f in truth:
            key = (f["data_fraction"], f["epochs"])
            learned.setdefault(key, []).append(sur.fidelity_correlation(grid, *key))
    rows = []
    print(f"{'fraction':>8} {'epochs':>6} {'cost FFE':>8} {'true Spearman':>13} {'learned rho median [min, max]':>30} "
          f"{'ratio':>6}")
    for f in truth:
        key = (f["data_fraction"], f["epochs"])
        v = learned[key]
        med = statistics.median(v)
        rows.append({"data_fraction": key[0], "epochs": key[1], "cost_ffe": f["cost_ffe"],
                     "spearman_true": f["spearman_vs_target"], "learned_median": med, "learned": v})
        print(f"{key[0]:>8.3g} {key[1]:>6d} {f['cost_ffe']:>8.3f} {f['spearman_vs_target']:>13.2f} "
              f"{med:>12.2f} [{min(v):.2f}, {max(v):.2f}]{'':>9} {med / f['spearman_vs_target']:>6.2f}")
    print(f"inferred noise sd (log loss): median {statistics.median(noise):.3f} over {args.seeds} seeds")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "noise_sd": noise}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
