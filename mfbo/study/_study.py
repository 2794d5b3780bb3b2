"""The Study: a directory, a store, a driver loop, and the end-of-study retraining.

The driver is the only writer of the database. Its loop: poll the launcher, ingest
finished trials (result file -> DB row -> optimiser ``tell`` -> Ax experiment saved),
check the failure rate and the budget, ``ask`` for as many candidates as there are free
workers, record each as "running" in the DB *before* submitting it, and submit. A driver
killed at any point loses nothing: on resume, results written by workers are ingested,
trials still "running" without a result are marked abandoned, the optimiser is rebuilt
from the recorded trials (attach + tell), and budget accounting continues from the DB.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import pickle
import signal
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mfbo.errors import MfboError, StudyError
from mfbo.study._config import StudyConfig, check_output_dir, load_study_file
from mfbo.study._errors import StudyInterrupted, StudyStopped
from mfbo.study._launchers import Launcher, make_launcher
from mfbo.study._records import read_json, result_path, write_json_atomic, write_json_new
from mfbo.study._storage import StudyStore, _password, redact_url, resolve_url, scrub

__all__ = ["Study"]

_STUDY_JSON = "study.json"
_SECRET = ".storage_url"
_OBJECTIVE_PKL = "objective.pkl"
_POLL_S = 0.2
_PROGRESS_EVERY_S = 30.0
# The recommendation shown in progress reports is refreshed at most every _REFRESH_EVERY_S while trials
# run, the Ax record at most every _AX_REFRESH_EVERY_S; both always at the end (or when the driver stops).
# Both are views of the trial rows, which are written at once (a resumed study rebuilds both from them),
# and every refresh is optimiser time a free worker waits for. The Ax record is written rarely because
# each write costs per finished trial (figures in StudyStore.save_experiment); `mfbo status` and the
# report read the trial rows.
_REFRESH_EVERY_S = 30.0
_AX_REFRESH_EVERY_S = 300.0


def _now() -> float:
    return time.time()


class Study:
    """A multi-fidelity BO study whose state lives in a directory and a database.

    Create one from a study file (:meth:`from_file`), from objects (:meth:`create`), or reopen an
    existing directory (:meth:`load`); :meth:`run` runs or resumes it.

    Args:
        config: a validated :class:`StudyConfig`.
        objective: the objective object (only for studies created from objects; otherwise built from
            the config).
        optimizer_factory: callable ``factory(space, seed=..., prior=..., constraints=...)`` returning an
            ask/tell optimiser; default :class:`mfbo.optimize.MultiFidelityOptimizer`.
        launcher: a :class:`~mfbo.study.Launcher`; default from the config's ``[execution]`` table.
    """

    def __init__(self, config: StudyConfig, *, objective: Any = None, optimizer_factory: Any = None,
                 launcher: Launcher | None = None):
        self.config = config
        self.dir = Path(config.output)
        self._objective = objective
        self._optimizer_factory = optimizer_factory
        self._launcher = launcher
        self._store: StudyStore | None = None
        self._uid: str | None = None
        self._meta: dict | None = None
        self._readonly = False
        self._replayed: Any = None
        self._checked: dict | None = None
        if (self.dir / _STUDY_JSON).is_file():
            self._meta = read_json(self.dir / _STUDY_JSON)
            self._uid = self._meta["uid"]

    # -- constructors ------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> Study:
        """A study from a TOML study file (validated up front; see ``docs/study.md``)."""
        return cls(load_study_file(path), **kwargs)

    @classmethod
    def create(cls, output: str | os.PathLike, objective: Any, space: Mapping | Any, *,
               budget_ffe: float | None = None, budget_wall_time: float | None = None, name: str | None = None,
               workers: int = 1, seed: int = 0, storage_url: str | None = None, executor: str = "local",
               dask: dict | None = None, trial_timeout: float | None = None, max_failure_rate: float = 0.5,
               optimizer_options: dict | None = None, final: bool = True, **kwargs: Any) -> Study:
        """A study from Python objects.

        Args:
            output: the study directory.
            objective: an :class:`mfbo.objectives.Objective` or ``callable(params, data_fraction, epochs)``
                (picklable; it is stored in the study directory so the study can be resumed).
            space: search space in plain-dict form (with fidelity parameters) or a ``SearchSpace``.
            budget_ffe: budget in full-fidelity-equivalent evaluations; budget_wall_time: in seconds.
            Other arguments as in the study file (``docs/study.md``).
        """
        from mfbo.optimize import SearchSpace

        if budget_ffe is None and budget_wall_time is None:
            raise StudyError("give budget_ffe and/or budget_wall_time")
        space_dict = space.to_dict() if isinstance(space, SearchSpace) else dict(space)
        out = Path(output).resolve()
        check_output_dir(f"study {name or out.name}", out, create=False)
        config = StudyConfig(
            name=name or out.name, output=out, seed=seed, backend="object", space=space_dict,
            budget_ffe=budget_ffe, budget_wall_time=budget_wall_time, workers=workers, executor=executor,
            dask=dict(dask or {}), trial_timeout=trial_timeout, max_failure_rate=max_failure_rate,
            storage_url=storage_url, optimizer_options=dict(optimizer_options or {}), final_enabled=final,
            **kwargs)
        return cls(config, objective=objective)

    @classmethod
    def load(cls, directory: str | os.PathLike, *, readonly: bool = False, **kwargs: Any) -> Study:
        """Reopen the study in ``directory`` (to resume it, or read trials, best, surrogate).

        Args:
            readonly: only read (never create tables; :meth:`run` refuses).
        """
        d = Path(directory).resolve()
        meta_path = d / _STUDY_JSON
        if not meta_path.is_file():
            raise StudyError(f"{d} is not a study directory (no {_STUDY_JSON}); start one with 'mfbo run STUDY'")
        meta = read_json(meta_path)
        cfg = dict(meta["config"])
        cfg["output"] = str(d)
        secret = d / _SECRET
        cfg["storage_url"] = secret.read_text().strip() if secret.is_file() else meta.get("storage_url")
        config = StudyConfig.from_dict(cfg)
        objective = kwargs.pop("objective", None)
        if objective is None and config.backend == "object":
            objective = _load_objective_pickle(d / _OBJECTIVE_PKL, config)
        study = cls(config, objective=objective, **kwargs)
        study._readonly = readonly
        return study

    # -- storage -------------------------------------------------------------------------
    @property
    def uid(self) -> str | None:
        return self._uid

    @property
    def storage_url(self) -> str:
        """The resolved storage URL, password redacted."""
        return redact_url(resolve_url(self.config.storage_url, self.dir))

    def _open_store(self, readonly: bool = False) -> StudyStore:
        if self._store is None:
            if self._uid is None:
                raise StudyError(f"study {self.config.name} has not been started (no {self.dir / _STUDY_JSON})")
            self._store = StudyStore(resolve_url(self.config.storage_url, self.dir), self._uid,
                                     readonly=readonly)
        return self._store

    def _initialise(self) -> None:
        """First run (the driver lock held): the secret URL file if needed, the DB rows, then study.json
        (redacted), created only if absent."""
        if (self.dir / _STUDY_JSON).exists():
            raise StudyError(f"{self.dir} already holds a study (created by another 'mfbo run' meanwhile); "
                             f"continue it with 'mfbo resume {self.dir}' or choose another [study] output")
        url_written = self.config.storage_url
        url = resolve_url(url_written, self.dir)  # fails early when env:VAR is unset
        self._uid = uuid.uuid4().hex
        if url_written and not url_written.startswith("env:") and _password(url_written):
            secret = self.dir / _SECRET
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(url_written)
        if self.config.backend == "object":
            try:
                blob = pickle.dumps(self._objective)
            except Exception as exc:
                raise StudyError(f"the objective cannot be pickled (needed to run it in worker processes): "
                                 f"{exc}") from None
            (self.dir / _OBJECTIVE_PKL).write_bytes(blob)
        self._store = StudyStore(url, self._uid)
        cfg = self.config.to_dict()
        self._store.create_study(self.config.name, cfg, {"status": "created", "elapsed_s": 0.0, "sessions": 0})
        self._meta = {"uid": self._uid, "name": self.config.name, "created": _now(), "config": cfg,
                      "storage_url": redact_url(url_written) if url_written else None,
                      "ax_experiment": f"mfbo-{self.config.name}-{self._uid[:8]}"}
        try:
            write_json_new(self.dir / _STUDY_JSON, self._meta)
        except FileExistsError:
            raise StudyError(f"{self.dir} already holds a study (created by another 'mfbo run' meanwhile); "
                             f"continue it with 'mfbo resume {self.dir}'") from None

    # -- reading -------------------------------------------------------------------------
    def trial_rows(self, kind: str | None = "trial") -> list[dict]:
        """The raw trial rows (dicts) recorded in the database."""
        return self._open_store(readonly=True).trials(kind)

    @property
    def trials(self) -> list:
        """Every recorded trial as :class:`mfbo.optimize.Trial` (index = study trial id)."""
        from mfbo.optimize import Trial

        out = []
        for r in self.trial_rows():
            rec = r["record"] or {}
            out.append(Trial(index=r["trial_id"], params=r["params"], data_fraction=r["data_fraction"],
                             epochs=r["epochs"], curve=list(r["curve"] or []), cost=r["cost_s"],
                             status=r["status"], error=r["error"],
                             metadata={"cost_ffe": r["cost_ffe"], "records": rec.get("records"),
                                       "timings": rec.get("timings"), "versions": rec.get("versions"),
                                       "metadata": rec.get("metadata")}))
        return out

    def status(self) -> dict:
        """A snapshot: trial counts, best so far, budget used, state (safe to call while it runs)."""
        store = self._open_store(readonly=True)
        state = store.state()
        rows = store.trials("trial", light=True)
        counts = {s: sum(r["status"] == s for r in rows) for s in ("running", "completed", "failed", "abandoned")}
        used = sum(r["cost_ffe"] for r in rows if r["status"] in ("completed", "failed"))
        best = _best_so_far(_best_row(rows, self._targets_from_rows()), state.get("recommendation"))
        status = state.get("status")
        if status == "running" and not _driver_alive(self.dir):
            status = "interrupted"  # the driver died (crash, kill -9): `mfbo resume DIR` continues it
        return {
            "name": self.config.name, "dir": str(self.dir), "status": status,
            "stop_reason": state.get("stop_reason"), "trials": counts,
            "budget": {"ffe_used": used, "ffe_budget": self.config.budget_ffe,
                       "wall_time_used_s": state.get("elapsed_s", 0.0),
                       "wall_time_budget_s": self.config.budget_wall_time,
                       **optimizer_time(state.get("optimizer_s", 0.0), state.get("elapsed_s", 0.0),
                                        counts["completed"] + counts["failed"])},
            "best_so_far": best, "recommendation": state.get("recommendation"),
            "calibration": state.get("calibration"), "storage": self.storage_url, "executor": self.config.executor,
            "workers": self.config.workers, "best_json": str(self.dir / "best.json")
            if (self.dir / "best.json").is_file() else None,
        }

    def _targets_from_rows(self) -> dict | None:
        st = (self._meta or {}).get("targets")
        if st:
            return st
        try:
            state = self._open_store(readonly=True).state()
        except MfboError:
            return None
        return state.get("targets")

    def best(self) -> dict:
        """``best.json`` when the study finished; otherwise the best trial so far (``"final": False``)."""
        p = self.dir / "best.json"
        if p.is_file():
            return read_json(p)
        rows = self.trial_rows()
        b = _best_row(rows, self._targets_from_rows())
        if b is None:
            rec = self._open_store(readonly=True).state().get("recommendation")
            if not rec:
                raise StudyError(f"study {self.config.name} has no completed trial yet")
            # no target-fidelity result yet: the recommendation, with its predicted value
            return {"params": rec["params"], "train_config": None, "test_metrics": None, "model_path": None,
                    "final": False, "best_trial": None, "prediction": rec.get("prediction")}
        return {"params": b["params"], "train_config": None, "test_metrics": None, "model_path": None,
                "final": False, "best_trial": b}

    def optimizer(self) -> Any:
        """A fresh optimiser rebuilt from every finished trial recorded so far (attach + tell)."""
        if self._replayed is None:
            objective = self._objective
            if objective is None and self.config.backend not in ("builtin", "amptorch"):
                objective = _try_build_objective(self.config, self.dir)
            space, prior, constraints = self._space(objective)
            opt = self._make_optimizer(space, prior, constraints)
            _replay(opt, [r for r in self.trial_rows() if r["status"] != "running"])
            self._replayed = (opt, space, prior)
        return self._replayed[0]

    def surrogate(self) -> Any:
        """The surrogate fitted to every recorded trial, as a :class:`mfbo.inspect.SurrogateView`.

        Returns:
            a view with ``predict(params, fidelity) -> (mean, sd)``, ``importance()`` and one
            ``plot_*`` method per report figure (matplotlib Figures, for notebooks).
        """
        from mfbo.inspect import SurrogateView, metric_label

        optimizer = self.optimizer()
        return SurrogateView(self.space, self.trials, optimizer.surrogate(), prior=self.prior,
                             objective_name=metric_label(self.config.metric), seed=self.config.seed,
                             experiment=getattr(optimizer, "experiment", None))

    @property
    def space(self) -> Any:
        """The study's :class:`~mfbo.optimize.SearchSpace` (design parameters and fidelities)."""
        self.optimizer()
        return self._replayed[1]

    @property
    def prior(self) -> Any:
        """The joint prior of the study's prior files (None without)."""
        self.optimizer()
        return self._replayed[2]

    @property
    def experiment(self) -> Any:
        """The Ax experiment of the rebuilt optimiser (every finished trial, arm and observation)."""
        return getattr(self.optimizer(), "experiment", None)

    # -- building --------------------------------------------------------------------------
    def _space(self, objective: Any):
        from mfbo.study._setup import build_space

        return build_space(self.config, objective)

    def _make_optimizer(self, space, prior, constraints):
        from mfbo.study._setup import build_optimizer

        return build_optimizer(self.config, space, prior, constraints, factory=self._optimizer_factory)

    # -- running -----------------------------------------------------------------------------
    def check(self) -> dict:
        """Everything :meth:`run` checks before it writes (data, base config, objective, priors, space,
        optimiser options, storage), writing nothing into the study directory.

        Returns:
            what the checks loaded (the data split and base TrainConfig), reused by :meth:`run`.

        Raises:
            MfboError: naming the file and field at fault; StudyError when the directory already holds
                a study.
        """
        from mfbo.study._setup import check_study

        if self._uid is not None:
            raise StudyError(f"{self.dir} already holds a study; continue it with 'mfbo resume {self.dir}' "
                             "or choose another [study] output")
        check_output_dir(f"study {self.config.name}", self.dir, create=False)
        self._checked = check_study(self.config, self._objective, self._optimizer_factory)
        return self._checked

    def run(self, *, progress: bool = True, progress_every: float = _PROGRESS_EVERY_S) -> dict:
        """Run the study (or resume it) until its budget is spent, then retrain and test the best.

        A new study is checked completely (:meth:`check`) before its directory is created. SIGTERM
        (a scheduler's walltime, ``qdel``/``scancel``) and Ctrl-C stop the driver cleanly: running
        trials are abandoned (cost 0), the stop is logged, and :class:`StudyInterrupted` says how to
        resume.

        Args:
            progress: show progress on stderr: a live bar on a terminal, otherwise a plain line every
                ``progress_every`` seconds (the same line goes to ``study.log`` in any case).
            progress_every: seconds between plain progress lines.

        Returns:
            The status snapshot (see :meth:`status`) with ``"best"`` (best.json's content) when it finished.

        Raises:
            StudyStopped: too many trials failed (the reason names the last error).
            StudyInterrupted: stopped by SIGTERM or Ctrl-C (exit code 143 / 130 in the CLI).
        """
        if self._readonly:
            raise StudyError(f"study {self.config.name} was loaded read-only; load it without readonly=True to run")
        with _StopSignals() as stop:
            try:
                return self._run(progress, progress_every)
            except (KeyboardInterrupt, _Terminated) as exc:
                name = "Ctrl-C (SIGINT)" if isinstance(exc, KeyboardInterrupt) else exc.name
                code = 130 if isinstance(exc, KeyboardInterrupt) else 128 + exc.signum
                where = (f"continue with 'mfbo resume {self.dir}'" if self._uid is not None
                         else "nothing was started")
                raise StudyInterrupted(f"study {self.config.name} stopped by {name}; every finished trial is "
                                       f"kept; {where}", code) from None
            finally:
                stop.ignore()  # no second signal interrupts the clean-up

    def _run(self, progress: bool, progress_every: float) -> dict:
        checked = None
        if self._uid is None:
            checked = self._checked or self.check()
            check_output_dir(f"study {self.config.name}", self.dir)  # creates it
        self._replayed = None
        lock = _DriverLock(self.dir)
        lock.acquire()
        try:
            if self._uid is None:
                self._initialise()
            driver = _Driver(self, progress=progress, progress_every=progress_every, checked=checked)
            try:
                driver.run()
            finally:
                driver.close()
                driver.store.end_session()
        finally:
            lock.release()
        out = self.status()
        if (self.dir / "best.json").is_file():
            out["best"] = read_json(self.dir / "best.json")
        return out


