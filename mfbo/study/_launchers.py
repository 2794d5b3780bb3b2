"""Launchers: where trials run. A small interface with two backends.

* :class:`LocalLauncher` (default): one real OS process per trial, started from a clean
  ``forkserver`` (the driver's BoTorch/OpenMP threads are never forked). A killed worker
  process, a non-zero exit or a timeout becomes that trial's failure reason.
* :class:`DaskLauncher`: ``dask.distributed`` futures on a scheduler address, a
  ``LocalCluster``, or a dask-jobqueue ``PBSCluster``/``SLURMCluster`` described in the
  study file.

Launchers never touch the database; they hand the driver :class:`Outcome` objects.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
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
        """Start ``fn(spec)``; ``timeout`` seconds after it starts, it is stopped and reported failed.

        ``limit`` names the setting the timeout comes from, for the failure message.
        """
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
        self._limits: dict[Any, str] = {}

    def submit(self, key, fn, spec, timeout=None, limit="execution.trial_timeout"):
        if key in self._procs:
            raise LauncherError(f"submission {key!r} is already running")
        proc = self._ctx.Process(target=fn, args=(spec,), name=f"mfbo-trial-{key}")
        proc.start()
        self._procs[key] = (proc, spec, time.monotonic(), timeout)
        self._limits[key] = limit

    def running(self):
        return list(self._procs)

    def poll(self):
        out = []
        for key, (proc, spec, t0, timeout) in list(self._procs.items()):
            if proc.is_alive():
                if timeout is not None and time.monotonic() - t0 > timeout:
                    proc.kill()
                    proc.join(5)
                    del self._procs[key]
                    rec = _read_result(spec)
                    limit = self._limits.pop(key, "execution.trial_timeout")
                    out.append(Outcome(key, rec, None if rec else
                                       f"timed out after {timeout:g} s ({limit}); worker killed"))
                continue
            proc.join()
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
            entry[0].kill()
            entry[0].join(5)

    def shutdown(self):
        for key in list(self._procs):
            self.cancel(key)


class DaskLauncher(Launcher):
    """Trials as ``dask.distributed`` futures.

    Args:
        scheduler: address of a running scheduler (``tcp://host:8786``); or
        cluster: "local" (a ``LocalCluster`` on 127.0.0.1), "pbs" or "slurm" (dask-jobqueue).
        workers: trials at once (LocalCluster workers; jobqueue ``scale(jobs=...)`` default).
        options: keyword arguments of the cluster class (e.g. ``cores``, ``memory``, ``queue``,
            ``walltime``, ``processes`` for LocalCluster) plus ``jobs`` for jobqueue clusters.

    A timed-out Dask task is cancelled and recorded failed; a thread already running it cannot be
    killed, so its late result is ignored (the trial is not "running" any more).
    """

    local = False

    def __init__(self, *, scheduler: str | None = None, cluster: str | None = "local", workers: int = 1,
                 options: dict | None = None):
        from dask.distributed import Client

        options = dict(options or {})
        self._cluster = None
        try:
            if scheduler:
                self.client = Client(scheduler, timeout=options.pop("timeout", 30))
            elif cluster == "local":
                from dask.distributed import LocalCluster

                # loopback only; tcp so that an in-process (threads) cluster accepts a host
                kw = {"n_workers": workers, "threads_per_worker": 1, "processes": False, "protocol": "tcp://",
                      "host": "127.0.0.1", "dashboard_address": None}
                kw.update(options)
                self._cluster = LocalCluster(**kw)
                self.client = Client(self._cluster)
            elif cluster in ("pbs", "slurm"):
                import dask_jobqueue

                cls = dask_jobqueue.PBSCluster if cluster == "pbs" else dask_jobqueue.SLURMCluster
                jobs = int(options.pop("jobs", workers))
                self._cluster = cls(**options)
                self._cluster.scale(jobs=jobs)
                self.client = Client(self._cluster)
            else:
                raise LauncherError(f"unknown Dask cluster {cluster!r}")
        except LauncherError:
            raise
        except Exception as exc:
            raise LauncherError(f"cannot start the Dask executor: {type(exc).__name__}: {exc}") from None
        self._futs: dict[Any, tuple[Any, dict, float, float | None]] = {}
        self._limits: dict[Any, str] = {}

    def submit(self, key, fn, spec, timeout=None, limit="execution.trial_timeout"):
        fut = self.client.submit(fn, spec, pure=False, key=f"mfbo-{key}-{os.getpid()}-{time.time_ns()}")
        self._futs[key] = (fut, spec, time.monotonic(), timeout)
        self._limits[key] = limit

    def running(self):
        return list(self._futs)

    def poll(self):
        out = []
        for key, (fut, spec, t0, timeout) in list(self._futs.items()):
            if not fut.done():
                if timeout is not None and time.monotonic() - t0 > timeout:
                    fut.cancel()
                    del self._futs[key]
                    limit = self._limits.pop(key, "execution.trial_timeout")
                    out.append(Outcome(key, None, f"timed out after {timeout:g} s ({limit}); Dask task cancelled"))
                continue
            del self._futs[key]
            if fut.status == "finished":
                rec = fut.result()
                if _read_result(spec) is None:  # no shared filesystem: the driver keeps the record
                    write_json_atomic(spec["result_path"], rec)
                out.append(Outcome(key, rec))
            else:
                rec = _read_result(spec)
                if rec is not None:
                    out.append(Outcome(key, rec))
                    continue
                try:
                    exc = fut.exception(timeout=5)
                    reason = f"Dask task failed: {type(exc).__name__}: {exc}"
                except Exception as e:  # cancelled futures raise on .exception()
                    reason = f"Dask task {fut.status}: {type(e).__name__}"
                out.append(Outcome(key, None, reason))
        return out

    def cancel(self, key):
        entry = self._futs.pop(key, None)
        if entry is not None:
            entry[0].cancel()

    def shutdown(self):
        for key in list(self._futs):
            self.cancel(key)
        try:
            self.client.close()
            if self._cluster is not None:
                self._cluster.close()
        except Exception:  # closing a cluster that is already gone is not an error of the study
            pass


def make_launcher(executor: str, workers: int, dask: dict | None = None, preload: list[str] | None = None
                  ) -> Launcher:
    """The launcher a study's ``[execution]`` table asks for."""
    if executor == "local":
        return LocalLauncher(workers, preload=preload)
    if executor == "dask":
        dask = dict(dask or {})
        return DaskLauncher(scheduler=dask.get("scheduler"), cluster=dask.get("cluster", "local"),
                            workers=workers, options=dask.get("options"))
    raise LauncherError(f"unknown executor {executor!r}")
