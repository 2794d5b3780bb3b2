"""Best-known optima of the YAHPO Gym problems at target fidelity.

Random search over ``--n-random`` scrambled-Sobol configurations, then L-BFGS-B-free local refinement
(Nelder-Mead on the unit-cube encoding, categoricals fixed) from the ``--n-starts`` best ones. Writes
``analysis/benchmarks/results/yahpo_optima.json``; copy the values into
``mfbo/optimize/problems/_yahpo.py:BEST_KNOWN``.

    nice -n 10 .venv/bin/python analysis/benchmarks/yahpo_optimum.py --n-random 100000 --n-starts 20
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.optimize import minimize as sp_minimize

from mfbo.optimize.problems import get_problem


def best_known(name: str, task_id: str | None, n_random: int, n_starts: int, seed: int) -> dict:
    p = get_problem(name, task_id=task_id) if task_id else get_problem(name)
    t0 = time.time()
    configs = p.space.sample(n_random, seed=seed)
    values = np.concatenate([p.values_at_target(configs[i:i + 4096]) for i in range(0, n_random, 4096)])
    order = np.argsort(values)
    best_random = float(values[order[0]])
    best_cfg, best_val = configs[order[0]], best_random
    space = p.space
    for idx in order[:n_starts]:
        start = configs[idx]
        x0 = space.encode([start])[0]
        # Categoricals stay at the start's choice: refine numeric columns only.
        def f(x, start=start):
            cfg = space.decode(np.clip(x, 0, 1))[0]
            for prm in space.design_parameters:
                if prm.type == "categorical":
                    cfg[prm.name] = start[prm.name]
            return float(p.values_at_target([cfg])[0])
        res = sp_minimize(f, x0, method="Nelder-Mead", options={"maxfev": 600, "xatol": 1e-4, "fatol": 1e-6})
        if res.fun < best_val:
            cfg = space.decode(np.clip(res.x, 0, 1))[0]
            for prm in space.design_parameters:
                if prm.type == "categorical":
                    cfg[prm.name] = start[prm.name]
            best_val, best_cfg = float(p.values_at_target([cfg])[0]), cfg
    return {"problem": name, "task_id": p.task_id, "metric": p.metric, "n_random": n_random,
            "n_starts": n_starts, "best_random": best_random, "best_value": best_val, "best_params": best_cfg,
            "median_random": float(np.median(values)), "full_fidelity_cost_s": p.full_fidelity_cost,
            "seconds": time.time() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-random", type=int, default=100_000)
    ap.add_argument("--n-starts", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "yahpo_optima.json"))
    args = ap.parse_args()
    out = [best_known(n, None, args.n_random, args.n_starts, args.seed)
           for n in ("yahpo_lcbench", "yahpo_rbv2_xgboost")]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    for r in out:
        print(f"{r['problem']} task {r['task_id']}: best {r['best_value']:.6f} (random best {r['best_random']:.6f}, "
              f"median {r['median_random']:.4f}) in {r['seconds']:.0f} s")


if __name__ == "__main__":
    main()
