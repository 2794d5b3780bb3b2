"""Candidate generation (surrogate fit + acquisition) time, and a small regret comparison of acquisitions.

Timing (default mode): 100 surrogate observations (25 trials x 4 trace points) of the two-fidelity
Hartmann-6 problem (6 hyperparameters, data fraction + epochs), one ``ask()`` per repeat, each with a
fresh hyperparameter fit (``--warm`` for the warm-started fits used between periodic refits). Methods:
cost-aware MF-GIBBON (mfbo's default) and qMFKG with 16 fantasies (the baseline, run in the same
process); prints median wall and process CPU time and their ratios to qMFKG. Target: <= 3 s.

Regret (``--regret``): ``mfbo.minimize`` with each acquisition on the learning-curve problem for a few
seeds, stopped after a fixed number of trials; prints the median simple regret at target fidelity of
the recommendation, the FFE spent and the wall time.

    OMP_NUM_THREADS=2 .venv/bin/python analysis/bench_candidate_generation.py [--repeats 5] [--threads 2]
    OMP_NUM_THREADS=2 .venv/bin/python analysis/bench_candidate_generation.py --regret --seeds 3 --trials 20

Timings on shared machines drift several-fold for minutes at a time: repeat, read medians and CPU time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np


def _optimizer_with_data(problem, acquisition: str, n_trials: int, trace_points: int, seed: int):
    from mfbo.optimize import MultiFidelityOptimizer

    opt = MultiFidelityOptimizer(problem.space, seed=seed, acquisition=acquisition, trace_points=trace_points,
                                 max_gp_points=n_trials * trace_points)
    rng = np.random.default_rng(seed)
    dp, ip = problem.space.data_fidelity, problem.space.iteration_fidelity
    for cfg in problem.space.sample(n_trials, seed=seed + 1):
        frac = float(np.exp(rng.uniform(np.log(dp.low), 0.0)))
        ep = int(rng.integers(max(int(ip.low), trace_points), int(ip.high) + 1))
        idx = opt.attach(cfg, frac, ep)
        out = problem(cfg, frac, ep)
        opt.tell(idx, out["curve"], out["cost"])
    return opt


def time_candidate_generation(repeats: int, warm: bool, seed: int = 0,
                              methods: tuple[str, ...] = ("kg", "gibbon")) -> dict:
    from mfbo.optimize.problems import get_problem

    problem = get_problem("hartmann6_mf", seed=seed)
    results = {}
    for method in methods:
        opt = _optimizer_with_data(problem, method, n_trials=25, trace_points=4, seed=seed)
        opt.surrogate()  # first fit outside the timing (warm state for --warm)
        walls, cpus = [], []
        for _ in range(repeats):
            opt._surrogate = None  # force a refit inside the timed ask
            if not warm:
                opt._warm_state = None
            else:
                opt._fresh_at = len(opt._completed())
            t0, c0 = time.perf_counter(), time.process_time()
            (cand,) = opt.ask(1)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            print(f"  {method}: wall {walls[-1]:.2f} s, cpu {cpus[-1]:.2f} s "
                  f"(fit {opt.last_timings.get('fit_s', 0):.2f} s wall)", flush=True)
            opt.abandon(cand.trial_index, "benchmark: not evaluated")
        results[method] = {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
                           "walls": walls, "cpus": cpus, "n_gp_points": opt.last_timings.get("n_gp_points")}
    return results


def regret_comparison(seeds: int, trials: int, budget: float) -> dict:
    from mfbo.optimize import minimize
    from mfbo.optimize.problems import get_problem

    runs: dict = {m: {"regrets": [], "ffe": [], "walls": []} for m in ("gibbon", "kg")}
    for seed in range(seeds):  # seeds outermost: a cut-short run still compares both methods
        for method in ("gibbon", "kg"):
            problem = get_problem("learning_curve", seed=seed)
            t0 = time.perf_counter()
            res = minimize(problem, problem.space, budget, seed=seed, acquisition=method,
                           callback=lambda t, h: t.index + 1 >= trials)
            r = runs[method]
            r["walls"].append(time.perf_counter() - t0)
            r["regrets"].append(problem.regret(res.best_params))
            r["ffe"].append(res.cost_spent)
            print(f"  {method} seed {seed}: regret {r['regrets'][-1]:.4f} after {res.cost_spent:.2f} FFE "
                  f"({len(res.trials)} trials, {r['walls'][-1]:.0f} s)", flush=True)
    out = {m: {"median_regret": statistics.median(r["regrets"]), "regrets": r["regrets"],
               "median_ffe": statistics.median(r["ffe"]), "median_wall_s": statistics.median(r["walls"])}
           for m, r in runs.items()}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warm", action="store_true", help="time warm-started fits instead of fresh fits")
    ap.add_argument("--regret", action="store_true", help="run the regret comparison instead of timings")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--budget", type=float, default=10.0)
    ap.add_argument("--methods", default="kg,gibbon", help="acquisitions to time (kg first: the baseline)")
    ap.add_argument("--json", help="write the numbers to this file")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.regret:
        res = regret_comparison(args.seeds, args.trials, args.budget)
        base = res["kg"]
        print(f"\nlearning_curve, {args.seeds} seeds, stopped after {args.trials} trials (incl. verification)")
        for m, r in res.items():
            print(f"{m:7s} median regret {r['median_regret']:.4f} (ratio to kg {r['median_regret'] / max(base['median_regret'], 1e-12):.2f})"
                  f"  median FFE {r['median_ffe']:.2f}  median wall {r['median_wall_s']:.0f} s"
                  f" (ratio to kg {r['median_wall_s'] / base['median_wall_s']:.2f})")
    else:
        res = time_candidate_generation(args.repeats, args.warm, methods=tuple(args.methods.split(",")))
        base = res.get("kg", next(iter(res.values())))
        mode = "warm-started" if args.warm else "fresh"
        print(f"candidate generation, {next(iter(res.values()))['n_gp_points']:.0f} GP points, 6 hyperparameters + 2 "
              f"fidelities, {args.threads} threads, {mode} fit, median of {args.repeats}")
        for m, r in res.items():
            print(f"{m:7s} wall {r['wall_s']:6.2f} s  cpu {r['cpu_s']:6.2f} s   ratio to qMFKG: "
                  f"wall {r['wall_s'] / base['wall_s']:.2f}  cpu {r['cpu_s'] / base['cpu_s']:.2f}"
                  f"   target <= 3 s: {'met' if r['wall_s'] <= 3 else 'NOT met'} (wall)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