class _Terminated(BaseException):
    """Raised in the driver's main thread by a SIGTERM/SIGHUP handler (like KeyboardInterrupt for SIGINT)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.name = signal.Signals(signum).name


class _StopSignals:
    """While a study runs: SIGTERM and SIGHUP raise :class:`_Terminated` in the main thread (SIGINT keeps
    raising KeyboardInterrupt); :meth:`ignore` makes all three be ignored during the clean-up; the
    previous handlers come back on exit. Does nothing outside the main thread."""

    _SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def __init__(self):
        self.saved: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, _frame):
                raise _Terminated(signum)

            for sig in self._SIGNALS:
                self.saved[sig] = signal.getsignal(sig)
                if sig != signal.SIGINT:
                    signal.signal(sig, handler)
        return self

    def ignore(self):
        for sig in self.saved:
            signal.signal(sig, signal.SIG_IGN)

    def __exit__(self, *exc):
        for sig, h in self.saved.items():
            signal.signal(sig, h if h is not None else signal.SIG_DFL)
        return False


class _DriverLock:
    """An flock on ``driver.lock``: one driver per study; released by the OS if the driver is killed."""

    def __init__(self, d: Path):
        self.path = d / "driver.lock"
        self.fh = None

    def acquire(self):
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            pid = self.fh.read().strip()
            self.fh.close()
            raise StudyError(f"another driver (pid {pid or '?'}) is running the study in {self.path.parent}; "
                             "wait for it or stop it first") from None
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(str(os.getpid()))
        self.fh.flush()

    def release(self):
        if self.fh is not None:
            fcntl.flock(self.fh, fcntl.LOCK_UN)
            self.fh.close()
            self.fh = None


def _driver_alive(d: Path) -> bool:
    """Whether a driver holds the study's lock right now."""
    path = d / "driver.lock"
    if not path.is_file():
        return False
    try:
        fh = open(path)  # read-only: works on a read-only copy or mount of the study
    except OSError:
        return False
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False


