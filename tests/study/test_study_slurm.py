"""The Dask executor on a real SLURM cluster (dask-jobqueue ``SLURMCluster``), driven through the
``mfbo`` CLI: a study end to end with its trials in worker jobs, kill -9 of the driver while its
jobs are queued and while they run then ``mfbo resume``, a cancelled worker job, and no job left
behind. Needs ``sbatch`` and a node that is up: ``.ci/setup-slurm.sh`` starts a one-node cluster
on 127.0.0.1. Every test names its jobs uniquely and cancels whatever is left of them at the end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from mfbo.study._launchers import JOBS_FILE
from tests.study.conftest import cli_env, run_cli, wait_for, write_study

# A hang guard for whole studies, not a speed requirement.
HANG_S = 420


def _slurm_missing() -> str | None:
    """Why SLURM cannot run these tests here, or None when it can."""
    if shutil.which("sbatch") is None:
        return "sbatch not found: SLURM is not installed (.ci/setup-slurm.sh installs and starts a one-node cluster)"
    try:
        r = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"sinfo failed: {exc}"
    states = {s.strip("*~#!%$@^-") for s in r.stdout.split()}
    if r.returncode != 0 or not states & {"idle", "mixed", "allocated", "completing"}:
        return (f"SLURM is installed but no node is up (sinfo: {(r.stdout or r.stderr).strip() or 'nothing'}); "
                "start it with .ci/setup-slurm.sh")
    return None


def _jobs(name: str) -> dict[str, str]:
    """job id -> state of the jobs called ``name`` that SLURM still lists."""
    r = subprocess.run(["squeue", "--noheader", f"--name={name}", "--format=%i %T"], capture_output=True,
                       text=True, timeout=60)
    return dict(ln.split() for ln in r.stdout.splitlines() if len(ln.split()) == 2)


def _gone(ids, timeout: float = 60) -> bool:
    """Whether SLURM stops listing ``ids`` (completing jobs need a few seconds to leave)."""
    def none_left():
        r = subprocess.run(["squeue", "--noheader", "--format=%i", f"--jobs={','.join(ids)}"], capture_output=True,
                           text=True, timeout=60)
        return not set(r.stdout.split()) & set(ids)
    return not ids or wait_for(none_left, timeout, 0.5)


@pytest.fixture
def job_name():
    """A job name unique to this test; afterwards every job of that name is cancelled."""
    reason = _slurm_missing()
    if reason:
        pytest.skip(reason)
    name = f"mfbo-test-{uuid.uuid4().hex[:10]}"
    yield name
    subprocess.run(["scancel", f"--name={name}"], capture_output=True, timeout=60)
    wait_for(lambda: not _jobs(name), 60, 0.5)


def _study(tmp_path: Path, name: str, *, workers: int = 2, budget_ffe: float = 0.25, options: dict | None = None,
           extra_directives: list[str] | None = None, max_failure_rate: float = 0.3,
           trial_timeout: float | None = None) -> Path:
    dask_options = {
        "cores": 1, "processes": 1, "memory": "1GB", "walltime": "00:15:00", "interface": "lo",
        "job_name": name, "log_directory": str(tmp_path / "job-logs"),
        "scheduler_options": {"dashboard_address": "127.0.0.1:0"},
    }
    if extra_directives:
        dask_options["job_extra_directives"] = extra_directives
    execution = {"executor": "dask", "max_failure_rate": max_failure_rate,
                 "dask": {"cluster": "slurm", "options": dask_options}}
    if trial_timeout is not None:
        execution["trial_timeout"] = trial_timeout
    return write_study(tmp_path / "slurm.toml", budget_ffe=budget_ffe, workers=workers, options=options,
                       execution=execution)


def _rows(d: Path) -> dict[int, dict]:
    con = sqlite3.connect(f"file:{d / 'study.db'}?mode=ro", uri=True)
    try:
        cur = con.execute("SELECT trial_id, status, error FROM mfbo_trial WHERE kind = 'trial'")
        return {r[0]: {"status": r[1], "error": r[2]} for r in cur.fetchall()}
    finally:
        con.close()


def _start(tmp_path: Path, args: list, tag: str) -> subprocess.Popen:
    with open(tmp_path / f"driver-{tag}.err", "w") as err:
        return subprocess.Popen([sys.executable, "-m", "mfbo.cli", *map(str, args), "--no-progress"], cwd=tmp_path,
                                env=cli_env(), stdout=subprocess.DEVNULL, stderr=err)


def _kill9(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _recorded_jobs(d: Path) -> list[str]:
    return json.loads((d / JOBS_FILE).read_text())["jobs"]


def _job_of(pid: int) -> str | None:
    """The SLURM job a (local) process runs in, from its environment."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((v.split(b"=", 1)[1].decode() for v in env if v.startswith(b"SLURM_JOB_ID=")), None)


