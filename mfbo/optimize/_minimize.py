"""``mfbo.minimize``: one entry point for mfbo's multi-fidelity BO and the baselines.

Budget accounting (FFE = full-fidelity equivalents):

- one FFE is ``objective.full_fidelity_cost`` seconds when the objective has that attribute (every
  benchmark problem does); otherwise the learned cost model's predicted cost of one target-fidelity run
  (averaged over a fixed quasi-random sample of designs), re-estimated as the cost model is refitted;
- a call's cost is the ``"cost"`` the objective reports, else its measured wall time; failed calls are
  charged their wall time;
- a new trial starts only while ``spent + predicted cost of running trials < budget - 1`` (one FFE is kept
  for the final verification run of the recommendation at target fidelity, which is charged too);
- the optimiser's own wall time (proposals and recommendations) is measured and reported next to the
  trials' cost (``history[i]["optimizer_s"]``, ``info["optimizer_s"]``, ``info["optimizer_share"]``); it is
  not charged to the budget, which counts the objective's cost only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from mfbo.errors import ConfigError, ObjectiveError
from mfbo.optimize._space import SearchSpace
from mfbo.optimize._types import Candidate, MinimizeResult
from mfbo.optimize.baselines._common import as_callable, check_budget

__all__ = ["minimize"]


def _timed_call(fn: Callable, params: dict, data_fraction: float, epochs: int) -> tuple[Any, float, BaseException | None]:
    """Run one evaluation; returns ``(output, wall seconds, exception)`` (never raises)."""
    t0 = time.perf_counter()
    try:
        out = fn(dict(params), float(data_fraction), int(epochs))
        return out, time.perf_counter() - t0, None
    except Exception as exc:  # noqa: BLE001 - any failure of the objective becomes a failed trial
        return None, time.perf_counter() - t0, exc


def _parse_output(out: Any, wall: float) -> tuple[list[float], float, dict]:
    if not isinstance(out, Mapping) or "curve" not in out:
        raise ObjectiveError(f"the objective must return a mapping with a 'curve' list, got {type(out).__name__}")
    curve = [float(v) for v in out["curve"]]
    if not curve:
        raise ObjectiveError("the objective returned an empty 'curve'")
    cost = out.get("cost")
    cost = wall if cost is None else float(cost)
    if not math.isfinite(cost) or cost < 0:
        raise ObjectiveError(f"the objective returned an invalid cost {out.get('cost')!r}")
    meta = dict(out.get("metadata") or {})
    return curve, cost, meta


def minimize(objective: Any, space: SearchSpace | Mapping, budget: float, seed: int = 0, method: str = "mfbo",
             workers: int = 1, prior: Any = None, constraints: Sequence[Any] = (),
             callback: Callable | None = None, *, executor: str = "thread", verify: bool = True,
             max_consecutive_failures: int = 10, **optimizer_options: Any) -> MinimizeResult:
    """Minimise an expensive objective with multi-fidelity BO (or a baseline).

    Args:
        objective: ``objective(params, data_fraction, epochs) -> {"curve": [...], "cost": s (optional),
            "metadata": {...} (optional)}``, or an :class:`mfbo.objectives.Objective` (its ``evaluate``).
        space: :class:`SearchSpace` or its plain-dict form.
        budget: total budget in full-fidelity equivalents (FFE), verification run included.
        seed: seed of every random choice.
        method: "mfbo" or a baseline name (see :func:`mfbo.optimize.baselines.get_baseline`).
        workers: trials evaluated concurrently (asynchronous; pending trials are accounted for).
        prior: optional prior (``log_prob``, optionally ``sample``) for piBO and the initial design.
        constraints: objects with ``is_satisfied(configs)``; never violated by a proposal.
        callback: ``callback(trial, history_entry)`` after each completed or failed trial; returning
            True stops the optimisation (the verification run still happens).
        executor: "thread" (default) or "process" pool for ``workers > 1`` (a process pool needs a
            picklable objective).
        verify: run the recommendation once at target fidelity at the end (charged to the budget), unless
            it already ran there (that run is then its verification; ``info["verification"]["new_run"]``).
        max_consecutive_failures: stop (and raise if nothing completed) after this many failures in a row.
        **optimizer_options: passed to :class:`MultiFidelityOptimizer` (e.g. ``acquisition="kg"``).
    Returns:
        :class:`MinimizeResult` with ``best_params`` (design parameters only), every trial, ``cost_spent``
        (FFE), ``history`` (one entry per finished trial: ``cost_ffe``, ``recommended``, ``n_trials``,
        ``wall_time_s``) and ``info`` (``ffe_seconds``, ``verification``, timings; JSON-able). The
        optimiser itself (surrogate, Ax experiment) is the extra attribute ``result.optimizer``.
    """
    if method != "mfbo":
        from mfbo.optimize.baselines import get_baseline

        kwargs: dict[str, Any] = {"seed": seed, "workers": workers}
        if prior is not None:
            kwargs["prior"] = prior
        if constraints:
            kwargs["constraints"] = constraints
        if callback is not None:
            kwargs["callback"] = callback
        return get_baseline(method)(objective, space, budget, **kwargs)
    return _run_mfbo(objective, space, budget, seed, workers, prior, constraints, callback, executor, verify,
                     max_consecutive_failures, optimizer_options)


def _run_mfbo(objective, space, budget, seed, workers, prior, constraints, callback, executor, verify,
              max_consecutive_failures, optimizer_options) -> MinimizeResult:
    from mfbo.optimize._optimizer import MultiFidelityOptimizer

    budget = check_budget(budget)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a positive integer, got {workers!r}")
    if executor not in ("thread", "process"):
        raise ConfigError(f"executor must be 'thread' or 'process', got {executor!r}")
    space = SearchSpace.from_dict(space)
    fn = as_callable(objective)
    ffe_attr = getattr(objective, "full_fidelity_cost", None)
    ffe_fixed = float(ffe_attr) if isinstance(ffe_attr, (int, float)) and ffe_attr > 0 else None
    reserve = 1.0 if verify else 0.0
    # the search budget (without the verification run) drives the optimiser's cost-cooling
    options = {"budget": budget - reserve if budget > reserve else budget, **optimizer_options}
    opt = MultiFidelityOptimizer(space, seed=seed, prior=prior, constraints=constraints, **options)
    t_start = time.perf_counter()
    spent_s = 0.0
    opt_s = 0.0  # the optimiser's own wall time: proposals and recommendations
    history: list[dict] = []
    timings: list[dict] = []
    stop = False
    consecutive_failures = 0
    last_error = ""

    def unit() -> float | None:
        if ffe_fixed is not None:
            return ffe_fixed
        if opt.cost_model.n_obs == 0:
            return None
        return max(opt.full_fidelity_cost(), 1e-12)

    def spent_ffe() -> float:
        u = unit()
        return spent_s / u if u else 0.0

    def predicted_ffe(c: Candidate) -> float:
        u = unit()
        if u is None:
            return 0.0
        X = opt.encoder.encode([c.params], [c.data_fraction], [c.epochs])
        return float(opt.cost_model.predict(X)[0]) / u

    def finish(c: Candidate, out: Any, wall: float, exc: BaseException | None) -> None:
        nonlocal spent_s, stop, consecutive_failures, last_error, opt_s
        if exc is None:
            try:
                curve, cost, meta = _parse_output(out, wall)
            except ObjectiveError as bad:
                exc = bad
        if exc is not None:
            opt.tell_failed(c.trial_index, f"{type(exc).__name__}: {exc}")
            opt._trials[c.trial_index].cost = wall
            spent_s += wall
            consecutive_failures += 1
            last_error = f"{type(exc).__name__}: {exc}"
        else:
            opt.tell(c.trial_index, curve, cost, meta)
            spent_s += cost
            consecutive_failures = 0 if opt._trials[c.trial_index].status == "completed" else consecutive_failures + 1
        trial = opt._trials[c.trial_index]
        t_rec = time.perf_counter()
        try:
            recommended = opt.recommend(refine=False)
        except Exception:  # noqa: BLE001 - nothing completed yet
            recommended = None
        opt_s += time.perf_counter() - t_rec
        entry = {"cost_ffe": spent_ffe(), "recommended": recommended, "n_trials": len(opt.trials),
                 "wall_time_s": time.perf_counter() - t_start, "optimizer_s": opt_s}
        if recommended is not None:
            history.append(entry)
        if dict(opt.last_timings):
            timings.append(dict(opt.last_timings))
        if callback is not None and callback(trial, entry) is True:
            stop = True
        if consecutive_failures >= max_consecutive_failures:
            stop = True

    def can_start(running: Mapping[Any, Candidate]) -> bool:
        committed = spent_ffe() + sum(predicted_ffe(c) for c in running.values())
        return not stop and committed < budget - reserve

    def ask() -> Candidate:
        nonlocal opt_s
        t_ask = time.perf_counter()
        c = opt.ask(1)[0]
        opt_s += time.perf_counter() - t_ask
        return c

    if workers == 1:
        while can_start({}):
            c = ask()
            finish(c, *_timed_call(fn, c.params, c.data_fraction, c.epochs))
    else:
        pool_cls = ThreadPoolExecutor if executor == "thread" else ProcessPoolExecutor
        with pool_cls(max_workers=workers) as pool:
            running: dict[Future, Candidate] = {}
            while True:
                while len(running) < workers and can_start(running):
                    c = ask()
                    running[pool.submit(_timed_call, fn, c.params, c.data_fraction, c.epochs)] = c
                if not running:
                    break
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in done:
                    c = running.pop(fut)
                    finish(c, *fut.result())

    if not opt._completed():
        raise ObjectiveError(f"mfbo: no trial completed within the budget of {budget} FFE"
                             + (f"; last failure: {last_error}" if last_error else ""))
    best = opt.recommend()
    verification = None
    if verify:
        enc = opt.encoder
        frac, ep = enc.data_fraction_default(), enc.epochs_default()
        # a recommendation already run at target fidelity is not run again: that run is its verification
        key = opt._design_key(best)
        earlier = [t for t in opt._completed() if opt._design_key(t.params) == key
                   and enc.at_target(t.data_fraction, t.epochs)]
        if earlier:
            # its first target-fidelity run, scored against the prediction made before that run
            t = min(earlier, key=lambda tr: tr.index)
            prediction = opt.run_prediction(t)
        else:
            try:
                prediction = opt.predict_target(best)
            except Exception:  # noqa: BLE001 - the calibration record is optional
                prediction = None
            idx = opt.attach(best, frac, ep)
            c = Candidate(idx, best, frac, ep)
            finish(c, *_timed_call(fn, c.params, c.data_fraction, c.epochs))
            t = opt._trials[idx]
        z = None
        if prediction and prediction.get("sd", 0) > 0 and t.final_value is not None:
            z = (t.final_value - float(prediction["mean"])) / float(prediction["sd"])
        verification = {"trial_index": t.index, "status": t.status, "value": t.final_value, "cost_seconds": t.cost,
                        "new_run": not earlier,
                        "prediction": ({k: prediction[k] for k in ("mean", "sd", "model") if k in prediction}
                                       if prediction else None), "z": z}
        if history:
            history[-1]["recommended"] = dict(best)
    u = unit()
    info = {
        "ffe_seconds": u, "budget_ffe": float(budget), "verification": verification,
        "wall_time_s": time.perf_counter() - t_start, "acquisition": opt.acquisition,
        "ax_experiment": opt.experiment.name, "n_failed": sum(t.status == "failed" for t in opt.trials),
        "candidate_generation_s": [float(t.get("fit_s", 0) + t.get("acquisition_s", 0)) for t in timings],
        "optimizer_s": opt_s,
        "optimizer_share": opt_s / max(time.perf_counter() - t_start, 1e-12),
        "target_runs_z": [float(t.metadata["z"]) for t in opt.trials if "z" in t.metadata],
        "cost_model": opt.cost_model.to_dict(),
        "target_fidelity_cost_ffe": _target_share(opt, u),
        "fidelity_check": _fidelity_check_info(opt, u),
    }
    result = MinimizeResult(best_params=dict(best), trials=opt.trials, cost_spent=spent_ffe(),
                            cost_spent_seconds=spent_s, method="mfbo", history=history, info=info)
    result.optimizer = opt  # not a dataclass field: keeps asdict()/JSON dumps of the result clean
    return result


def _fidelity_check_info(opt, unit: float | None) -> dict | None:
    """The fidelity check's scores (``MultiFidelityOptimizer.fidelity_check_scores``), the number of
    target-only proposals and the FFE the trials before the first of them cost (None if there was none);
    None when the check is off."""
    if not opt.fidelity_check:
        return None
    out = dict(opt.fidelity_check_scores())
    switched = [t.index for t in opt.trials if t.metadata.get("source") == "model:target-only"]
    out["target_only_trials"] = len(switched)
    out["ffe_before_first_target_only"] = (
        sum(t.cost for t in opt.trials if t.index < switched[0]) / unit if switched and unit else None)
    return out


def _target_share(opt, unit: float | None) -> float | None:
    """FFE spent on trials run at target fidelity (both fidelities at their targets)."""
    if not unit:
        return None
    enc = opt.encoder
    tot = 0.0
    for t in opt.trials:
        at_target = (enc.data is None or np.isclose(t.data_fraction, enc.data.target)) and (
            enc.iter is None or t.epochs >= enc.iter.target)
        if at_target:
            tot += t.cost
    return tot / unit
