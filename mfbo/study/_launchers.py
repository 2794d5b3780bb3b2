"""Launchers: where trials run. A small interface with two backends.

* :class:`LocalLauncher` (default): one real OS process per trial, started from a clean
  ``forkserver`` (the driver's BoTorch/OpenMP threads are never forked), leading its own process
  group, so that cancelling or timing out a trial also kills what it started (featurisation
  workers). A killed worker process, a non-zero exit or a timeout becomes that trial's failure reason.
* :class:`DaskLauncher`: ``dask.distributed`` futures on a scheduler address, a
  ``LocalCluster``, or a dask-jobqueue ``PBSCluster``/``SLURMCluster`` described in the
  study file.

Launchers never touch the database; they hand the driver :class:`Outcome` objects.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mfbo.errors import LauncherError
from mfbo.study._records import read_json, write_json_atomic

__all__ = ["Outcome", "Launcher", "LocalLauncher", "DaskLauncher", "make_launcher"]


@dataclass
class Outcome:
    """A finished submission.

    Attributes:
        key: the key it was submitted under (the trial id, or "final").
        record: the worker's record (None when the worker produced none).
        reason: why there is no record (killed, timed out, exit code, Dask error); None otherwise.
    """

    key: Any
    record: dict | None
    reason: str | None = None


class Launcher:
    """Runs ``fn(spec)`` somewhere; ``fn`` writes ``spec["result_path"]`` and returns the record.

    Subclasses implement :meth:`submit` and :meth:`poll`; :meth:`cancel` and :meth:`shutdown` are
    optional (the base raises a clear error / does nothing).
    """

    #: whether workers share the driver's host (so they may watch the driver's pid).
    local = True

    def submit(self, key: Any, fn: Callable[[dict], dict], spec: dict, timeout: float | None = None,
               limit: str = "execution.trial_timeout") -> None:
        """Start ``fn(spec)``; ``timeout`` seconds after it starts, it is stopped and reported failed."""
        raise NotImplementedError(f"{type(self).__name__} must implement submit()")

    def poll(self) -> list[Outcome]:
        """The submissions that finished since the last poll."""
        raise NotImplementedError(f"{type(self).__name__} must implement poll()")

    def cancel(self, key: Any) -> None:
        raise LauncherError(f"{type(self).__name__} cannot cancel a running trial")

    def running(self) -> list:
        return []

    def shutdown(self) -> None:
        """Stop everything still running."""


def _read_result(spec: dict) -> dict | None:
    p = Path(spec["result_path"])
    if not p.is_file():
        return None
    try:
        return read_json(p)
    except (OSError, ValueError):
        return None


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


_PRELOAD = ["mfbo.study._worker", "numpy", "torch", "ase", "mfbo.training", "mfbo.objectives"]


def _in_own_group(fn: Callable[[dict], Any], spec: dict) -> None:
    """A trial process's entry: lead a new process group, then run ``fn(spec)``. The processes the trial
    starts (a featurisation pool) join the group, and :func:`_kill_group` ends them with it; killed
    alone, a trial would leave them running, holding its memory and the driver's output pipes."""
    os.setpgid(0, 0)
    fn(spec)


