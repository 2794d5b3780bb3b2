"""The driver under real signals and concurrent use (real processes): SIGTERM and Ctrl-C stop it with
one line and a resume hint, nothing lost; two `mfbo run` at once leave one study; a closed pipe and a
read-only study directory give no traceback; resuming a study stopped for failures runs one probe trial."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.study.conftest import cli_env, run_cli, wait_for, write_study


def _default_sigint():
    # A test runner started in the background by a non-interactive shell inherits SIGINT ignored
    # (POSIX), and the driver rightly keeps an inherited ignore; a user's Ctrl-C comes from a
    # foreground terminal, where SIGINT has its default disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(tmp_path, *args):
    return subprocess.Popen([sys.executable, "-m", "mfbo.cli", *map(str, args)], cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_sigint)


def _n_results(d) -> int:
    return len(list((d / "results").glob("trial_*.json"))) if (d / "results").is_dir() else 0


@pytest.mark.parametrize("how,code,words", [("SIGTERM", 143, "stopped by SIGTERM"),
                                            ("SIGINT", 130, "stopped by Ctrl-C (SIGINT)")])
def test_signal_stops_driver_with_resume_hint(tmp_path, how, code, words):
    study = write_study(tmp_path / "sig.toml", budget_ffe=0.6, workers=2, options={"delay": 0.3})
    d = tmp_path / "run"
    proc = _start(tmp_path, "run", study, "--progress-every", "1")
    assert wait_for(lambda: proc.poll() is not None or _n_results(d) >= 2, timeout=180)
    if how == "SIGINT":  # Ctrl-C: the terminal signals the whole process group, workers included
        os.killpg(proc.pid, signal.SIGINT)
    else:  # a scheduler's walltime / qdel / scancel: the driver
        os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if "error" in ln]
    assert len(errors) == 1 and words in errors[0] and f"mfbo resume {d}" in errors[0], err[-2000:]
    log = (d / "study.log").read_text()
    assert words in log and "mfbo resume" in log
    st = json.loads(run_cli("status", d, "--json").stdout)
    assert st["status"] == "interrupted" and st["trials"]["running"] == 0
    done = st["trials"]["completed"]
    assert done >= 2
    r = run_cli("resume", d, "--progress-every", "1", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "You are deleting" not in r.stderr and "SQL storage initialized" not in r.stderr
    assert "\r" not in r.stderr and "progress:" in r.stderr  # plain lines without a terminal
    st = json.loads(run_cli("status", d, "--json").stdout)
    assert st["status"] == "finished" and st["trials"]["completed"] >= done and st["stop_reason"] is None
    assert "sort_values" not in (d / "study.log").read_text()


def test_two_runs_at_once_leave_one_study(tmp_path):
    study = write_study(tmp_path / "race.toml", budget_ffe=0.2, workers=1)
    procs = [_start(tmp_path, "run", study, "--no-progress") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [o[1][-1500:] for o in outs]
    loser = next(o[1] for p, o in zip(procs, outs) if p.returncode == 2)
    assert "Traceback" not in loser and len([ln for ln in loser.splitlines() if "error" in ln]) == 1
    meta = json.loads((tmp_path / "run" / "study.json").read_text())
    st = json.loads(run_cli("status", tmp_path / "run", "--json").stdout)
    assert st["status"] == "finished" and st["trials"]["completed"] >= 1  # the winner's trials are visible
    from mfbo.study import Study

    assert Study.load(tmp_path / "run").uid == meta["uid"]


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("done")
    r = run_cli("run", write_study(tmp / "done.toml", budget_ffe=0.2, workers=2), "--no-progress", cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp / "run"


def test_status_into_a_closed_pipe_is_quiet(finished_study):
    proc = subprocess.Popen([sys.executable, "-m", "mfbo.cli", "status", finished_study, "--json"],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head -0`: the reader is gone before anything is written
    err = proc.stderr.read().decode()
    proc.wait(120)
    assert proc.returncode == 141 and err.strip() == "", err


def _readonly_prefix(d) -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None:
        pytest.skip("root without unshare: cannot make a read-only mount")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {d} {d} && mount -o remount,bind,ro {d} {d}"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here: {probe.stderr.decode()[:200]}")
    return ["unshare", "-m", "sh", "-c", f'mount --bind {d} {d} && mount -o remount,bind,ro {d} {d} && exec "$@"',
            "sh"]


def test_readonly_study_dir_status_and_inspect(finished_study, tmp_path):
    d = finished_study
    prefix = _readonly_prefix(d)
    if not prefix:
        for p in [d, *d.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        cmd = [*prefix, sys.executable, "-m", "mfbo.cli"]
        r = subprocess.run([*cmd, "status", str(d)], env=cli_env(), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "finished" in r.stdout, r.stderr[-2000:]
        r = subprocess.run([*cmd, "inspect", str(d)], env=cli_env(), capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        err = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(err) == 1 and str(d / "inspect") in err[0] and "--out" in err[0]
        r = subprocess.run([*cmd, "inspect", str(d), "--out", str(tmp_path / "rep")], env=cli_env(),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        assert (tmp_path / "rep").is_dir() and not (d / "inspect").exists()
    finally:
        if not prefix:
            for p in [d, *d.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)


def test_resume_after_failures_runs_one_probe_trial(tmp_path):
    study = write_study(tmp_path / "fail.toml", budget_ffe=5.0, workers=2, options={"always_fail": True},
                        execution={"max_failure_rate": 0.5, "min_trials_for_failure_rate": 3})
    d = tmp_path / "run"
    r = run_cli("run", study, "--no-progress", cwd=tmp_path)
    assert r.returncode == 2
    first = json.loads(run_cli("status", d, "--json").stdout)["trials"]["failed"]
    r = run_cli("resume", d, "--no-progress")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert len(line) == 1 and "failed too" in line[0], r.stderr[-2000:]
    assert f"{first + 1} of {first + 1} in the whole study" in line[0]
    st = json.loads(run_cli("status", d, "--json").stdout)
    assert st["trials"]["failed"] == first + 1 and st["status"] == "stopped"
