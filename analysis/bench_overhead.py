"""The optimiser's own time against the trials' on a small problem, with and without economising.

A toy quadratic in two design parameters whose full-fidelity "training" takes ``--full-s`` seconds of
real sleep (default 2 s, the quickstart's one training), scaled by data fraction x epochs, run through
``mfbo.minimize`` with ``budget=--budget`` FFE. The objective reports no cost, so the budget counts its
measured wall time, as a user's would. Each repeat runs the baseline (``effort="full"``: full raw pool,
posterior-mean maximisers, the full fitting cadence) and the default (``effort="auto"``: economise once a
round of candidate generation exceeds 10 % of the median trial's cost) alternately in the same process,
and prints per run: wall time, the objective's time, the optimiser's time (proposals and
recommendations, as ``info["optimizer_s"]`` reports it), its share of the wall time, trials and the
final true value; then the medians and the ratios default / baseline.

    OMP_NUM_THREADS=1 .venv/bin/python analysis/bench_overhead.py [--repeats 2] [--budget 10] [--full-s 2]

Timings on shared machines drift: read the ratios of runs made side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

SPACE = {
    "x": {"type": "float", "bounds": [-2.0, 2.0]},
    "y": {"type": "float", "bounds": [-2.0, 2.0]},
    "data_fraction": {"type": "fidelity", "bounds": [0.1, 1.0], "target": 1.0},
    "epochs": {"type": "fidelity", "bounds": [1, 20], "target": 20},
}


def value(p: dict, fraction: float = 1.0, epoch: int = 20) -> float:
    """Loss after ``epoch`` epochs on ``fraction`` of the data; minimum 0.1 at (0.3, -0.5), full fidelity."""
    return (p["x"] - 0.3) ** 2 + (p["y"] + 0.5) ** 2 + 0.1 + 0.2 * (1.0 - fraction) + 0.5 / epoch


class Toy:
    def __init__(self, full_s: float):
        self.full_s = float(full_s)
        self.seconds = 0.0

    def __call__(self, params: dict, fraction: float, epochs: int) -> dict:
        t0 = time.perf_counter()
        time.sleep(self.full_s * fraction * epochs / 20)
        self.seconds += time.perf_counter() - t0
        return {"curve": [value(params, fraction, e) for e in range(1, int(epochs) + 1)]}


def one(effort: str, budget: float, full_s: float, seed: int) -> dict:
    from mfbo.optimize import minimize

    toy = Toy(full_s)
    t0 = time.perf_counter()
    res = minimize(toy, SPACE, budget=budget, seed=seed, effort=effort)
    wall = time.perf_counter() - t0
    return {"effort": effort, "seed": seed, "wall_s": wall, "objective_s": toy.seconds,
            "optimizer_s": res.info["optimizer_s"], "optimizer_share": res.info["optimizer_s"] / wall,
            "n_trials": len(res.trials), "cost_ffe": res.cost_spent, "final_value": value(res.best_params)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--budget", type=float, default=10.0)
    ap.add_argument("--full-s", type=float, default=2.0)
    ap.add_argument("--json", help="write every run to this file")
    args = ap.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    from mfbo.optimize import minimize

    minimize(Toy(0.01), SPACE, budget=2.0, seed=99)  # imports and first-use costs out of the timings
    runs = []
    for rep in range(args.repeats):
        for effort in (("full", "auto") if rep % 2 == 0 else ("auto", "full")):
            r = one(effort, args.budget, args.full_s, seed=rep)
            runs.append(r)
            print(f"{effort:<5} seed {rep}: wall {r['wall_s']:6.1f} s, objective {r['objective_s']:5.1f} s, "
                  f"optimizer {r['optimizer_s']:6.1f} s ({r['optimizer_share']:.0%}), {r['n_trials']} trials, "
                  f"{r['cost_ffe']:.2f} FFE, final value {r['final_value']:.4f} (optimum 0.1)", flush=True)
    med = {e: {k: statistics.median(r[k] for r in runs if r["effort"] == e)
               for k in ("wall_s", "objective_s", "optimizer_s", "optimizer_share", "n_trials", "final_value")}
           for e in ("full", "auto")}
    for e, m in med.items():
        print(f"median {e:<5}: wall {m['wall_s']:.1f} s, optimizer {m['optimizer_s']:.1f} s "
              f"({m['optimizer_share']:.0%} of wall), {m['n_trials']:.0f} trials, final value {m['final_value']:.4f}")
    print(f"ratio auto / full: wall {med['auto']['wall_s'] / med['full']['wall_s']:.2f}, optimizer time "
          f"{med['auto']['optimizer_s'] / med['full']['optimizer_s']:.2f}, optimizer seconds per trial "
          f"{(med['auto']['optimizer_s'] / med['auto']['n_trials']) / (med['full']['optimizer_s'] / med['full']['n_trials']):.2f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "runs": runs, "medians": med}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
