"""Signals that might tell when the fidelity-discrepancy term helps, per benchmark problem.

    .venv/bin/python analysis/discrepancy_switch_signals.py [--problems P ...] [--seeds 5] [--trials 16]
        [--json OUT]

``fidelity_discrepancy=True`` lowers the regret on the problems made of real trainings (oc20_gmp,
mlip_si, mlip_mo, mlip_oc20) and raises it on the synthetic and YAHPO ones (docs/optimize.md, "Fidelity
discrepancy"). An automatic switch needs a signal a study can observe that separates the two groups.
This measures, per problem and seed:

- rank signals from full-epoch runs of 20 random designs, each at a random data fraction (log-uniform
  over the fidelity's range): Spearman's rho between the loss after a quarter of the epochs and at the
  end (``early_late``, observable in any study), between the end of those runs and the noise-free
  target value (``late_target``, the data fraction's effect: not observable without target runs);
- the default surrogate's learned observation noise (standardised units) and fidelity hyperparameters
  after ``--trials`` trials of a default ``MultiFidelityOptimizer`` (``noise``, ``fidelity.*``).

It prints, per problem, the median and range over seeds of each signal; ``--json`` writes every value.
A signal would serve only if the two groups' ranges did not overlap.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np

REAL = ("oc20_gmp", "mlip_si", "mlip_mo", "mlip_oc20")
SYNTHETIC = ("hartmann6_mf", "learning_curve", "yahpo_lcbench", "yahpo_rbv2_xgboost")


def rank_signals(name: str, seed: int, n_designs: int = 20) -> dict:
    """Spearman's rho of early against final loss, and final loss against the target value."""
    from scipy.stats import spearmanr

    from mfbo.optimize.problems import get_problem

    problem = get_problem(name, seed=seed)
    data, iters = problem.space.data_fidelity, problem.space.iteration_fidelity
    rng = np.random.default_rng(seed)
    epochs = int(iters.high) if iters is not None else 1
    early, late, target = [], [], []
    for params in problem.space.sample(n_designs, seed=seed):
        fraction = float(np.exp(rng.uniform(np.log(data.low), 0.0))) if data is not None else 1.0
        curve = problem(params, data_fraction=fraction, epochs=epochs)["curve"]
        early.append(curve[max(0, epochs // 4 - 1)])
        late.append(curve[-1])
        target.append(problem.value_at_target(params))
    return {"early_late": float(spearmanr(early, late)[0]), "late_target": float(spearmanr(late, target)[0])}


def surrogate_signals(name: str, seed: int, n_trials: int) -> dict:
    """Learned noise and fidelity hyperparameters of the default surrogate after ``n_trials`` trials."""
    from mfbo.optimize import MultiFidelityOptimizer
    from mfbo.optimize.problems import get_problem

    problem = get_problem(name, seed=seed)
    opt = MultiFidelityOptimizer(problem.space, seed=seed, budget=30.0)
    for _ in range(n_trials):
        cand = opt.ask(1)[0]
        out = problem(cand.params, data_fraction=cand.data_fraction, epochs=cand.epochs)
        opt.tell(cand.trial_index, out["curve"], out["cost"])
    surrogate = opt.surrogate()
    out = {"noise": float(surrogate.model.likelihood.noise.detach().reshape(-1)[0])}
    out.update({f"fidelity.{k}": float(v) for k, v in surrogate.fidelity_hyperparameters().items()})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", nargs="+", default=[*REAL, *SYNTHETIC])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=16)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    results = {}
    for name in args.problems:
        rows = [{**rank_signals(name, seed), **surrogate_signals(name, seed, args.trials)} for seed in range(args.seeds)]
        results[name] = rows
        group = "real" if name in REAL else "synthetic"
        cells = []
        for key in rows[0]:
            vals = np.array([r[key] for r in rows if key in r])
            cells.append(f"{key} {np.median(vals):.3g} [{vals.min():.3g}, {vals.max():.3g}]")
        print(f"{name} ({group}): " + "; ".join(cells), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"seeds": args.seeds, "trials": args.trials, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
