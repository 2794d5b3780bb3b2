"""Do priors pay off? mfbo with a prior centred near the optimum, far from it, and without one.

On the optimiser's synthetic problems with known optima (``hartmann6_mf``, ``learning_curve`` from
:mod:`mfbo.optimize.problems`), every (problem, condition, seed) runs ``mfbo.minimize(problem, space, budget,
seed, prior=..., constraints=...)``. A run's cost-to-target is the cumulative cost (FFE) at which its
recommendation first has simple regret (noise-free, target fidelity) <= 5 % of the problem's initial-design
regret (the median regret of 256 scrambled-Sobol configurations); ``inf`` if never within the budget.

Priors (:class:`mfbo.priors.ProductPrior`, built from the problem's space with a ``prior`` belief per parameter):

- ``near``: each belief centred at the optimum shifted by 0.05 of the range (a good but imperfect guess),
  width 0.15 of the range (on the parameter's own scale; the correct activation weighted 0.55);
- ``far``: centred at the optimum mirrored across the box centre (for each coordinate, the far side),
  same width: a confidently wrong prior, which piBO's decaying weight must overrule;
- ``none``: no prior.

Both ratios printed are medians of cost-to-target, ``near / none`` (target <= 0.5) and ``far / none``
(target <= 1.5), run in the same process with the same seeds. A constraint (``x1 + x2 <= 1.6`` on
Hartmann-6, ``num_layers * num_nodes <= 2048`` on the learning-curve problem; neither excludes the optimum)
is passed so the constraint path is exercised and checked (no proposal may violate it).

Example (the runs reported in docs/priors.md)::

    OMP_NUM_THREADS=1 .venv/bin/python analysis/bench_priors.py --problems hartmann6_mf \\
        --seeds 20 --budget 20 --runs-dir analysis/priors_results/runs \\
        --out analysis/priors_results/bench_priors_hartmann6_mf.json

Runs stop once the target is reached (``--no-stop`` to run every budget out); a run that never reaches it
within the budget counts as ``inf`` (censored), so a ratio with ``inf`` in the denominator is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

CONSTRAINTS = {"hartmann6_mf": ["x1 + x2 <= 1.6"], "learning_curve": ["num_layers * num_nodes <= 2048"]}


def _optimum(problem) -> dict:
    loc = getattr(problem, "optimizer_location", None)
    if loc is None:
        from mfbo.optimize.problems._synthetic import H6_ARGMIN

        loc = {f"x{i + 1}": v for i, v in enumerate(H6_ARGMIN)}
    return dict(loc)


def _belief(p, centre_unit: float, width: float = 0.15, categorical_target: Any = None) -> dict:
    """A belief centred at ``centre_unit`` (position in the parameter's own scale, 0..1)."""
    if p.type == "categorical":
        k = len(p.choices)
        w = [(0.55 if c == categorical_target else 0.45 / (k - 1)) for c in p.choices]
        return {"dist": "categorical", "weights": w}
    centre_unit = min(max(centre_unit, 0.02), 0.98)
    if p.log:
        lo, hi = math.log(p.low), math.log(p.high)
        return {"dist": "lognormal", "median": float(math.exp(lo + centre_unit * (hi - lo))),
                "log_std": float(width * (hi - lo))}
    return {"dist": "normal", "mean": float(p.low + centre_unit * (p.high - p.low)),
            "std": float(width * (p.high - p.low))}


def make_prior(problem, condition: str, constraints: list[str]):
    """The ProductPrior of a condition ("near" or "far") for a problem; None for "none"."""
    from mfbo.priors import ProductPrior

    if condition == "none":
        return None
    opt = _optimum(problem)
    space = problem.space.to_dict()
    for p in problem.space.design_parameters:
        if p.type == "categorical":
            target = opt[p.name] if condition == "near" else next(c for c in p.choices if c != opt[p.name])
            space[p.name]["prior"] = _belief(p, 0.0, categorical_target=target)
            continue
        u = float(p.to_unit(opt[p.name]))
        if condition == "near":
            c = u + (0.05 if u < 0.5 else -0.05)
        else:
            c = 0.9 if u < 0.5 else 0.1
        space[p.name]["prior"] = _belief(p, c)
    return ProductPrior(space, constraints)


def initial_design_regret(problem, n: int = 256, seed: int = 12345) -> float:
    return float(np.median([problem.regret(c) for c in problem.space.sample(n, seed=seed)]))


def run_one(name: str, condition: str, seed: int, budget: float, threshold: float,
            optimizer_options: dict | None = None, stop_at_target: bool = True) -> dict:
    from mfbo.optimize import minimize
    from mfbo.optimize.problems import get_problem
    from mfbo.priors import Constraint

    problem = get_problem(name, seed=seed)
    constraints = [Constraint(c) for c in CONSTRAINTS[name]]
    prior = make_prior(problem, condition, CONSTRAINTS[name])
    reached: list[float] = []

    def callback(trial, entry):
        # Cost-to-target is all this benchmark measures: stop a run once its recommendation reaches the target.
        rec = entry.get("recommended")
        if rec and not reached and problem.regret(rec) <= threshold:
            reached.append(float(entry["cost_ffe"]))
        return bool(reached) and stop_at_target

    t0, c0 = time.perf_counter(), time.process_time()
    result = minimize(problem, problem.space, budget, seed=seed, prior=prior, constraints=constraints,
                      callback=callback, verify=False, **(optimizer_options or {}))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    proposed = [t.params for t in result.trials]
    violations = int(sum((~c.is_satisfied(proposed)).sum() for c in constraints)) if proposed else 0
    return {"problem": name, "condition": condition, "seed": seed, "budget_ffe": budget,
            "n_trials": len(result.trials), "cost_spent_ffe": result.cost_spent,
            "final_regret": problem.regret(result.best_params), "constraint_violations": violations,
            "wall_s": wall, "cpu_s": cpu, "cost_to_target": reached[0] if reached else math.inf}


def _finite(x: Any) -> Any:
    """JSON-safe copy: inf/nan -> None (cost-to-target is inf when the target was never reached)."""
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", nargs="+", default=["hartmann6_mf", "learning_curve"])
    ap.add_argument("--conditions", nargs="+", default=["none", "near", "far"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=12.0, help="budget per run in FFE (12)")
    ap.add_argument("--target", type=float, default=0.05, help="regret threshold as a fraction of the "
                    "initial-design regret (0.05)")
    ap.add_argument("--raw-samples", type=int, default=512, help="optimiser raw pool size (512, its default)")
    ap.add_argument("--num-restarts", type=int, default=2, help="acquisition restarts (2, the default)")
    ap.add_argument("--max-gp-points", type=int, default=250, help="cap on GP training rows (250, the default)")
    ap.add_argument("--prior-beta", type=float, default=None, help="piBO strength (the optimiser's default)")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=JSON",
                    help="extra optimiser option, e.g. prior_anchor='\"none\"' (repeatable)")
    ap.add_argument("--no-stop", action="store_true", help="run every budget to the end")
    ap.add_argument("--out", help="write every number to this JSON file")
    ap.add_argument("--runs-dir", help="keep each finished run here as JSON and reuse it on a rerun with the "
                    "same settings (default: OUT's name + '.runs/' when --out is given)")
    ap.add_argument("--seed-start", type=int, default=0, help="first seed (seeds seed-start .. seed-start+seeds-1)")
    args = ap.parse_args(argv)

    from mfbo.optimize.problems import get_problem

    report: dict[str, Any] = {"budget_ffe": args.budget, "target_fraction": args.target, "seeds": args.seeds,
                              "problems": {}}
    # The same acquisition settings for every condition (the optimiser's defaults unless overridden).
    options = {"raw_samples": args.raw_samples, "num_restarts": args.num_restarts,
               "max_gp_points": args.max_gp_points}
    if args.prior_beta is not None:
        options["prior_beta"] = args.prior_beta
    for item in args.option:
        k, eq, v = item.partition("=")
        if not (eq and k):
            ap.error(f"--option {item!r}: expected KEY=JSON, e.g. prior_anchor='\"none\"'")
        try:
            options[k] = json.loads(v)
        except json.JSONDecodeError as exc:
            ap.error(f"--option {item!r}: the value after '=' is not JSON ({exc.msg}); quote strings, "
                     "e.g. prior_anchor='\"none\"'")
    report["optimizer_options"] = options
    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(args.out + ".runs") if args.out else None
    if runs_dir:
        runs_dir.mkdir(parents=True, exist_ok=True)
    for name in args.problems:
        problem = get_problem(name, seed=0)
        r0 = initial_design_regret(problem)
        threshold = args.target * r0
        runs: dict[str, list[dict]] = {c: [] for c in args.conditions}
        for seed in range(args.seed_start, args.seed_start + args.seeds):
            for cond in args.conditions:  # interleaved so load drift hits every condition alike
                key = {"problem": name, "condition": cond, "seed": seed, "budget_ffe": args.budget,
                       "threshold": threshold, "options": options, "stop_at_target": not args.no_stop}
                path = runs_dir / f"{name}-{cond}-seed{seed}.json" if runs_dir else None
                stored = json.loads(path.read_text()) if path and path.is_file() else None
                if stored and stored.get("key") == _finite(key):
                    rec = stored["record"]
                    rec["cost_to_target"] = math.inf if rec["cost_to_target"] is None else rec["cost_to_target"]
                else:
                    rec = run_one(name, cond, seed, args.budget, threshold, options, not args.no_stop)
                    if path:  # a killed benchmark keeps every finished run
                        path.write_text(json.dumps(_finite({"key": key, "record": rec})))
                runs[cond].append(rec)
                print(f"{name:<15} {cond:<5} seed {seed}: cost-to-target {rec['cost_to_target']:.2f} FFE, "
                      f"final regret {rec['final_regret']:.4f}, {rec['n_trials']} trials, "
                      f"{rec['wall_s']:.0f} s wall / {rec['cpu_s']:.0f} s CPU, "
                      f"violations {rec['constraint_violations']}", file=sys.stderr, flush=True)
        med = {c: float(np.median([r["cost_to_target"] for r in rs])) for c, rs in runs.items()}
        ratios, bounds = {}, {}
        if "none" in med:
            for c in ("near", "far"):
                if c not in med:
                    continue
                if math.isfinite(med["none"]):
                    ratios[f"{c}/none"], bounds[f"{c}/none"] = med[c] / med["none"], "="
                elif math.isfinite(med[c]):
                    # no prior never reached the target: its cost-to-target exceeds the budget
                    ratios[f"{c}/none"], bounds[f"{c}/none"] = med[c] / args.budget, "<"
                else:
                    ratios[f"{c}/none"], bounds[f"{c}/none"] = math.nan, "both censored"
        report["problems"][name] = {"initial_design_regret": r0, "threshold": threshold,
                                    "median_cost_to_target_ffe": med, "ratios": ratios, "ratio_kind": bounds,
                                    "runs": runs}
        print(f"{name}: median cost-to-target (FFE) " + ", ".join(f"{c} {v:.2f}" for c, v in med.items()))
        for k, v in ratios.items():
            goal = 0.5 if k.startswith("near") else 1.5
            print(f"{name}: {k} {bounds[k]} {v:.2f}  (target <= {goal})")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(_finite(report), fh, indent=1)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