def _load_objective_pickle(path: Path, config: StudyConfig) -> Any:
    for p in config.python_path:
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    try:
        return pickle.loads(path.read_bytes())
    except Exception as exc:
        raise StudyError(f"cannot load the study's objective from {path}: {type(exc).__name__}: {exc}") from None


def _try_build_objective(config: StudyConfig, d: Path) -> Any:
    from mfbo.study._setup import build_objective, prepare_data

    try:
        return build_objective(config, prepare_data(config, d))
    except MfboError:
        return None


def _best_row(rows: list[dict], targets: Mapping | None) -> dict | None:
    """Best completed trial at target fidelity, or None when no trial ran there (a result at a lower
    fidelity is not a result for the target: a 1-epoch loss is not comparable with a 20-epoch one)."""
    done = [r for r in rows if r["status"] == "completed" and r["value"] is not None]
    if targets:
        done = [r for r in done if math.isclose(r["data_fraction"], targets.get("data_fraction", r["data_fraction"]))
                and (targets.get("epochs") is None or r["epochs"] == targets["epochs"])]
    if not done:
        return None
    b = min(done, key=lambda r: r["value"])
    return {"trial_id": b["trial_id"], "value": b["value"], "params": b["params"],
            "data_fraction": b["data_fraction"], "epochs": b["epochs"], "at_target": True}


