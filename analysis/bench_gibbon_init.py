"""Setting up MF-GIBBON: BoTorch's class against mfbo's single-draw subclass, and one whole ``ask()``.

BoTorch's ``qMultiFidelityLowerBoundMaxValueEntropy`` draws its max-value samples twice while it is
constructed and keeps the second draw; mfbo's subclass (``mfbo.optimize._acquisition._gibbon_class``)
makes only the kept draw. Both are built on the same fitted surrogate in this process, alternately: 100
observations of the two-fidelity Hartmann-6 problem (25 trials x 4 trace points), the optimiser's own
candidate set (1000 rows at ``raw_samples=512``). Prints the median construction time of each and their
ratio (subclass / BoTorch), the share of a conditioning-only ``ask()`` the saving is, and checks that
both score a pool of rows identically once given the same samples.

    OMP_NUM_THREADS=1 .venv/bin/python analysis/bench_gibbon_init.py [--repeats 10] [--threads 1]

Timings on shared machines drift: read the ratio of constructions made side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the quickstart's driver uses 1)")
    ap.add_argument("--json", help="write the numbers to this file")
    args = ap.parse_args(argv)
    import sys
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from botorch.acquisition.cost_aware import InverseCostWeightedUtility
    from botorch.acquisition.max_value_entropy_search import qMultiFidelityLowerBoundMaxValueEntropy

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_candidate_generation import _force, _optimizer_with_data

    from mfbo.optimize._acquisition import _gibbon_class, _projector
    from mfbo.optimize.problems import get_problem

    torch.set_num_threads(args.threads)
    opt = _optimizer_with_data(get_problem("hartmann6_mf", seed=0), "gibbon", n_trials=25, trace_points=4, seed=0)
    model, enc = opt.surrogate().model, opt.encoder
    cand = torch.as_tensor(opt._raw_pool(min(1000, 2 * opt.raw_samples), 17, []), dtype=torch.double)
    rows = torch.as_tensor(opt._raw_pool(opt.raw_samples, 3, []), dtype=torch.double).unsqueeze(-2)
    cost = opt.cost_model.module(scale=opt.full_fidelity_cost(), overhead=0.05)

    def build(cls):
        t0 = time.perf_counter()
        acq = cls(model, candidate_set=cand, num_mv_samples=16, project=_projector(enc),
                  cost_aware_utility=InverseCostWeightedUtility(cost_model=cost))
        return acq, time.perf_counter() - t0

    classes = {"botorch": qMultiFidelityLowerBoundMaxValueEntropy, "single_draw": _gibbon_class()}
    build(classes["botorch"])  # first-use costs out of the timings
    times: dict[str, list[float]] = {k: [] for k in classes}
    for rep in range(args.repeats):
        for name in (classes if rep % 2 == 0 else reversed(list(classes))):
            times[name].append(build(classes[name])[1])
    ours, _ = build(classes["single_draw"])
    theirs, _ = build(classes["botorch"])
    theirs.posterior_max_values = ours.posterior_max_values
    with torch.no_grad():
        same = bool(torch.allclose(ours(rows), theirs(rows)))
    asks = []
    for _ in range(max(3, args.repeats // 3)):
        _force(opt, "conditioned")
        t0 = time.perf_counter()
        (c,) = opt.ask(1)
        asks.append(time.perf_counter() - t0)
        opt.abandon(c.trial_index, "benchmark: not evaluated")
    med = {k: statistics.median(v) for k, v in times.items()}
    saved = med["botorch"] - med["single_draw"]
    out = {"threads": args.threads, "repeats": args.repeats, "n_candidate_set": len(cand),
           "n_train_rows": int(model.train_inputs[0].shape[0]), "construction_s": times,
           "median_s": med, "ratio_single_draw_over_botorch": med["single_draw"] / med["botorch"],
           "ask_conditioned_median_s": statistics.median(asks), "identical_scores": same}
    print(f"candidate set {len(cand)} rows + {out['n_train_rows']} training rows, {args.threads} torch thread(s)")
    print(f"construction: BoTorch {med['botorch']:.3f} s, single draw {med['single_draw']:.3f} s "
          f"(ratio {out['ratio_single_draw_over_botorch']:.2f})")
    print(f"a conditioning-only ask() with the single draw: {out['ask_conditioned_median_s']:.3f} s; "
          f"BoTorch's discarded draw adds {saved:.3f} s ({saved / out['ask_conditioned_median_s']:.0%} of it)")
    print(f"identical acquisition values given the same samples: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
