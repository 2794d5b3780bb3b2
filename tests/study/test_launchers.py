"""Launchers name the setting whose time limit stopped a run."""

from __future__ import annotations

import time

from mfbo.study._launchers import LocalLauncher


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
