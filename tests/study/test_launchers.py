"""Launchers name the setting whose time limit stopped a run."""

from __future__ import annotations

import time

from mfbo.study._launchers import LocalLauncher
from tests.helpers import process_alive, process_gone


def _hang(spec: dict) -> dict:
    time.sleep(600)
    return {}


def _outcomes(launcher, keys):
    seen = {}
    deadline = time.monotonic() + 120  # a hang guard, not a timing assertion
    while time.monotonic() < deadline and set(seen) != set(keys):
        seen.update({o.key: o for o in launcher.poll()})
        time.sleep(0.05)
    assert set(seen) == set(keys), "the launcher never reported every run"
    return [seen[k] for k in keys]


def test_timeout_message_names_the_limit_that_fired(tmp_path):
    launcher = LocalLauncher(workers=2, preload=["tests.study.test_launchers"])
    try:
        launcher.submit("final", _hang, {"result_path": str(tmp_path / "final.json")}, timeout=0.2,
                        limit="final.timeout")
        launcher.submit(7, _hang, {"result_path": str(tmp_path / "t7.json")}, timeout=0.2)
        final, trial = _outcomes(launcher, ["final", 7])
    finally:
        launcher.shutdown()
    assert final.record is None and final.reason == "timed out after 0.2 s (final.timeout); worker killed"
    assert trial.reason == "timed out after 0.2 s (execution.trial_timeout); worker killed"


def _nap(spec: dict) -> dict:
    time.sleep(3)  # a thread cannot be killed: short enough for the cluster to close after it
    return {}


def test_dask_timeout_message_names_the_limit_that_fired(tmp_path):
    from mfbo.study._launchers import DaskLauncher

    launcher = DaskLauncher(cluster="local", workers=2)
    try:
        launcher.submit("final", _nap, {"result_path": str(tmp_path / "final.json")}, timeout=0.2,
                        limit="final.timeout")
        launcher.submit(7, _nap, {"result_path": str(tmp_path / "t7.json")}, timeout=0.2)
        final, trial = _outcomes(launcher, ["final", 7])
    finally:
        launcher.shutdown()
    assert final.record is None and final.reason.startswith("timed out after 0.2 s (final.timeout); Dask task cancelled")
    assert trial.reason.startswith("timed out after 0.2 s (execution.trial_timeout); Dask task cancelled")


def _start_child_and_hang(spec: dict) -> dict:
    """A trial that starts a process of its own (as featurisation starts a pool), then hangs."""
    import subprocess
    import sys
    from pathlib import Path

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(spec["child_pid"]).write_text(str(child.pid))
    time.sleep(600)
    return {}


def _child_pid(path, deadline_s: float = 120.0) -> int:
    deadline = time.monotonic() + deadline_s  # a hang guard, not a timing assertion
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return int(path.read_text())
        time.sleep(0.05)
    raise AssertionError("the trial never started its child process")


def test_cancelled_and_timed_out_trials_take_their_child_processes_with_them(tmp_path):
    launcher = LocalLauncher(workers=2, preload=["tests.study.test_launchers"])
    children = []
    try:
        launcher.submit(1, _start_child_and_hang, {"result_path": str(tmp_path / "t1.json"),
                                                    "child_pid": str(tmp_path / "c1")})
        launcher.submit(2, _start_child_and_hang, {"result_path": str(tmp_path / "t2.json"),
                                                    "child_pid": str(tmp_path / "c2")}, timeout=600)
        children = [_child_pid(tmp_path / "c1"), _child_pid(tmp_path / "c2")]
        assert all(process_alive(pid) for pid in children)
        launcher.cancel(1)
        assert process_gone(children[0]), "cancelling a trial left the process it started running"
        assert process_alive(children[1])  # the other trial's process is untouched
        launcher._procs[2] = (*launcher._procs[2][:3], 0.0)  # its time limit has passed now
        (outcome,) = _outcomes(launcher, [2])
        assert outcome.reason.startswith("timed out")
        assert process_gone(children[1]), "timing a trial out left the process it started running"
    finally:
        launcher.shutdown()
        import os
        import signal

        for pid in children:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
