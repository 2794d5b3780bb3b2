"""Candidate generation (surrogate fit + acquisition) time, and a small regret comparison of acquisitions.

Timing (default mode): 100 surrogate observations (25 trials x 4 trace points) of the two-fidelity
Hartmann-6 problem (6 hyperparameters, data fraction + epochs), one ``ask()`` per repeat, for each kind of
round in the optimiser's schedule: a fresh hyperparameter fit, a warm-started fit, and conditioning only
(see ``hyper_every``); plus the schedule's amortised mean. Methods: qMFKG with 16 fantasies (the
baseline of the ratios), MF-GIBBON refined by L-BFGS-B (mfbo's previous default) and MF-GIBBON refined by
the rounding-aware local search (the default), all in the same process; prints median wall and process
CPU time and the ratios. Target: <= 3 s.

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


def _optimizer_with_data(problem, acquisition: str, n_trials: int, trace_points: int, seed: int,
                         refine: str = "local"):
    from mfbo.optimize import MultiFidelityOptimizer

    opt = MultiFidelityOptimizer(problem.space, seed=seed, acquisition=acquisition, trace_points=trace_points,
                                 max_gp_points=n_trials * trace_points, refine=refine)
    rng = np.random.default_rng(seed)
    dp, ip = problem.space.data_fidelity, problem.space.iteration_fidelity
    for cfg in problem.space.sample(n_trials, seed=seed + 1):
        frac = float(np.exp(rng.uniform(np.log(dp.low), 0.0)))
        ep = int(rng.integers(max(int(ip.low), trace_points), int(ip.high) + 1))
        idx = opt.attach(cfg, frac, ep)
        out = problem(cfg, frac, ep)
        opt.tell(idx, out["curve"], out["cost"])
    return opt


# The optimiser's schedule (defaults refit_every=10, hyper_every=3): per 10 completed trials one fresh fit,
# three warm-started fits and six rounds that only condition the GP on the new rows.
SCHEDULE = {"fresh": 1, "warm": 3, "conditioned": 6}


def _force(opt, kind: str) -> None:
    """Make the next ask's surrogate update a ``kind`` round (see SCHEDULE)."""
    n = len(opt._completed())
    opt._surrogate = None  # force an update inside the timed ask
    if kind == "fresh":
        opt._warm_state = None
    else:
        opt._fresh_at = n
        opt._hyper_at = n - opt.hyper_every if kind == "warm" else n


def time_candidate_generation(repeats: int, seed: int = 0, methods: tuple[str, ...] = ("kg", "gibbon")) -> dict:
    """Median wall/CPU time of one ``ask()`` per round kind, and the schedule's amortised mean."""
    from mfbo.optimize.problems import get_problem

    problem = get_problem("hartmann6_mf", seed=seed)
    results = {}
    for method in methods:
        acquisition, _, refine = method.partition(":")
        opt = _optimizer_with_data(problem, acquisition, n_trials=25, trace_points=4, seed=seed,
                                   refine=refine or "local")
        opt.surrogate()  # first fit outside the timing (warm state for the later rounds)
        res: dict = {}
        for kind in SCHEDULE:
            walls, cpus = [], []
            for _ in range(repeats):
                _force(opt, kind)
                t0, c0 = time.perf_counter(), time.process_time()
                (cand,) = opt.ask(1)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                print(f"  {method} {kind}: wall {walls[-1]:.2f} s, cpu {cpus[-1]:.2f} s "
                      f"(fit {opt.last_timings.get('fit_s', 0):.2f} s wall)", flush=True)
                opt.abandon(cand.trial_index, "benchmark: not evaluated")
            res[kind] = {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
                         "walls": walls, "cpus": cpus}
        total = sum(SCHEDULE.values())
        res["amortised"] = {k: sum(SCHEDULE[kind] * res[kind][k] for kind in SCHEDULE) / total
                            for k in ("wall_s", "cpu_s")}
        res["n_gp_points"] = opt.last_timings.get("n_gp_points")
        results[method] = res
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
    ap.add_argument("--regret", action="store_true", help="run the regret comparison instead of timings")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--budget", type=float, default=10.0)
    ap.add_argument("--methods", default="kg,gibbon:gradient,gibbon",
                    help="acquisitions to time, ACQ[:REFINE] (the first is the baseline of the ratios)")
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
        res = time_candidate_generation(args.repeats, methods=tuple(args.methods.split(",")))
        base_name = next(iter(res))
        base = res[base_name]["amortised"]
        print(f"\ncandidate generation (surrogate update + acquisition), {next(iter(res.values()))['n_gp_points']:.0f} "
              f"GP points, 6 hyperparameters + 2 fidelities, {args.threads} threads, median of {args.repeats}; "
              f"amortised = the optimiser's schedule {SCHEDULE} per 10 trials")
        for m, r in res.items():
            cells = "  ".join(f"{k} {r[k]['wall_s']:5.2f} s ({r[k]['cpu_s']:5.2f} cpu)" for k in SCHEDULE)
            a = r["amortised"]
            print(f"{m:16s} {cells}  amortised {a['wall_s']:5.2f} s ({a['cpu_s']:5.2f} cpu)  ratio to {base_name}: "
                  f"{a['cpu_s'] / base['cpu_s']:.2f} cpu   target <= 3 s: "
                  f"{'met' if a['wall_s'] <= 3 else 'NOT met'} amortised, "
                  f"{'met' if r['fresh']['wall_s'] <= 3 else 'NOT met'} on a fresh-fit round")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