def optimizer_time(optimizer_s: float, wall_s: float, n_trials: int) -> dict:
    """The optimiser's own wall time beside the study's.

    Returns:
        ``optimizer_s`` (s, every session), ``optimizer_share`` (of the study's wall time ``wall_s``; None
        before any time passed) and ``optimizer_s_per_trial`` (s per finished trial; None before one).
    """
    return {"optimizer_s": float(optimizer_s),
            "optimizer_share": float(optimizer_s) / wall_s if wall_s > 0 else None,
            "optimizer_s_per_trial": float(optimizer_s) / n_trials if n_trials else None}


def optimizer_share_text(optimizer_s: float, wall_s: float, n_trials: int) -> str:
    """``"12 % of the wall time, 0.8 s per trial"`` for logs and ``mfbo status``."""
    t = optimizer_time(optimizer_s, wall_s, n_trials)
    parts = []
    if t["optimizer_share"] is not None:
        parts.append(f"{100 * t['optimizer_share']:.0f} % of the wall time")
    if t["optimizer_s_per_trial"] is not None:
        parts.append(f"{t['optimizer_s_per_trial']:.2f} s per trial")
    return ", ".join(parts) or "no time yet"


def _best_so_far(best: dict | None, recommendation: Mapping | None) -> dict | None:
    """``status()["best_so_far"]``: the best target-fidelity result, or, before one exists, a record that
    says so (``"value": None, "at_target": False``) with the optimiser's recommendation and its predicted
    target-fidelity value (``"prediction": {"mean", "sd"}``), or None before any trial completed."""
    if best is not None:
        return best
    if not recommendation:
        return None
    return {"trial_id": None, "value": None, "at_target": False, "params": recommendation.get("params"),
            "prediction": recommendation.get("prediction"), "data_fraction": None, "epochs": None,
            "note": "no target-fidelity result yet; params is the recommendation and prediction its "
                    "predicted target-fidelity value"}


def best_so_far_text(best: Mapping | None, fmt: str = ".4g") -> str:
    """One line for progress and status: the best target-fidelity result, or the recommendation's
    prediction while no trial has run at target fidelity."""
    if not best:
        return "best -"
    if best.get("at_target", True) and best.get("value") is not None:
        trial = f" (trial {best['trial_id']})" if best.get("trial_id") is not None else ""
        return f"best at target {best['value']:{fmt}}{trial}"
    pred = best.get("prediction") or {}
    if pred.get("mean") is not None:
        return (f"no target-fidelity result yet; recommendation predicted {pred['mean']:{fmt}} "
                f"± {pred.get('sd', float('nan')):.2g} at target")
    return "no target-fidelity result yet"


def _replay(opt: Any, rows: list[dict]) -> dict[int, int]:
    """Rebuild an optimiser from recorded trials (attach + tell/tell_failed/abandon); trial_id -> index."""
    mapping = {}
    for r in rows:
        idx = opt.attach(r["params"], r["data_fraction"], r["epochs"])
        mapping[r["trial_id"]] = idx
        if r["status"] == "completed":
            md = (r["record"] or {}).get("metadata") or {}
            _safe_tell(opt, idx, list(r["curve"]), float(r["cost_s"]), md)
        elif r["status"] == "failed":
            opt.tell_failed(idx, r["error"] or "failed")
        else:
            opt.abandon(idx, r["error"] or "abandoned")
    return mapping


def _safe_tell(opt: Any, idx: int, curve: list, cost: float, metadata: Mapping, log: Any = None) -> None:
    """tell(); if the optimiser refuses the observation, record the trial as failed there instead (the
    study's own record keeps it), so one odd result can never make a study impossible to resume."""
    try:
        opt.tell(idx, curve, cost, metadata)
    except MfboError as exc:
        if log is not None:
            log.error("optimiser refused trial result (index %d): %s", idx, exc)
        opt.tell_failed(idx, f"optimiser refused the result: {exc}")


