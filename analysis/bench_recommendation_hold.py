"""Holding the recommendation: the evaluated rule with and without ``recommendation_hold``, on the same runs.

mfbo's proposals do not depend on how it recommends (``recommendation="evaluated"``), so one run scores
every variant at every step: after each finished trial the script asks the evaluated rule for its choice
(the default, ``hold = 0``) and, for each hold in ``--holds``, keeps that variant's own held recommendation
with :func:`mfbo.optimize._recommend.hold_or_switch`. Each choice is scored by its simple regret (noise-free,
target fidelity). Paired in this way, seed noise and machine load (``effort="auto"``) move every variant
alike.

Per problem and variant it prints medians over seeds: regret at 3 / 10 / 30 FFE, cost-to-target (regret
<= 5 % of the initial-design regret, ``analysis/benchmarks/run.py``'s definition), final regret, the number
of recommendation changes, and the number of steps at which the regret rose by more than 1 % of the
initial-design regret (the recommendation got worse) although no new run at target fidelity of the
designs involved arrived. Every run is stored as one JSON file under ``OUT/runs`` and reused on a rerun.

Example (the runs in ``analysis/benchmarks/results/recommendation_hold``)::

    OMP_NUM_THREADS=1 .venv/bin/python analysis/bench_recommendation_hold.py \\
        --problems oc20_gmp mlip_si mlip_mo mlip_oc20 --seeds 10 --jobs 2 \\
        --out analysis/benchmarks/results/recommendation_hold/real
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))
import run as bench  # noqa: E402 - the benchmark's budgets, initial-design regret and thread limits


def _run(problem: str, seed: int, holds: list[float], options: dict) -> dict:
    bench._limit_threads()
    import warnings

    warnings.filterwarnings("ignore")
    import mfbo.optimize._optimizer as optimizer_module
    from mfbo.optimize import minimize
    from mfbo.optimize._recommend import hold_or_switch, recommend_evaluated
    from mfbo.optimize.problems import get_problem

    prob = get_problem(problem, seed=seed)
    original = optimizer_module.MultiFidelityOptimizer.recommend
    held: dict[float, dict | None] = {h: None for h in holds}
    steps: list[dict] = []
    last: list[dict] = []  # the picks of the latest recommend() call, until the callback records them
    cache: dict[str, float] = {}

    def regret(p: dict) -> float:
        key = json.dumps(p, sort_keys=True, default=str)
        if key not in cache:
            cache[key] = float(prob.regret(p))
        return cache[key]

    def scoring_recommend(self, refine=True):
        completed = self._completed()
        if len(completed) < 2:
            return original(self, refine)
        surrogate = self._fit(completed)
        base = recommend_evaluated(self, surrogate, completed)
        picks = {"0": base}
        for h in holds:
            held[h] = hold_or_switch(self, surrogate, held[h], base, h)
            picks[f"{h:g}"] = held[h]
        targets = sorted({json.dumps(t.params, sort_keys=True, default=str) for t in completed if self._is_target(t)})
        last[:] = [{"n": len(completed), "regret": {k: regret(v) for k, v in picks.items()},
                    "key": {k: json.dumps(v, sort_keys=True, default=str) for k, v in picks.items()},
                    "n_target_designs": len(targets), "targets": targets}]
        return base

    def callback(trial, entry) -> bool:
        if last:
            steps.append({**last.pop(), "cost_ffe": float(entry["cost_ffe"])})
        return False

    optimizer_module.MultiFidelityOptimizer.recommend = scoring_recommend
    try:
        minimize(prob, prob.space, bench.DEFAULT_BUDGETS.get(problem, 30.0), seed=seed, verify=False,
                 callback=callback, **options)
    finally:
        optimizer_module.MultiFidelityOptimizer.recommend = original
    return {"problem": problem, "seed": seed, "holds": holds, "options": options,
            "cost_ffe": [s["cost_ffe"] for s in steps],
            "steps": [{k: s[k] for k in ("n", "regret", "key", "n_target_designs")} for s in steps],
            "target_sets": [s["targets"] for s in steps]}


def _worsened(rec: dict, variant: str, tol: float) -> tuple[int, int]:
    """(changes of the recommendation, rises of its regret by more than ``tol`` while neither the old nor the
    new recommendation got a new run at target fidelity)."""
    changes = rises = 0
    steps, sets = rec["steps"], rec["target_sets"]
    for i in range(1, len(steps)):
        old, new = steps[i - 1]["key"][variant], steps[i]["key"][variant]
        if old == new:
            continue
        changes += 1
        fresh = set(sets[i]) - set(sets[i - 1])
        if steps[i]["regret"][variant] > steps[i - 1]["regret"][variant] + tol and not ({old, new} & fresh):
            rises += 1
    return changes, rises


def summarise(records: list[dict], r0: float) -> dict:
    variants = list(records[0]["steps"][0]["regret"]) if records and records[0]["steps"] else []
    out = {}
    for v in variants:
        at = {b: [] for b in (3.0, 10.0, 30.0)}
        ctt, final, changes, rises = [], [], [], []
        for rec in records:
            cost = np.asarray(rec["cost_ffe"])
            reg = np.asarray([s["regret"][v] for s in rec["steps"]])
            for b in at:
                k = np.searchsorted(cost, b, side="right") - 1
                at[b].append(float(reg[k]) if k >= 0 else r0)
            hit = np.flatnonzero(reg <= 0.05 * r0)
            ctt.append(float(cost[hit[0]]) if len(hit) else math.inf)
            final.append(float(reg[-1]))
            c, r = _worsened(rec, v, 0.01 * r0)
            changes.append(c)
            rises.append(r)
        out[v] = {"regret_at": {f"{b:g}": float(np.median(x)) for b, x in at.items()},
                  "cost_to_target_5pct": float(np.median(ctt)), "reached": int(np.isfinite(ctt).sum()),
                  "final": float(np.median(final)), "changes": float(np.median(changes)),
                  "rises_without_target_evidence": int(np.sum(rises)), "runs": len(records),
                  "per_seed_final": final, "per_seed_ctt": ctt}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--problems", nargs="+", default=["oc20_gmp", "mlip_si", "mlip_mo", "mlip_oc20"])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--holds", type=float, nargs="+", default=[0.5, 1.0, 2.0],
                    help="posterior sd of the difference a challenger must win by (0.5 1 2)")
    ap.add_argument("--options", default="{}", help="JSON options for the optimiser")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    out = Path(args.out)
    options = json.loads(args.options)
    todo = []
    for p in args.problems:
        for s in range(args.seeds):
            f = out / "runs" / p / f"seed{s}.json"
            if not f.exists():
                todo.append((p, s, f))
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futs = {pool.submit(_run, p, s, args.holds, options): f for p, s, f in todo}
        for fut in as_completed(futs):
            f = futs[fut]
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(fut.result()))
            print(f"done {f.parent.name} {f.stem}", flush=True)
    summary = {}
    for p in args.problems:
        records = [json.loads((out / "runs" / p / f"seed{s}.json").read_text()) for s in range(args.seeds)]
        r0 = bench.initial_design_regret(p, {})
        summary[p] = {"initial_design_regret": r0, "variants": summarise(records, r0)}
        print(f"\n{p} (initial-design regret {r0:.4g}; {args.seeds} seeds; medians)")
        print("hold | regret @3 / @10 / @30 FFE | cost-to-target 5 % (reached) | final | changes | rises w/o target evidence")
        for v, m in summary[p]["variants"].items():
            ra = m["regret_at"]
            print(f"{v:>4} | {ra['3']:.4g} / {ra['10']:.4g} / {ra['30']:.4g} | {m['cost_to_target_5pct']:.3g} "
                  f"({m['reached']}/{m['runs']}) | {m['final']:.4g} | {m['changes']:g} | "
                  f"{m['rises_without_target_evidence']}")
    (out / "summary.json").write_text(json.dumps({"options": options, "holds": args.holds, "problems": summary},
                                                 indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