def _kill_group(proc) -> None:
    """SIGKILL ``proc``'s process group (it leads one, see :func:`_in_own_group`), or ``proc`` alone
    before it has made its group."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        if proc.is_alive():
            proc.kill()


class LocalLauncher(Launcher):
    """One OS process per trial (forkserver context), at most ``workers`` at a time.

    Args:
        workers: the most trials running at once (the driver never submits more).
        preload: modules the fork server imports once, so each trial starts fast.
    """

    def __init__(self, workers: int = 1, preload: list[str] | None = None):
        self.workers = workers
        self._ctx = mp.get_context("forkserver")
        self._ctx.set_forkserver_preload(list(preload if preload is not None else _PRELOAD))
        self._procs: dict[Any, tuple[Any, dict, float, float | None]] = {}
        self._limits: dict[Any, str] = {}  # key -> the study-file field that set its time limit

    def submit(self, key, fn, spec, timeout=None, limit="execution.trial_timeout"):
        if key in self._procs:
            raise LauncherError(f"submission {key!r} is already running")
        self._limits[key] = limit
        proc = self._ctx.Process(target=_in_own_group, args=(fn, spec), name=f"mfbo-trial-{key}")
        proc.start()
        self._procs[key] = (proc, spec, time.monotonic(), timeout)

    def running(self):
        return list(self._procs)

    def poll(self):
        out = []
        for key, (proc, spec, t0, timeout) in list(self._procs.items()):
            if proc.is_alive():
                if timeout is not None and time.monotonic() - t0 > timeout:
                    _kill_group(proc)
                    proc.join(5)
                    del self._procs[key]
                    rec = _read_result(spec)
                    out.append(Outcome(key, rec, None if rec else
                                       f"timed out after {timeout:g} s ({self._limits[key]}); worker killed"))
                continue
            proc.join()
            _kill_group(proc)  # a trial that died (killed, out of memory) can leave its pool behind
            del self._procs[key]
            rec = _read_result(spec)
            if rec is not None:
                out.append(Outcome(key, rec))
            elif proc.exitcode is not None and proc.exitcode < 0:
                out.append(Outcome(key, None, f"worker process {proc.pid} killed by "
                                              f"{_signal_name(-proc.exitcode)}"))
            else:
                out.append(Outcome(key, None, f"worker process {proc.pid} exited with code {proc.exitcode} "
                                              "without writing a result"))
        return out

    def cancel(self, key):
        entry = self._procs.pop(key, None)
        if entry is not None:
            _kill_group(entry[0])
            entry[0].join(5)

    def shutdown(self):
        for key in list(self._procs):
            self.cancel(key)


_JOBQUEUE = {"pbs": ("PBSCluster", "PBS"), "slurm": ("SLURMCluster", "SLURM")}
_WATCH_S = 1.0  # s between looks at the scheduler (tasks taken by a worker, lost and new batch jobs)
_RESCALE_S = 10.0  # s between resubmissions of lost worker jobs
JOBS_FILE = "dask_jobs.json"


@dataclass
class _Task:
    fut: Any
    spec: dict
    timeout: float | None
    started: float | None = None  # monotonic time a worker took it
    worker: str | None = None  # that worker's address


class DaskLauncher(Launcher):
    """Trials as ``dask.distributed`` futures.

    Args:
        scheduler: address of a running scheduler (``tcp://host:8786``); or
        cluster: "local" (a ``LocalCluster`` on 127.0.0.1), "pbs" or "slurm" (dask-jobqueue).
        workers: trials at once (LocalCluster workers; jobqueue ``scale(jobs=...)`` default).
        options: keyword arguments of the cluster class (e.g. ``cores``, ``memory``, ``queue``,
            ``walltime``, ``processes`` for LocalCluster) plus ``jobs`` for jobqueue clusters.
        state_dir: folder (the study directory) that keeps the ids of the batch jobs in
            ``dask_jobs.json``, so that the next driver cancels the jobs a killed one left behind.

    ``trial_timeout`` counts from the moment a worker takes the trial, not from submission (a
    batch job may wait in the queue for hours). A timed-out Dask task is cancelled and recorded
    failed; a thread already running it cannot be killed, so on PBS/SLURM the worker's job is
    cancelled too (and replaced), and elsewhere its late result is ignored. In clusters this
    launcher starts, a trial whose worker dies (job cancelled, past its walltime, out of memory)
    fails with that reason instead of running again on another worker; lost worker jobs are
    resubmitted. Batch jobs are cancelled at :meth:`shutdown`.
    """

    local = False

    def __init__(self, *, scheduler: str | None = None, cluster: str | None = "local", workers: int = 1,
                 options: dict | None = None, state_dir: str | Path | None = None):
        import dask
        from dask.distributed import Client

        options = dict(options or {})
        self._cluster = None
        self._kind = None if scheduler else cluster
        self._label = _JOBQUEUE[cluster][1] if self._kind in _JOBQUEUE else "batch"
        self._jobs_file = Path(state_dir) / JOBS_FILE if state_dir is not None and self._kind in _JOBQUEUE else None
        self._job_ids: list[str] = []
        self._worker_jobs: dict[str, str] = {}  # worker address -> batch job id
        self._jobs = 0
        self._last_watch = self._last_rescale = 0.0
        self._futs: dict[Any, _Task] = {}
        self._limits: dict[Any, str] = {}  # key -> the study-file field that set its time limit
        self._cancel_command: list[str] = []
        #: what the launcher did that the study log should say (e.g. leftover jobs cancelled)
        self.messages: list[str] = []
        try:
            if scheduler:
                self.client = Client(scheduler, timeout=options.pop("timeout", 30))
            elif cluster == "local" or cluster in _JOBQUEUE:
                # A trial whose worker dies fails at once, with the reason, instead of running again
                # elsewhere; a worker holds only the trials its threads run (none waits behind another).
                with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                                      "distributed.scheduler.worker-saturation": 1.0}):
                    if cluster == "local":
                        from dask.distributed import LocalCluster

                        # loopback only; tcp so that an in-process (threads) cluster accepts a host
                        kw = {"n_workers": workers, "threads_per_worker": 1, "processes": False,
                              "protocol": "tcp://", "host": "127.0.0.1", "dashboard_address": None}
                        kw.update(options)
                        self._cluster = LocalCluster(**kw)
                    else:
                        self._start_jobqueue(cluster, workers, options)
                self.client = Client(self._cluster)
            else:
                raise LauncherError(f"unknown Dask cluster {cluster!r} (execution.dask.cluster): use \"local\", "
                                    "\"pbs\" or \"slurm\", or give execution.dask.scheduler")
        except LauncherError:
            self._close_cluster()
            raise
        except Exception as exc:
            self._close_cluster()
            raise LauncherError(f"cannot start the Dask executor: {type(exc).__name__}: {exc}") from None

    # -- batch jobs (PBS, SLURM) -----------------------------------------------------------
    def _start_jobqueue(self, cluster: str, workers: int, options: dict) -> None:
        import dask_jobqueue

        cls = getattr(dask_jobqueue, _JOBQUEUE[cluster][0])
        self._cancel_command = shlex.split(cls.job_cls.cancel_command)
        submit = cls.job_cls.submit_command
        if shutil.which(submit) is None:
            raise LauncherError(f"execution.dask.cluster = {cluster!r} submits worker jobs with {submit!r}, which is "
                                f"not on PATH: run the driver on a host that submits {self._label} jobs")
        self._cancel_leftovers()
        self._jobs = int(options.pop("jobs", workers))
        self._cluster = cls(**options)
        if cluster == "slurm":
            self._test_submission()
        self._cluster.scale(jobs=self._jobs)
        # submit now, so that a refused submission is an error here and not a study that waits forever
        self._cluster.sync(self._cluster._correct_state)
        self._record_jobs()
        missing = [str(n) for n, job in list(self._cluster.workers.items()) if not getattr(job, "job_id", None)]
        if missing:
            raise LauncherError(f"{len(missing)} of {self._jobs} {self._label} worker jobs were not submitted")

    def _test_submission(self) -> None:
        """``sbatch --test-only`` of the worker job: a refused option is one clear error before anything runs."""
        fd, name = tempfile.mkstemp(prefix="mfbo-dask-job-", suffix=".sh")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(self._cluster.job_script())
            r = subprocess.run(["sbatch", "--test-only", name], capture_output=True, text=True, timeout=60)
        finally:
            os.unlink(name)
        if r.returncode != 0:
            errors = [ln.split("error:", 1)[1].strip() for ln in r.stderr.splitlines() if "error:" in ln]
            raise LauncherError(f"SLURM refuses the worker job that execution.dask.options describe: "
                                f"{errors[-1] if errors else r.stderr.strip()}; fix the options (queue, account, "
                                "memory, walltime, job_extra_directives)")

    def _run_quietly(self, args: list[str]) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(args, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None

    def _live_jobs(self, ids: list[str]) -> list[str]:
        """The jobs among ``ids`` still queued or running (SLURM asks squeue; PBS assumes all)."""
        if not ids or self._kind != "slurm":
            return list(ids)
        r = self._run_quietly(["squeue", "--noheader", "--format=%i %T", f"--jobs={','.join(ids)}"])
        if r is None:
            return list(ids)
        live = [p[0] for p in (ln.split() for ln in r.stdout.splitlines()) if len(p) == 2 and p[1] != "COMPLETING"]
        return [i for i in ids if i in live]

    def _cancel_jobs(self, ids: list[str]) -> None:
        if ids and self._cancel_command:
            self._run_quietly([*self._cancel_command, *ids])

    def _job_state(self, job_id: str) -> str | None:
        if self._kind != "slurm":
            return None
        state = None
        for _ in range(10):  # COMPLETING is passing (epilog running): wait up to ~2 s for the final state
            r = self._run_quietly(["scontrol", "--oneliner", "show", "job", job_id])
            m = re.search(r"JobState=(\S+)", r.stdout if r is not None else "")
            state = m.group(1) if m else None
            if state != "COMPLETING":
                break
            time.sleep(0.2)
        return state

    def _read_job_ids(self) -> list[str]:
        if self._jobs_file is None or not self._jobs_file.is_file():
            return []
        try:
            return [str(i) for i in read_json(self._jobs_file).get("jobs", [])]
        except (OSError, ValueError, AttributeError):
            return []

    def _cancel_leftovers(self) -> None:
        ids = self._read_job_ids()
        live = self._live_jobs(ids)
        if live:
            self._cancel_jobs(live)
            self.messages.append(f"cancelled {len(live)} {self._label} worker job(s) left by an earlier driver: "
                                 f"{', '.join(sorted(live, key=lambda j: (len(j), j)))}")
        if ids:
            self._jobs_file.unlink(missing_ok=True)

    def _record_jobs(self) -> None:
        """Note new job ids (in ``dask_jobs.json``) and which worker runs in which job."""
        c = self._cluster
        if c is None or self._kind not in _JOBQUEUE:
            return
        jobs = self._job_names()
        new = [j for j in jobs.values() if j not in self._job_ids]
        if new:
            self._job_ids += new
            if self._jobs_file is not None:
                write_json_atomic(self._jobs_file, {"scheduler": self._label, "jobs": self._job_ids})
        for addr, w in list(c.scheduler_info.get("workers", {}).items()):
            job = self._job_named(w.get("name"), jobs)
            if job is not None:
                self._worker_jobs[addr] = job

    def _job_names(self) -> dict[str, str]:
        """cluster job name -> batch job id, for the jobs submitted."""
        return {str(n): str(job.job_id) for n, job in list(self._cluster.workers.items())
                if getattr(job, "job_id", None)}

    @staticmethod
    def _job_named(worker_name: Any, jobs: dict[str, str]) -> str | None:
        """The job id of a worker (a job with several worker processes names them name-0, name-1...)."""
        name = str(worker_name)
        return next((j for n, j in jobs.items() if name == n or name.startswith(n + "-")), None)

    def _watch(self) -> None:
        now = time.monotonic()
        if now - self._last_watch < _WATCH_S:
            return
        self._last_watch = now
        waiting = {task.fut.key: key for key, task in self._futs.items() if task.started is None}
        if waiting:
            try:
                processing = self.client.processing()
            except Exception:  # the scheduler is busy or gone; the next look tries again
                processing = {}
            for addr, dkeys in processing.items():
                for dk in dkeys:
                    if dk in waiting:
                        task = self._futs[waiting[dk]]
                        task.started, task.worker = now, addr
        c = self._cluster
        if self._kind in _JOBQUEUE and c is not None:
            self._record_jobs()
            if set(c.worker_spec) - set(c.workers) and now - self._last_rescale > _RESCALE_S:
                self._last_rescale = now
                c.scale(jobs=self._jobs)  # resubmits the jobs whose workers were lost

    def _lost_reason(self, task: _Task, exc: BaseException) -> str:
        last = getattr(exc, "last_worker", None)  # the worker that died
        addr = getattr(last, "address", None) or task.worker
        self._record_jobs()
        job = self._worker_jobs.get(addr) if addr else None
        if job is None and self._cluster is not None and self._kind in _JOBQUEUE:
            job = self._job_named(getattr(last, "name", None), self._job_names())
        if job is None:
            return f"the Dask worker running the trial ({addr or 'address unknown'}) died"
        state = self._job_state(job)
        return (f"the Dask worker running the trial died with its {self._label} job {job}"
                + (f" (job state {state})" if state else "")
                + "; that job's output file tells more")

    def _stop_worker(self, task: _Task) -> str | None:
        """Cancel the batch job of a timed-out task's worker when it runs nothing else; its id, or None."""
        job = self._worker_jobs.get(task.worker) if task.worker else None
        if job is None or any(t.worker == task.worker for t in self._futs.values()):
            return None
        self._cancel_jobs([job])
        return job

    # -- the Launcher interface ---------------------------------------------------------------
    def submit(self, key, fn, spec, timeout=None, limit="execution.trial_timeout"):
        self._limits[key] = limit
        fut = self.client.submit(fn, spec, pure=False, key=f"mfbo-{key}-{os.getpid()}-{time.time_ns()}")
        self._futs[key] = _Task(fut, spec, timeout)

    def running(self):
        return list(self._futs)

    def poll(self):
        self._watch()
        out = []
        now = time.monotonic()
        for key, task in list(self._futs.items()):
            fut, spec, timeout = task.fut, task.spec, task.timeout
            if not fut.done():
                if timeout is not None and task.started is not None and now - task.started > timeout:
                    fut.cancel()
                    del self._futs[key]
                    job = self._stop_worker(task)
                    out.append(Outcome(key, None, f"timed out after {timeout:g} s ({self._limits[key]}); Dask task "
                                                  "cancelled" + (f" and its worker's {self._label} job {job} cancelled"
                                                                 if job else "")))
                continue
            del self._futs[key]
            if fut.status == "finished":
                rec = fut.result()
                if _read_result(spec) is None:  # no shared filesystem: the driver keeps the record
                    write_json_atomic(spec["result_path"], rec)
                out.append(Outcome(key, rec))
                continue
            rec = _read_result(spec)
            if rec is not None:
                out.append(Outcome(key, rec))
                continue
            try:
                exc = fut.exception(timeout=5)
            except Exception as e:  # cancelled futures raise on .exception()
                out.append(Outcome(key, None, f"Dask task {fut.status}: {type(e).__name__}"))
                continue
            if type(exc).__name__ == "KilledWorker":
                reason = self._lost_reason(task, exc)
            else:
                reason = f"Dask task failed: {type(exc).__name__}: {exc}"
            out.append(Outcome(key, None, reason))
        return out

    def cancel(self, key):
        task = self._futs.pop(key, None)
        if task is not None:
            task.fut.cancel()

    def _close_cluster(self) -> None:
        if self._cluster is not None:
            try:
                self._record_jobs()
                self._cluster.close()
            except Exception:  # closing a cluster that is already gone is not an error of the study
                pass
        if self._kind in _JOBQUEUE and self._job_ids:
            # a backstop for jobs the cluster did not cancel (submitted while it closed, or it failed)
            self._cancel_jobs(self._live_jobs(self._job_ids))
            if self._jobs_file is not None:
                self._jobs_file.unlink(missing_ok=True)

    def shutdown(self):
        for key in list(self._futs):
            self.cancel(key)
        try:
            self.client.close()
        except Exception:  # a client whose scheduler is gone
            pass
        self._close_cluster()


def make_launcher(executor: str, workers: int, dask: dict | None = None, preload: list[str] | None = None,
                  state_dir: str | Path | None = None) -> Launcher:
    """The launcher a study's ``[execution]`` table asks for (``state_dir``: the study directory)."""
    if executor == "local":
        return LocalLauncher(workers, preload=preload)
    if executor == "dask":
        dask = dict(dask or {})
        return DaskLauncher(scheduler=dask.get("scheduler"), cluster=dask.get("cluster", "local"),
                            workers=workers, options=dask.get("options"), state_dir=state_dir)
    raise LauncherError(f"unknown executor {executor!r}")