class _Driver:
    """One session of the driver loop (see the module docstring)."""

    def __init__(self, study: Study, progress: bool, progress_every: float = _PROGRESS_EVERY_S,
                 checked: dict | None = None):
        self.study = study
        self.cfg = study.config
        self.dir = study.dir
        self.progress = progress
        self.progress_every = float(progress_every)
        self.checked = checked or {}
        self.last_line = -math.inf
        self.elapsed_before: float | None = None  # known once _setup has read the stored state
        # The optimiser's own wall time (ask, tell, recommendations, rebuilding on resume, saving its Ax
        # record), earlier sessions' from the stored state plus this one's: the driver does nothing else
        # while it runs, so free workers wait for it.
        self.optimizer_before = 0.0
        self.optimizer_session_s = 0.0
        self.store = study._open_store()
        self.log = _make_logger(self.dir, study.uid)
        self.url = self.store.url
        self.launcher: Launcher | None = None
        self.bar = None
        self.running: dict[int, dict] = {}  # trial_id -> row-ish info
        self.idx: dict[int, int] = {}  # trial_id -> optimiser index
        self.ax_error: str | None = None
        self._ax_dirty = False
        self._ax_saved: dict | None = None  # trial index -> status as last saved, for self._ax_saved_for
        self._ax_saved_for: Any = None
        self._ax_saved_at = time.monotonic()  # the first save after _AX_REFRESH_EVERY_S, or at the end
        self._rec: dict | None = None  # the recommendation with its standing, for progress and status
        self._rec_n: int | None = None  # completed trials when it was made
        self._rec_at = -math.inf
        self._threads_before: int | None = None

    # -- setup ---------------------------------------------------------------------------
    def _setup(self):
        from mfbo.study._setup import base_train_config, build_setup, prepare_data

        cfg = self.cfg
        base = self.checked["base"] if "base" in self.checked else base_train_config(cfg)
        self.data = prepare_data(cfg, self.dir, self.checked.get("split"), base)
        setup = build_setup(cfg, self.data, self.study._objective, self.study._optimizer_factory)
        self.study._objective = self.objective = setup.objective
        self.blob = setup.blob
        self.space = setup.space
        self.targets = self.space.target_fidelities()
        self.df_name = self.space.data_fidelity.name if self.space.data_fidelity else None
        self.ep_name = self.space.iteration_fidelity.name if self.space.iteration_fidelity else None
        self.opt = setup.optimizer
        exp = getattr(self.opt, "experiment", None)
        self.ax_name = self.study._meta["ax_experiment"]
        if exp is not None:
            try:
                exp.name = self.ax_name
            except Exception as exc:  # an experiment that refuses renaming keeps its own name
                self.log.warning("cannot rename the Ax experiment: %s", exc)
                self.ax_name = exp.name
        st = self.store.state()
        self.elapsed_before = float(st.get("elapsed_s", 0.0))
        self.optimizer_before = float(st.get("optimizer_s", 0.0))
        # After a stop for failures, one trial at a time until one completes: a cause left unfixed costs one
        # more failed trial, not a new round of them.
        self.probe = st.get("status") == "stopped"
        self.store.set_state(status="running", stop_reason=None, sessions=int(st.get("sessions", 0)) + 1,
                             targets={"data_fraction": self.targets.get(self.df_name, 1.0) if self.df_name else 1.0,
                                      "epochs": self.targets.get(self.ep_name) if self.ep_name else None},
                             driver_pid=os.getpid(), ax_experiment=self.ax_name)
        self._resume()

    def _resume(self):
        rows = self.store.trials("trial")
        n_ingested = n_abandoned = 0
        for r in rows:
            if r["status"] != "running":
                continue
            rp = result_path(self.dir, r["trial_id"])
            rec = None
            if rp.is_file():
                try:
                    rec = read_json(rp)
                except (OSError, ValueError):
                    rec = None
            if rec is not None:
                self._record_outcome(r["trial_id"], r, rec, None, tell=False)
                n_ingested += 1
            else:
                self.store.finish(r["trial_id"], status="abandoned", cost_ffe=0.0, cost_s=0.0,
                                  error="the driver stopped while this trial ran; abandoned on resume")
                n_abandoned += 1
        rows = self.store.trials("trial")
        with self._optimizer_clock():
            self.idx = _replay(self.opt, rows)
        self.first_session_id = self.store.next_trial_id()
        if rows:
            self.log.info("resumed: %d recorded trials (%d results ingested from files, %d abandoned)",
                          len(rows), n_ingested, n_abandoned)
            self._delete_ax_experiment()
        self._ax_dirty = True

    def _delete_ax_experiment(self):
        # The optimiser was rebuilt, so its Ax experiment is a new object: replace the stored one.
        try:
            self.store.delete_experiment(self.ax_name)
        except Exception as exc:
            self.log.warning("could not replace the stored Ax experiment: %s", scrub(str(exc), self.url))

    def _limit_threads(self):
        """Set the torch threads of the driver's optimiser (``execution.driver_threads``; restored by
        :meth:`close`).

        "auto": with local workers, the cores they leave free, at least one. Each local worker gets
        :meth:`_worker_threads`, so a driver keeping torch's default (every core) oversubscribes
        the machine exactly while a worker waits for its proposal, and the GP on a few hundred rows gains
        nothing from more threads (``analysis/bench_driver_threads.py``).
        """
        n = self.cfg.driver_threads
        if n is None:
            if not self.launcher.local:
                return
            n = max(1, (os.cpu_count() or 1) - max(1, self.cfg.workers) * self._worker_threads())
        import torch

        if n != torch.get_num_threads():
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(n)

    # -- accounting ----------------------------------------------------------------------
    def ffe(self, data_fraction: float, epochs: int) -> float:
        """Nominal cost of a trial in full-fidelity equivalents: (fraction / target) x (epochs / target)."""
        f = 1.0
        if self.df_name:
            f *= float(data_fraction) / float(self.targets[self.df_name])
        if self.ep_name:
            f *= float(epochs) / float(self.targets[self.ep_name])
        return f

    def wall(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.t_session)

    @contextmanager
    def _optimizer_clock(self):
        """Count the wall time of the block as the optimiser's own."""
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.optimizer_session_s += time.monotonic() - t0

    def optimizer_s(self) -> float:
        """The optimiser's own wall time over every session (s)."""
        return self.optimizer_before + self.optimizer_session_s

    def _times(self) -> dict:
        """The study's wall time and the optimiser's share of it, as stored in the study state."""
        return {"elapsed_s": self.wall(), "optimizer_s": self.optimizer_s()}

    # -- outcomes ------------------------------------------------------------------------
    def _record_outcome(self, trial_id: int, info: Mapping, rec: dict | None, reason: str | None, tell: bool):
        nominal = self.ffe(info["data_fraction"], info["epochs"])
        if rec is not None and rec.get("status") == "completed":
            curve = [float(v) for v in rec["curve"]]
            ok = self.store.finish(trial_id, status="completed", cost_ffe=nominal, cost_s=float(rec.get("cost", 0)),
                                   curve=curve, value=curve[-1], record=rec)
            if ok:
                self.log.info("trial %d completed: value %.6g (fraction %.3g, %d epochs, %.1f s)", trial_id,
                              curve[-1], info["data_fraction"], info["epochs"], float(rec.get("cost", 0)))
                if tell:
                    with self._optimizer_clock():
                        _safe_tell(self.opt, self.idx[trial_id], curve, float(rec.get("cost", 0.0)),
                                   rec.get("metadata") or {}, self.log)
        else:
            error = (rec or {}).get("error") or reason or "unknown failure"
            error = scrub(error, self.url)
            cost_s = float((rec or {}).get("timings", {}).get("wall_time", 0.0)) if rec else 0.0
            ok = self.store.finish(trial_id, status="failed", cost_ffe=nominal, cost_s=cost_s,
                                   curve=(rec or {}).get("curve"), error=error, record=rec)
            if ok:
                self.last_error = error
                self.log.warning("trial %d failed: %s", trial_id, error)
                if tell:
                    with self._optimizer_clock():
                        self.opt.tell_failed(self.idx[trial_id], error)
        if ok:
            self._ax_dirty = True

    def _ingest(self):
        for out in self.launcher.poll():
            info = self.running.get(out.key)
            if info is None:
                continue
            # Dropped from self.running only once its row is final: a signal in between leaves it there,
            # and _abandon_running records it from its result file (or finds its row already closed).
            self._record_outcome(out.key, info, out.record, out.reason, tell=True)
            self.running.pop(out.key, None)

    def _save_ax(self, force: bool = False):
        experiment = getattr(self.opt, "experiment", None)
        if not self._ax_dirty or experiment is None:
            return
        if not force and time.monotonic() - self._ax_saved_at < _AX_REFRESH_EVERY_S:
            return
        self._ax_dirty = False
        self._ax_saved_at = time.monotonic()
        try:
            # a rebuilt optimiser (resume) has a new experiment object: saved whole once, then by trial
            saved = self._ax_saved if self._ax_saved_for is experiment else None
            with self._optimizer_clock():
                self._ax_saved = self.store.save_experiment(experiment, saved)
            self._ax_saved_for = experiment
            self.ax_error = None
        except Exception as exc:
            msg = scrub(f"{type(exc).__name__}: {exc}", self.url)
            if msg != self.ax_error:
                self.log.error("saving the Ax experiment failed: %s", msg)
            self.ax_error = msg

    # -- main loop -----------------------------------------------------------------------
    def _counts(self, final: bool = False) -> dict:
        rows = self.store.trials("trial", light=True)
        c = {s: sum(r["status"] == s for r in rows) for s in ("running", "completed", "failed", "abandoned")}
        c["used_ffe"] = sum(r["cost_ffe"] for r in rows if r["status"] in ("completed", "failed"))
        mine = [r for r in rows if r["trial_id"] >= self.first_session_id]
        c["session_failed"] = sum(r["status"] == "failed" for r in mine)
        c["session_finished"] = sum(r["status"] in ("completed", "failed") for r in mine)
        b = _best_row(rows, {"data_fraction": self.targets.get(self.df_name, 1.0) if self.df_name else 1.0,
                             "epochs": self.targets.get(self.ep_name) if self.ep_name else None})
        c["best"] = _best_so_far(b, self._recommendation(c["completed"], force=final))
        return c

    def _recommendation(self, n_completed: int, force: bool = False) -> dict | None:
        """The optimiser's recommendation with its standing (stored in the study state for ``mfbo status``):
        refreshed when trials completed since the last refresh, at most every ``_REFRESH_EVERY_S`` unless
        ``force``."""
        if n_completed == self._rec_n or (n_completed and not force
                                          and time.monotonic() - self._rec_at < _REFRESH_EVERY_S):
            return self._rec
        self._rec_n, self._rec = n_completed, None
        info = getattr(self.opt, "recommendation_info", None)
        if n_completed and callable(info):
            self._rec_at = time.monotonic()
            try:
                with self._optimizer_clock():
                    self._rec = _json_safe(info())
            except Exception as exc:  # noqa: BLE001 - a report; the study goes on without it
                self.log.warning("no recommendation for the progress report: %s", exc)
            else:
                self.store.set_state(recommendation=self._rec)
        return self._rec

    def _failure_check(self, c: dict) -> str | None:
        # Counted over this session's trials, so a study stopped for failures can be resumed once fixed.
        n_failed, finished = c["session_failed"], c["session_finished"]
        last = getattr(self, "last_error", None) or "?"
        total = (f" ({c['failed']} of {c['completed'] + c['failed']} in the whole study)"
                 if c["completed"] + c["failed"] != finished else "")
        if self.probe and n_failed and finished == n_failed:
            return (f"the first trial after resuming a study stopped for failures failed too{total}; fix the "
                    f"cause, then 'mfbo resume {self.dir}' again; last error: {last}")
        if finished >= self.cfg.min_trials_for_failure_rate and n_failed / finished > self.cfg.max_failure_rate:
            scope = "finished trials of this session" if total else "finished trials"
            return (f"{n_failed} of {finished} {scope} failed{total} ({n_failed / finished:.0%} > tolerated "
                    f"{self.cfg.max_failure_rate:.0%}, execution.max_failure_rate); last error: {last}")
        return None

    def _progress_line(self, c: dict) -> str:
        best = c["best"]
        ffe = (f"{c['used_ffe']:.3f}/{self.cfg.budget_ffe:g} FFE ({c['used_ffe'] / self.cfg.budget_ffe:.0%})"
               if self.cfg.budget_ffe else f"{c['used_ffe']:.3f} FFE")
        text = (f"progress: {ffe}, {len(self.running)} running, {c['completed']} done, {c['failed']} failed, "
                + best_so_far_text(best))
        wall = f"{self.wall():.0f}" + (f"/{self.cfg.budget_wall_time:.0f}" if self.cfg.budget_wall_time else "")
        return text + f", wall {wall} s"

    def _show(self, c: dict, force: bool = False):
        now = time.monotonic()
        if force or now - self.last_line >= self.progress_every:
            self.last_line = now
            line = self._progress_line(c)
            self.log.info("%s", line)
            if self.progress and self.bar is None:
                print(f"study {self.cfg.name}: {line}", file=sys.stderr, flush=True)
        if self.bar is None:
            return
        used = c["used_ffe"]
        self.bar.n = min(used, self.bar.total) if self.bar.total else used
        best = c["best"]
        text = (f"running={len(self.running)} done={c['completed']} failed={c['failed']} "
                + best_so_far_text(best))
        if self.cfg.budget_wall_time is not None:
            text += f" wall={self.wall():.0f}/{self.cfg.budget_wall_time:.0f}s"
        self.bar.set_postfix_str(text, refresh=False)
        self.bar.refresh()

    def _submit(self, cand) -> None:
        trial_id = self.store.next_trial_id()
        # Held as running before the store records it: a signal anywhere from here on finds the trial in
        # self.running, and _abandon_running closes its row (or finds none to close).
        self.idx[trial_id] = cand.trial_index
        self.running[trial_id] = {"data_fraction": cand.data_fraction, "epochs": cand.epochs}
        self.store.add_running(trial_id, cand.params, cand.data_fraction, cand.epochs)
        spec = self._spec(trial_id, cand.params, cand.data_fraction, cand.epochs)
        self.launcher.submit(trial_id, _run_trial_fn(), spec, timeout=self.cfg.trial_timeout)
        self.log.info("trial %d submitted: fraction %.3g, %d epochs, %s", trial_id, cand.data_fraction,
                      cand.epochs, json.dumps(cand.params, default=str))
        self._ax_dirty = True

    def _preload(self) -> list[str]:
        """Modules the local fork server imports once (only what this objective needs)."""
        mods = ["mfbo.study._worker"]
        if self.cfg.backend in ("builtin", "amptorch"):
            mods += ["numpy", "torch", "ase", "mfbo.fingerprints", "mfbo.training", "mfbo.objectives"]
        else:
            mods.append(type(self.objective).__module__)
        return mods

    def _worker_threads(self) -> int:
        """Torch threads of each trial: this machine's cores shared among the workers (at least one)."""
        return max(1, (os.cpu_count() or 1) // max(1, self.cfg.workers))

    def _spec(self, key, params, data_fraction, epochs) -> dict:
        local = self.launcher.local
        return {
            "trial_id": key, "params": dict(params), "data_fraction": float(data_fraction), "epochs": int(epochs),
            "objective": self.blob, "result_path": str(result_path(self.dir, key)),
            "python_path": [str(p) for p in self.cfg.python_path],
            "threads": self._worker_threads(),
            "driver_pid": os.getpid() if local else None, "watch_driver": local,
        }

    def run(self):
        try:
            self._run()
        except (KeyboardInterrupt, _Terminated) as exc:
            name = "Ctrl-C (SIGINT)" if isinstance(exc, KeyboardInterrupt) else exc.name
            reason = f"stopped by {name}"
            updates: dict[str, Any] = {"status": "interrupted", "stop_reason": reason}
            if self.elapsed_before is not None:
                updates.update(self._times())
            try:
                self.store.set_state(**updates)
            finally:
                self.log.warning("driver %s; every finished trial is kept; continue with 'mfbo resume %s'",
                                 reason, self.dir)
            raise

    def _run(self):
        self.t_session = time.monotonic()
        state = self.store.state()
        if state.get("status") == "finished" and (self.dir / "best.json").is_file():
            self.log.info("study already finished; nothing to resume")
            return
        self._setup()
        (self.dir / "results").mkdir(exist_ok=True)
        cfg = self.cfg
        self.launcher = self.study._launcher or make_launcher(cfg.executor, cfg.workers, cfg.dask,
                                                              preload=self._preload(), state_dir=self.dir)
        for msg in getattr(self.launcher, "messages", ()):
            self.log.info("%s", msg)
        self._limit_threads()
        if self.progress and sys.stderr.isatty():  # otherwise plain lines (_show), readable in batch logs
            from tqdm import tqdm

            total = cfg.budget_ffe if cfg.budget_ffe is not None else None
            self.bar = tqdm(total=total, unit="FFE", desc=f"study {cfg.name}", file=sys.stderr,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total_fmt} FFE [{elapsed}] "
                                       "{postfix}")
        self.log.info("driver started (pid %d): storage %s, executor %s, %d workers", os.getpid(),
                      redact_url(self.url), cfg.executor, cfg.workers)
        stop_reason = None
        last_state_save = 0.0
        budget_reached = False
        try:
            while True:
                self._ingest()
                c = self._counts()
                self._save_ax()
                stop_reason = self._failure_check(c)
                if stop_reason:
                    break
                wall = self.wall()
                if cfg.budget_wall_time is not None and wall >= cfg.budget_wall_time:
                    if not budget_reached:
                        self.log.info("wall-time budget reached (%.0f s); cancelling running trials", wall)
                    budget_reached = True
                    self._abandon_running("wall-time budget (budget.wall_time) reached")
                    break
                pending = sum(self.ffe(i["data_fraction"], i["epochs"]) for i in self.running.values())
                free = cfg.workers - len(self.running)
                if self.probe and c["session_finished"] == c["session_failed"]:
                    free = min(free, 1 - len(self.running))
                room = cfg.budget_ffe is None or c["used_ffe"] + pending < cfg.budget_ffe
                if free > 0 and room:
                    with self._optimizer_clock():
                        cands = self.opt.ask(free)
                    for cand in cands:
                        pending_now = sum(self.ffe(i["data_fraction"], i["epochs"]) for i in self.running.values())
                        if cfg.budget_ffe is None or c["used_ffe"] + pending_now < cfg.budget_ffe:
                            self._submit(cand)
                        else:
                            self.opt.abandon(cand.trial_index, "not run: FFE budget (budget.ffe) exhausted")
                    self._save_ax()
                elif not self.running:
                    break
                now = time.monotonic()
                if now - last_state_save > 2.0:
                    self.store.set_state(**self._times())
                    last_state_save = now
                self._show(c)
                time.sleep(_POLL_S)
        except BaseException as exc:
            signalled = isinstance(exc, (KeyboardInterrupt, _Terminated))
            self._abandon_running("the driver was stopped by a signal" if signalled else
                                  "the driver stopped with an error")
            self.store.set_state(**self._times())
            raise
        self._save_ax(force=True)
        c = self._counts(final=True)
        self._show(c, force=True)
        self.store.set_state(**self._times())
        if stop_reason:
            self._abandon_running("study stopped: too many failures")
            self.store.set_state(status="stopped", stop_reason=stop_reason)
            self.log.error("study stopped: %s", stop_reason)
            raise StudyStopped(f"study {cfg.name} stopped: {stop_reason}")
        self.log.info("budget spent: %.3f FFE, %.0f s wall time; %d completed, %d failed trials; the optimiser's own "
                      "time %.1f s (%s)", c["used_ffe"], self.wall(), c["completed"], c["failed"],
                      self.optimizer_s(), optimizer_share_text(self.optimizer_s(), self.wall(),
                                                               c["completed"] + c["failed"]))
        if c["completed"] == 0:
            self.store.set_state(status="finished", stop_reason="no trial completed; nothing to recommend")
            return
        if cfg.final_enabled:
            self._final()
        else:
            self._write_best(None)
        self.store.set_state(status="finished", **self._times())
        self.log.info("study finished")

    def _abandon_running(self, reason: str):
        for key in list(self.running):
            try:
                self.launcher.cancel(key)
            except MfboError:
                pass
            info = self.running.pop(key)
            rp = result_path(self.dir, key)
            if rp.is_file():  # it finished meanwhile: keep it
                self._record_outcome(key, info, read_json(rp), None, tell=True)
                continue
            if self.store.finish(key, status="abandoned", cost_ffe=0.0, cost_s=0.0, error=reason):
                try:
                    self.opt.abandon(self.idx[key], reason)
                except Exception as exc:  # the record is what matters; the optimiser is discarded next
                    self.log.warning("optimiser refused abandon(%d): %s", key, exc)
        self._ax_dirty = True
        self._save_ax(force=True)

    # -- end of study --------------------------------------------------------------------
    def _final(self):
        from mfbo.study._worker import run_final

        with self._optimizer_clock():
            params = self.opt.recommend()
        df = self.targets.get(self.df_name, 1.0) if self.df_name else 1.0
        ep = self.targets.get(self.ep_name, 1) if self.ep_name else 1
        finals = self.store.trials("final")
        done = [r for r in finals if r["status"] == "completed" and r["params"] == params]
        if done:
            self._write_best(done[-1]["record"])
            return
        for r in finals:
            if r["status"] == "running":
                self.store.finish(r["trial_id"], status="abandoned", cost_ffe=0.0, cost_s=0.0,
                                  error="the driver stopped during the final run; re-run")
        # the surrogate's prediction for the retraining, stored before it runs (calibration at target)
        prediction = None
        predict = getattr(self.opt, "predict_target", None)
        if callable(predict):
            try:
                with self._optimizer_clock():
                    prediction = _json_safe(predict(params))
            except Exception as exc:  # noqa: BLE001 - the calibration record is optional
                self.log.warning("no prediction for the final run: %s", exc)
        self.store.set_state(final_prediction={"params": params, "prediction": prediction})
        if prediction:
            self.log.info("final run predicted %.6g ± %.3g at target fidelity", prediction["mean"], prediction["sd"])
        key = self.store.next_trial_id()
        self.store.add_running(key, params, df, ep, kind="final")
        spec = self._spec("final", params, df, ep)
        spec["trial_id"] = key
        spec["kind"] = "final"
        if callable(getattr(self.objective, "fit", None)):
            spec.update({"test": self.data["test"], "metric": self.cfg.metric,
                         "model_path": str(self.dir / "best_model.npz")})
        rp = result_path(self.dir, "final")
        if rp.exists():
            rp.unlink()
        self.log.info("final run: retraining the recommendation at target fidelity (fraction %g, %d epochs)", df, ep)
        if self.bar is not None:
            self.bar.set_postfix_str("final retraining at target fidelity...")
        elif self.progress:
            print(f"study {self.cfg.name}: final run: retraining the recommendation at target fidelity",
                  file=sys.stderr, flush=True)
        self.launcher.submit("final", run_final, spec, timeout=self.cfg.final_timeout, limit="final.timeout")
        while True:
            outs = [o for o in self.launcher.poll() if o.key == "final"]
            if outs:
                break
            time.sleep(_POLL_S)
        out = outs[0]
        rec = out.record
        if rec is not None and rec.get("status") == "completed":
            self.store.finish(key, status="completed", cost_ffe=0.0, cost_s=float(rec.get("cost", 0.0)),
                              curve=rec.get("curve"), value=(rec.get("curve") or [None])[-1], record=rec)
            self._write_best(rec)
        else:
            error = scrub((rec or {}).get("error") or out.reason or "unknown failure", self.url)
            self.store.finish(key, status="failed", cost_ffe=0.0, cost_s=0.0, error=error, record=rec)
            self.log.error("final run failed: %s", error)
            raise StudyError(f"study {self.cfg.name}: the final retraining of the recommended configuration "
                             f"failed: {error}; every trial is kept - fix the cause and run 'mfbo resume {self.dir}'")

    def _write_best(self, rec: dict | None):
        if rec:
            params = rec["params"]
        else:
            with self._optimizer_clock():
                params = self.opt.recommend()
        c = self._counts()
        stored = self.store.state().get("final_prediction") or {}
        prediction = stored.get("prediction") if rec and stored.get("params") == params else None
        value = ((rec or {}).get("curve") or [None])[-1]
        z = None
        if prediction and value is not None and prediction.get("sd", 0) > 0:
            z = (float(value) - float(prediction["mean"])) / float(prediction["sd"])
            self.log.info("final run: %.6g against the predicted %.6g ± %.3g (z = %.2f)", value,
                          prediction["mean"], prediction["sd"], z)
            self.store.set_state(calibration={"prediction": prediction, "value": value, "z": z})
        wall = self.wall()
        best = {
            "params": params,
            "train_config": (rec or {}).get("train_config"),
            "test_metrics": (rec or {}).get("test_metrics"),
            # Trivial baselines on the same test images (eV/atom, eV/Å) and the model's error ratios to them.
            "test_baselines": (rec or {}).get("test_baselines"),
            "test_ratios": (rec or {}).get("test_ratios"),
            "unseen_test_elements": (rec or {}).get("unseen_test_elements"),
            "model_path": (rec or {}).get("model_path"),
            "final": rec is not None,
            "fidelity": {"data_fraction": rec["data_fraction"], "epochs": rec["epochs"]} if rec else None,
            "validation_curve": (rec or {}).get("curve"),
            "validation_value": value,
            # predicted before the retraining (sd includes the inferred run-to-run noise) and the
            # retraining's z-score against it: (validation_value - mean) / sd
            "prediction": prediction,
            "z": z,
            "metric": self.cfg.metric,
            "study": {"name": self.cfg.name, "dir": str(self.dir), "backend": self.cfg.backend,
                      "trials": {k: c[k] for k in ("completed", "failed", "abandoned")},
                      "budget_used_ffe": c["used_ffe"], "wall_time_s": wall,
                      **optimizer_time(self.optimizer_s(), wall, c["completed"] + c["failed"]),
                      "best_trial": c["best"]},
            "versions": (rec or {}).get("versions"),
        }
        write_json_atomic(self.dir / "best.json", best)
        self.log.info("best configuration written to %s", self.dir / "best.json")

    def close(self):
        if self.launcher is not None and self.study._launcher is None:
            self.launcher.shutdown()
        if self._threads_before is not None:
            import torch

            torch.set_num_threads(self._threads_before)
            self._threads_before = None
        if self.bar is not None:
            self.bar.close()
        wlog = logging.getLogger("py.warnings")
        for h in list(self.log.handlers):
            h.close()
            self.log.removeHandler(h)
            if h in wlog.handlers:
                wlog.removeHandler(h)
        logging.captureWarnings(False)


def _run_trial_fn():
    from mfbo.study._worker import run_trial

    return run_trial


def _make_logger(d: Path, uid: str | None) -> logging.Logger:
    log = logging.getLogger(f"mfbo.study.{uid}")
    log.setLevel(logging.INFO)
    log.propagate = False
    fh = logging.FileHandler(d / "study.log")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(fh)
    # Library warnings (BoTorch, Sobol balance...) go to the log file, not over the progress view.
    logging.captureWarnings(True)
    wlog = logging.getLogger("py.warnings")
    wlog.propagate = False
    wlog.addHandler(fh)
    return log


def _json_safe(x: Any) -> Any:
    """A JSON-able copy (numpy scalars to Python numbers, NaN/inf to None)."""
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (bool, str)) or x is None:
        return x
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if isinstance(x, (int,)) or (hasattr(x, "dtype") and "int" in str(x.dtype)):
        return int(x)
    return v if math.isfinite(v) else None
