"""What a worker runs: one trial (or the end-of-study run) -> a result file.

These functions run in worker processes (local launcher) or on Dask workers. They
never touch the database: they write the trial's full record atomically to its result
file and return it; the driver ingests it.
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from typing import Any

from mfbo._orphan import exit_when_orphaned
from mfbo.study._records import package_versions, write_json_atomic

__all__ = ["run_trial", "run_final", "evaluate_objective"]


def _watch_driver(driver_pid: int | None, interval: float = 0.5) -> None:
    """Exit this worker when the driver dies (kill -9), so no orphan keeps computing."""
    if driver_pid:
        exit_when_orphaned(interval, watch_pid=driver_pid)


def _ignore_interrupts() -> None:
    """Ctrl-C reaches every process of the terminal's process group (Dask workers; a local trial until
    it has made its own group): a worker leaves it to its driver, which stops the study cleanly and
    cancels its trials (no worker traceback)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _prepare(spec: dict) -> Any:
    """Path, threads and driver watch for a trial; its callers have already ignored Ctrl-C."""
    for p in reversed(spec.get("python_path", [])):
        if p not in sys.path:
            sys.path.insert(0, p)
    threads = spec.get("threads")
    if threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(int(threads))
    if spec.get("watch_driver", True):
        _watch_driver(spec.get("driver_pid"))
    return pickle.loads(spec["objective"])


def evaluate_objective(objective: Any, params: dict, data_fraction: float, epochs: int) -> dict:
    """Call the objective (``.evaluate`` or a plain callable) and check its answer.

    Returns:
        ``{"curve": [float] * epochs, "cost": seconds, "records": [...], "metadata": {...}}``.

    Raises:
        ObjectiveError: the answer lacks a curve of finite-or-nan floats.
    """
    from mfbo.errors import ObjectiveError

    fn = objective.evaluate if hasattr(objective, "evaluate") else objective
    t0 = time.perf_counter()
    out = fn(dict(params), float(data_fraction), int(epochs))
    wall = time.perf_counter() - t0
    if not hasattr(out, "get") or "curve" not in out:
        raise ObjectiveError(f"objective returned {type(out).__name__} without a 'curve'")
    try:
        curve = [float(v) for v in out["curve"]]
    except (TypeError, ValueError):
        raise ObjectiveError("objective's 'curve' is not a list of numbers") from None
    if not curve:
        raise ObjectiveError("objective returned an empty curve")
    cost = out.get("cost")
    cost = float(cost) if cost is not None else wall
    return {"curve": curve, "cost": cost, "wall_time": wall, "records": list(out.get("records") or []),
            "metadata": dict(out.get("metadata") or {})}


def _base_record(spec: dict) -> dict:
    return {
        "trial_id": spec["trial_id"], "kind": spec.get("kind", "trial"), "params": spec["params"],
        "data_fraction": spec["data_fraction"], "epochs": spec["epochs"], "pid": os.getpid(),
        "batch_job": os.environ.get("SLURM_JOB_ID") or os.environ.get("PBS_JOBID"),
        "versions": package_versions(), "started_at": time.time(),
    }


def _failure(rec: dict, exc: BaseException) -> dict:
    from mfbo.errors import TrainingDiverged

    rec["status"] = "failed"
    if isinstance(exc, TrainingDiverged):
        rec["error"] = f"diverged at epoch {exc.epoch}: {exc}"
        rec["diverged"] = {"epoch": exc.epoch, "last_metrics": exc.last_metrics}
    else:
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["traceback"] = traceback.format_exc(limit=20)
    return rec


