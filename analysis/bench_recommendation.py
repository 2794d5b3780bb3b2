"""Recommendation rules compared on the same runs (the trajectory does not depend on the rule).

mfbo's proposals never depend on how it recommends, so one run scores every rule at every step: after each
finished trial the script asks each rule for its recommendation and records its simple regret (noise-free,
target fidelity). Rules:

- ``A``: posterior-mean maximum over the evaluated designs and 256 Sobol designs (the anytime rule of
  earlier versions, ``recommend(refine=False)``);
- ``B``: A plus three L-BFGS-B refinements of the posterior mean (the final rule of earlier versions,
  ``recommendation="optimised"``);
- ``C``: the evaluated design with the highest posterior mean;
- ``D``: the highest mean minus one standard deviation over A's and B's candidates;
- ``E``: the evaluated design with the highest mean minus one standard deviation (``"evaluated"``, the
  default since 2026-11-26).

Per rule it prints the cost (FFE) at which the recommendation first has regret <= 5 % of the initial-design
regret (``hit``), the final regret and the mean regret over all steps (what a user stopping at a random
moment gets). Example (the runs in ``analysis/benchmarks/results/recommendation_rules.jsonl``)::

    OMP_NUM_THREADS=1 .venv/bin/python analysis/bench_recommendation.py learning_curve near 3 --budget 8 \
        --optimizer-options '{"mean_optima": 0}'

(those runs predate ``mean_optima``; ``target_separation`` came in while they ran, see each line's note).

``CONDITION``: ``none`` / ``near`` / ``far`` (the priors benchmark's priors and constraints, see
``bench_priors.py``) or ``plain`` (no prior, no constraint; any problem).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_priors as bp  # noqa: E402 - the priors benchmark's priors, constraints and threshold

import mfbo.optimize._optimizer as optimizer_module  # noqa: E402
from mfbo.optimize import minimize  # noqa: E402
from mfbo.optimize._recommend import recommend, recommend_evaluated  # noqa: E402
from mfbo.optimize.problems import get_problem  # noqa: E402
from mfbo.priors import Constraint  # noqa: E402


def _mean_std(opt, surrogate, configs):
    return opt._target_mean_std(surrogate, opt.space.encode(configs))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("problem")
    ap.add_argument("condition", choices=["none", "near", "far", "plain"])
    ap.add_argument("seed", type=int)
    ap.add_argument("--budget", type=float, default=8.0, help="FFE per run (8)")
    ap.add_argument("--optimizer-options", default="{}", help="JSON options for the optimiser, e.g. "
                    "'{\"mean_optima\": 0}'")
    ap.add_argument("--out", help="append the result as one JSON line to this file")
    args = ap.parse_args(argv)

    problem = get_problem(args.problem, seed=args.seed)
    plain = args.condition == "plain"
    constraints = [] if plain else [Constraint(c) for c in bp.CONSTRAINTS[args.problem]]
    prior = None if plain else bp.make_prior(problem, args.condition, bp.CONSTRAINTS[args.problem])
    threshold = 0.05 * bp.initial_design_regret(problem)
    steps: list[dict] = []
    original = optimizer_module.MultiFidelityOptimizer.recommend

    def scoring_recommend(self, refine=True):
        completed = self._completed()
        if len(completed) < 2:
            return original(self, refine)
        surrogate = self._fit(completed)
        a = recommend(self, surrogate, completed, n_refine=0)
        b = recommend(self, surrogate, completed, n_refine=3)
        evaluated = [t.params for t in completed]
        pool = evaluated + self.space.sample(256, seed=self.seed + 4242) + [b]
        m, s = _mean_std(self, surrogate, evaluated)
        mp, sp = _mean_std(self, surrogate, pool)
        ok_e, ok_p = self._feasible(evaluated), self._feasible(pool)
        c = evaluated[int(np.argmax(np.where(ok_e, m, -np.inf)))]
        d = pool[int(np.argmax(np.where(ok_p, mp - sp, -np.inf)))]
        e = recommend_evaluated(self, surrogate, completed)
        steps.append({k: problem.regret(v) for k, v in dict(A=a, B=b, C=c, D=d, E=e).items()})
        return a

    optimizer_module.MultiFidelityOptimizer.recommend = scoring_recommend
    costs: list[float] = []
    minimize(problem, problem.space, args.budget, seed=args.seed, prior=prior, constraints=constraints,
             callback=lambda trial, entry: costs.append(entry["cost_ffe"]) and False, verify=False,
             **json.loads(args.optimizer_options))
    optimizer_module.MultiFidelityOptimizer.recommend = original
    n = min(len(steps), len(costs))
    steps, costs = steps[-n:], costs[-n:]
    rules = {}
    for k in "ABCDE":
        seq = [s[k] for s in steps]
        hit = next((c for c, v in zip(costs, seq) if v <= threshold), None)
        rules[k] = {"hit": hit, "final": seq[-1], "mean": float(np.mean(seq))}
    line = json.dumps({"problem": args.problem, "cond": args.condition, "seed": args.seed, "thr": threshold,
                       "budget_ffe": args.budget, "optimizer_options": json.loads(args.optimizer_options),
                       "rules": rules})
    print(line)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
