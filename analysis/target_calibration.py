"""How well the surrogate predicts target-fidelity values, one data set, four models.

Runs mfbo's default optimiser for ``--trials`` trials on a benchmark problem (``effort="full"``, so a seed
gives the same trials), then fits four surrogates to the same rows: BoTorch's multi-fidelity kernel and
likelihood, with the fidelity amplitude, with per-run noise, and with both. Each predicts
the noise-free target value of ``--configs`` random configurations and of the evaluated ones; the problem
knows the truth. Printed and written per model: the share of predictions within 2 sd of the truth, the
mean z (negative: the truth is better than predicted), Spearman's rank correlation, the learned
amplitude powers and the noise split (log units).

    OMP_NUM_THREADS=1 .venv/bin/python analysis/target_calibration.py --problem mlip_si --seeds 0 1 2 \
        --out analysis/benchmarks/results/amplitude_run_noise/target_calibration_mlip_si.json
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from mfbo.optimize import MultiFidelityOptimizer
from mfbo.optimize._surrogate import Surrogate, fit_surrogate
from mfbo.optimize._trace import training_rows
from mfbo.optimize.problems import get_problem

MODELS = {"botorch": (False, False), "amplitude": (True, False), "run_noise": (False, True), "both": (True, True)}


def _scores(s: Surrogate, configs: list[dict], truth: np.ndarray) -> dict:
    mean, sd = s.predict(configs)
    z = (truth - mean) / sd
    return {"within_2sd": float(np.mean(np.abs(z) < 2)), "mean_z": float(np.mean(z)),
            "spearman": float(spearmanr(mean, truth)[0])}


def measure(problem: str, seed: int, trials: int, n_configs: int) -> dict:
    p = get_problem(problem, seed=seed)
    opt = MultiFidelityOptimizer(p.space, seed=seed, budget=30.0, effort="full")
    for _ in range(trials):
        (c,) = opt.ask(1)
        out = p(c.params, data_fraction=c.data_fraction, epochs=c.epochs)
        opt.tell(c.trial_index, out["curve"], out["cost"])
    completed = opt._completed()
    X, y, runs = training_rows(opt.encoder, completed, opt.trace_points, opt.max_gp_points, with_runs=True)
    random_configs = p.space.sample(n_configs, seed=10_000 + seed)
    evaluated = [t.params for t in completed]
    truth_random = np.asarray(p.values_at_target(random_configs))
    truth_evaluated = np.asarray(p.values_at_target(evaluated))
    out = {"problem": problem, "seed": seed, "trials": trials, "rows": int(len(y)), "models": {}}
    for name, (amplitude, run_noise) in MODELS.items():
        model, log_outcome = fit_surrogate(X, y, opt.encoder, maxiter=100, amplitude=amplitude,
                                           runs=runs if run_noise else None)
        s = Surrogate(model, log_outcome, opt.encoder)
        row = {"random": _scores(s, random_configs, truth_random),
               "evaluated": _scores(s, evaluated, truth_evaluated),
               "amplitude": {k: v for k, v in s.fidelity_hyperparameters().items() if k.startswith("amplitude.")},
               "noise_sd": s.noise_sd()}
        if run_noise:
            noise = s.model.likelihood.noise_covar
            scale = float(s.model.outcome_transform.stdvs.reshape(-1)[0]) if log_outcome else 1.0
            row["run_sd"] = float(noise.run_noise.detach().sqrt()) * scale
            row["row_sd"] = float(noise.row_noise.detach().sqrt()) * scale
        out["models"][name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="mlip_si")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    results = []
    for seed in args.seeds:
        r = measure(args.problem, seed, args.trials, args.configs)
        results.append(r)
        for name, m in r["models"].items():
            extra = f"  run/row sd {m['run_sd']:.3f}/{m['row_sd']:.3f}" if "run_sd" in m else ""
            print(f"{args.problem} seed {seed} {name:10s} random: {m['random']['within_2sd']:.0%} within 2 sd, "
                  f"mean z {m['random']['mean_z']:+.2f}, rho {m['random']['spearman']:.2f} | evaluated: "
                  f"{m['evaluated']['within_2sd']:.0%}, mean z {m['evaluated']['mean_z']:+.2f}, "
                  f"rho {m['evaluated']['spearman']:.2f}{extra}", flush=True)
    for name in MODELS:
        cells = {k: np.mean([r["models"][name][k]["within_2sd"] for r in results]) for k in ("random", "evaluated")}
        rho = {k: np.mean([r["models"][name][k]["spearman"] for r in results]) for k in ("random", "evaluated")}
        print(f"{args.problem} mean over seeds {name:10s} within 2 sd random {cells['random']:.0%} "
              f"(rho {rho['random']:.2f}), evaluated {cells['evaluated']:.0%} (rho {rho['evaluated']:.2f})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"command": "analysis/target_calibration.py", "args": {
            "problem": args.problem, "seeds": args.seeds, "trials": args.trials, "configs": args.configs},
            "results": results}, indent=1))


if __name__ == "__main__":
    main()