def run_trial(spec: dict) -> dict:
    """Run one trial and write its record to ``spec["result_path"]`` atomically.

    Args:
        spec: ``trial_id``, ``params``, ``data_fraction``, ``epochs``, ``objective`` (pickled bytes),
            ``result_path``, optional ``python_path``, ``threads``, ``driver_pid``.

    Returns:
        The record (also in the file): status "completed" with ``curve`` (validation metric per epoch),
        ``cost`` (s), ``records`` (per-epoch dicts), ``metadata``, ``timings``, ``versions``; or status
        "failed" with ``error``.
    """
    _ignore_interrupts()  # first: a Ctrl-C during the set-up below would print a worker traceback
    rec = _base_record(spec)
    t0 = time.perf_counter()
    try:
        objective = _prepare(spec)
        res = evaluate_objective(objective, spec["params"], spec["data_fraction"], spec["epochs"])
        rec.update(res)
        bad = [i for i, v in enumerate(res["curve"]) if not math.isfinite(v)]
        if bad:
            rec["status"] = "failed"
            rec["error"] = f"diverged: non-finite validation metric at epoch {bad[0] + 1}"
        else:
            rec["status"] = "completed"
    except Exception as exc:  # any failure of the user's objective is a failed trial, never a crash
        _failure(rec, exc)
    rec["timings"] = {"wall_time": time.perf_counter() - t0, "finished_at": time.time()}
    write_json_atomic(spec["result_path"], rec)
    return rec


def run_final(spec: dict) -> dict:
    """Retrain the recommended configuration at target fidelity; test it; save the model.

    When the objective has ``fit(params, data_fraction, epochs, test=...) -> TrainResult`` (the builtin
    backend), this trains on the study's split, evaluates on the test set and saves the model to
    ``spec["model_path"]``; other objectives get a verification run of ``evaluate`` at target fidelity
    (no model, no test metrics).
    """
    _ignore_interrupts()  # first: a Ctrl-C during the set-up below would print a worker traceback
    rec = _base_record(spec)
    t0 = time.perf_counter()
    try:
        objective = _prepare(spec)
        if callable(getattr(objective, "fit", None)) and spec.get("model_path"):
            rec.update(_final_fit(objective, spec))
        else:
            res = evaluate_objective(objective, spec["params"], spec["data_fraction"], spec["epochs"])
            rec.update(res)
            rec["train_config"] = None
            rec["test_metrics"] = None
            rec["model_path"] = None
        rec["status"] = "completed"
    except Exception as exc:
        _failure(rec, exc)
    rec["timings"] = {"wall_time": time.perf_counter() - t0, "finished_at": time.time()}
    write_json_atomic(spec["result_path"], rec)
    return rec


def _final_fit(objective: Any, spec: dict) -> dict:
    from mfbo.objectives import metric_curve

    t0 = time.perf_counter()
    result = objective.fit(spec["params"], float(spec["data_fraction"]), int(spec["epochs"]),
                           test=spec.get("test") or False)
    wall = time.perf_counter() - t0
    curve = [float(v) for v in metric_curve(result.curve, getattr(objective, "metric", spec.get("metric")))]
    result.model.save(spec["model_path"])
    config = getattr(result, "config", None)
    quality = _test_baselines(objective, spec.get("test"), result.test_metrics)
    return {
        **quality,
        "curve": curve, "cost": wall, "records": list(result.curve), "metadata": {},
        "train_config": config.to_dict() if config is not None else None,
        "test_metrics": dict(result.test_metrics) if result.test_metrics else None,
        "model_path": str(spec["model_path"]), "train_timings": dict(getattr(result, "timings", {}) or {}),
    }


def _test_baselines(objective: Any, test, test_metrics: dict | None) -> dict:
    """The trivial baselines on the test set (fitted on the study's training + validation images), the
    model's ratios to them, and the test elements no training image has."""
    datasets = getattr(objective, "datasets", None)
    if not test or not test_metrics or not callable(datasets):
        return {}
    from mfbo.training import load_images
    from mfbo.training._baselines import baseline_metrics, ratios_to_baselines, unseen_elements

    pool, val = datasets()
    images = load_images(test)
    baselines = baseline_metrics(list(pool) + list(val), images)
    return {
        "test_baselines": baselines,
        "test_ratios": ratios_to_baselines(test_metrics, baselines),
        "unseen_test_elements": unseen_elements(pool, images),
    }