def test_slurm_study_runs_trials_in_worker_jobs_and_leaves_none(tmp_path, job_name):
    study = _study(tmp_path, job_name)
    r = run_cli("run", study, "--no-progress", cwd=tmp_path, timeout=HANG_S)
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path / "run"
    st = json.loads(run_cli("status", d, "--json").stdout)
    assert st["status"] == "finished"
    assert st["trials"]["completed"] >= 3 and st["trials"]["failed"] == 0
    recs = [json.loads(p.read_text()) for p in (d / "results").glob("*.json")]
    assert len(recs) == st["trials"]["completed"] + 1  # the trials and the final retraining
    jobs = {rec["batch_job"] for rec in recs}
    assert None not in jobs and all(j.isdigit() for j in jobs), f"a trial ran outside a SLURM job: {jobs}"
    # nothing left: the worker jobs end with the driver and their record is removed
    assert _gone(sorted(jobs)), _jobs(job_name)
    assert wait_for(lambda: not _jobs(job_name), 60, 0.5), _jobs(job_name)
    assert not (d / JOBS_FILE).exists()


def test_slurm_kill9_driver_with_jobs_queued_then_running_then_resume(tmp_path, job_name):
    calls = tmp_path / "calls"
    # Jobs wait 4 s in the queue (BeginTime) before they start; call 1 of the objective hangs.
    study = _study(tmp_path, job_name, options={"delay": 0.2, "script_dir": str(calls), "script": {"1": "hang"}},
                   extra_directives=["--begin=now+4"])
    d = tmp_path / "run"

    # 1. kill -9 while the worker jobs are queued
    proc = _start(tmp_path, ["run", study], "queued")
    try:
        # the driver records a job's id right after sbatch returns: wait for the record, then the queue
        assert wait_for(lambda: proc.poll() is not None or ((d / JOBS_FILE).exists() and len(_recorded_jobs(d)) >= 2
                                                            and len(_jobs(job_name)) >= 2), HANG_S, 0.2)
        queued = _jobs(job_name)
        _kill9(proc)
    finally:
        _kill9(proc)
    assert set(queued.values()) == {"PENDING"}, queued
    assert sorted(_recorded_jobs(d)) == sorted(queued)

    # 2. resume: the queued jobs of the dead driver are cancelled; kill -9 again once a trial runs (and hangs)
    proc = _start(tmp_path, ["resume", d], "running")
    try:
        assert wait_for(lambda: proc.poll() is not None or (calls / "call_0001").exists(), HANG_S, 0.2)
        assert proc.poll() is None, (tmp_path / "driver-running.err").read_text()[-3000:]
        assert _gone(list(queued), 30), f"the queued jobs of the killed driver are still there: {_jobs(job_name)}"
        running = _jobs(job_name)
        _kill9(proc)
    finally:
        _kill9(proc)
    assert "RUNNING" in running.values(), running
    log = (d / "study.log").read_text()
    said = [ln for ln in log.splitlines() if "left by an earlier driver" in ln]
    assert len(said) == 1 and sorted(said[0].split(": ")[-1].split(", ")) == sorted(queued), said

    # 3. resume to the end: the running jobs are cancelled, the hung trial is abandoned, the study finishes
    r = run_cli("resume", d, "--no-progress", cwd=tmp_path, timeout=HANG_S)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _gone(list(running), 30), _jobs(job_name)
    rows = _rows(d)
    assert not [t for t, row in rows.items() if row["status"] == "running"]
    hung = [t for t, row in rows.items() if row["status"] == "abandoned"]
    assert hung and all("driver stopped" in rows[t]["error"] for t in hung)
    assert sum(row["status"] == "completed" for row in rows.values()) >= 3
    assert (d / "best.json").is_file()
    assert wait_for(lambda: not _jobs(job_name), 60, 0.5), _jobs(job_name)
    assert not (d / JOBS_FILE).exists()


