"""kill -9 of the driver at random points, then `mfbo resume`: nothing lost, nothing counted twice."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.study.conftest import cli_env, run_cli, stored_experiment, wait_for, write_study


def _rows(d: Path) -> dict[int, dict]:
    con = sqlite3.connect(f"file:{d / 'study.db'}?mode=ro", uri=True)
    try:
        cur = con.execute("SELECT trial_id, status, value, cost_ffe, data_fraction, epochs FROM mfbo_trial "
                          "WHERE kind = 'trial'")
        return {r[0]: {"status": r[1], "value": r[2], "cost_ffe": r[3], "data_fraction": r[4], "epochs": r[5]}
                for r in cur.fetchall()}
    except sqlite3.OperationalError:  # killed before the tables existed
        return {}
    finally:
        con.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except FileNotFoundError:
        return False


def test_kill9_driver_at_random_points_then_resume(tmp_path):
    seed = int(os.environ.get("MFBO_TEST_SEED", time.time_ns() % 100000))
    rng = random.Random(seed)
    calls = tmp_path / "calls"
    study = write_study(tmp_path / "crash.toml", budget_ffe=0.45, workers=2,
                        options={"delay": 0.25, "script_dir": str(calls)})
    d = tmp_path / "run"
    snapshots = []
    for session in range(2):
        args = ["run", study, "--no-progress"] if session == 0 else ["resume", d, "--no-progress"]
        n0 = len(list((d / "results").glob("trial_*.json"))) if d.exists() else 0
        target = n0 + rng.randint(1, 3)
        with open(tmp_path / f"driver{session}.err", "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "mfbo.cli", *map(str, args)], cwd=tmp_path,
                                    env=cli_env(), stdout=subprocess.DEVNULL, stderr=err)
        wait_for(lambda p=proc, n=target: p.poll() is not None
                 or len(list((d / "results").glob("trial_*.json"))) >= n, timeout=150)
        time.sleep(rng.uniform(0.0, 1.2))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        snapshots.append({k: v for k, v in _rows(d).items() if v["status"] in ("completed", "failed")})
        # the workers die with their driver: none keeps computing after a kill -9
        pids = [int(p.read_text()) for p in calls.glob("call_*")] if calls.exists() else []
        assert wait_for(lambda pids=pids: not any(_alive(p) for p in pids), timeout=10), f"seed {seed}"

    r = run_cli("resume", d, "--no-progress", timeout=240)
    assert r.returncode == 0, f"seed {seed}: {r.stderr[-3000:]}"
    rows = _rows(d)
    # nothing lost: every trial finished before a kill is still there, unchanged
    for snap in snapshots:
        for tid, row in snap.items():
            assert rows[tid] == row, f"seed {seed}: trial {tid} changed"
    assert not [t for t, r in rows.items() if r["status"] == "running"]
    # every result file was ingested exactly once, as what it says
    files = {int(p.stem.split("_")[1]): json.loads(p.read_text()) for p in (d / "results").glob("trial_*.json")}
    for tid, rec in files.items():
        assert rows[tid]["status"] == rec["status"], f"seed {seed}: trial {tid}"
        if rec["status"] == "completed":
            assert rows[tid]["value"] == rec["curve"][-1]
    for tid, row in rows.items():
        if row["status"] == "abandoned":  # killed with its driver: no late result slipped in
            assert tid not in files and row["cost_ffe"] == 0.0
        else:
            assert tid in files
    # the budget accounting continued: each finished trial counted once at its nominal FFE
    st = json.loads(run_cli("status", d, "--json").stdout)
    expected = sum(r["data_fraction"] * r["epochs"] / 8 for r in rows.values()
                   if r["status"] in ("completed", "failed"))
    assert abs(st["budget"]["ffe_used"] - expected) < 1e-9
    assert st["trials"]["completed"] == sum(r["status"] == "completed" for r in rows.values())
    assert st["status"] == "finished" and (d / "best.json").is_file()
    # the Ax experiment in the study DB holds the same completed trials and observations
    exp = stored_experiment(d)
    completed = [t for t in exp.trials.values() if t.status.is_completed]
    assert len(completed) == st["trials"]["completed"]
    df = exp.lookup_data().df.sort_values(["trial_index", "step"])
    finals = sorted(df.groupby("trial_index")["mean"].last().tolist())
    assert finals == pytest.approx(sorted(r["value"] for r in rows.values() if r["status"] == "completed"),
                                   rel=1e-8)  # Ax stores 10 significant digits