def test_slurm_cancelled_worker_job_fails_its_trial_with_the_reason(tmp_path, job_name):
    calls = tmp_path / "calls"
    study = _study(tmp_path, job_name, options={"delay": 0.2, "script_dir": str(calls), "script": {"0": "hang"}},
                   max_failure_rate=0.6)
    d = tmp_path / "run"
    proc = _start(tmp_path, ["run", study], "scancel")
    try:
        assert wait_for(lambda: proc.poll() is not None or (calls / "call_0000").exists(), HANG_S, 0.2)
        assert proc.poll() is None, (tmp_path / "driver-scancel.err").read_text()[-3000:]
        job = _job_of(int((calls / "call_0000").read_text()))
        assert job in _jobs(job_name), (job, _jobs(job_name))
        subprocess.run(["scancel", job], check=True, timeout=60)
        proc.wait(HANG_S)
    finally:
        _kill9(proc)
    assert proc.returncode == 0, (tmp_path / "driver-scancel.err").read_text()[-3000:]
    rows = _rows(d)
    failed = [row for row in rows.values() if row["status"] == "failed"]
    assert len(failed) == 1, rows  # the trial that hung, and no other
    assert f"SLURM job {job} (job state CANCELLED)" in failed[0]["error"], failed[0]["error"]
    assert sum(row["status"] == "completed" for row in rows.values()) >= 3
    st = json.loads(run_cli("status", d, "--json").stdout)
    assert st["status"] == "finished"
    assert wait_for(lambda: not _jobs(job_name), 60, 0.5), _jobs(job_name)
    assert not (d / JOBS_FILE).exists()


def test_slurm_trial_timeout_counts_on_the_worker_and_cancels_its_job(tmp_path, job_name):
    calls = tmp_path / "calls"
    # the jobs wait 8 s in the queue, longer than the 6 s timeout; call 0 of the objective hangs
    study = _study(tmp_path, job_name, options={"delay": 0.2, "script_dir": str(calls), "script": {"0": "hang"}},
                   extra_directives=["--begin=now+8"], trial_timeout=6, max_failure_rate=0.6)
    r = run_cli("run", study, "--no-progress", cwd=tmp_path, timeout=HANG_S)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = _rows(tmp_path / "run")
    failed = [row for row in rows.values() if row["status"] == "failed"]
    assert len(failed) == 1, rows  # only the hung trial: the time in the queue did not count
    assert failed[0]["error"].startswith("timed out after 6 s (execution.trial_timeout)"), failed[0]["error"]
    assert "and its worker's SLURM job" in failed[0]["error"], failed[0]["error"]
    assert sum(row["status"] == "completed" for row in rows.values()) >= 3
    assert wait_for(lambda: not _jobs(job_name), 60, 0.5), _jobs(job_name)


def test_slurm_refused_job_options_are_one_line_before_any_job(tmp_path, job_name):
    study = _study(tmp_path, job_name)
    text = study.read_text().replace('cores = 1', 'cores = 1\nqueue = "no-such-partition"')
    study.write_text(text)
    r = run_cli("run", study, "--no-progress", cwd=tmp_path, timeout=HANG_S)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "SLURM refuses the worker job" in ln]
    assert len(lines) == 1 and "no-such-partition" in lines[0], r.stderr[-3000:]
    assert not _jobs(job_name)


def test_dask_slurm_without_sbatch_is_one_line(tmp_path):
    study = _study(tmp_path, "mfbo-test-no-sbatch")
    env = cli_env(PATH=str(tmp_path / "empty-bin"))  # no sbatch there
    r = run_cli("run", study, "--no-progress", cwd=tmp_path, env=env, timeout=HANG_S)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert "submits worker jobs with 'sbatch', which is not on PATH" in r.stderr, r.stderr[-3000:]
