"""analysis/benchmarks/mlip/record.py: a killed recording resumes without redoing finished runs."""

from __future__ import annotations

import collections
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "analysis" / "benchmarks" / "mlip" / "record.py"
MLEARN = ROOT.parent / "shared" / "data" / "mlearn"


@pytest.fixture(scope="module")
def tiny_si(tmp_path_factory):
    """Nine small Si training structures and two test structures from the mlearn split."""
    if not (MLEARN / "Si_training.extxyz").is_file():
        pytest.skip(f"mlearn data not found at {MLEARN}")
    from ase.io import read, write

    d = tmp_path_factory.mktemp("si")
    train = sorted(read(MLEARN / "Si_training.extxyz", ":"), key=len)[:9]
    test = sorted(read(MLEARN / "Si_test.extxyz", ":"), key=len)[:2]
    write(d / "train.extxyz", train)
    write(d / "test.extxyz", test)
    return d / "train.extxyz", d / "test.extxyz"


def _cmd(tiny, out: Path) -> list[str]:
    return [sys.executable, str(RECORD), "--dataset", "si", "--train", str(tiny[0]), "--test", str(tiny[1]),
            "--n-configs", "2", "--seeds", "2", "--epochs", "2", "--fractions", "0.5", "1", "--out", str(out)]


def _runs(log: Path) -> list[tuple]:
    out = []
    for line in log.read_text().splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        if e.get("kind") == "run":
            out.append((e["index"], e["seed"], e["fraction"]))
    return out


def test_killed_recording_resumes_without_redoing_runs(tiny_si, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    log = tmp_path / "si.progress.jsonl"
    proc = subprocess.Popen(_cmd(tiny_si, tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            # Kill at the first finished run: a run of these tiny sets takes tens of ms, so a later
            # point can be missed on a quiet machine.
            if log.is_file() and _runs(log):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the recording finished before it could be killed: " + proc.stdout.read().decode()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    before = _runs(log)
    assert 1 <= len(before) < 8
    lines_before = [ln for ln in log.read_text().split("\n")[:-1]]  # complete lines (a kill may cut the last)

    res = subprocess.run(_cmd(tiny_si, tmp_path), env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"{len(before)} of 8 runs" in res.stdout
    after = _runs(log)
    counts = collections.Counter(after)
    assert len(counts) == 8 and max(counts.values()) == 1, counts  # every run once: none redone
    # the runs finished before the kill are untouched, and come first
    assert log.read_text().splitlines()[: len(lines_before)] == lines_before

    with gzip.open(tmp_path / "si.json.gz", "rt") as fh:
        rec = json.load(fh)
    assert rec["format"] == "mfbo-mlip-records-1" and len(rec["configs"]) == 2
    for c in rec["configs"]:
        assert len(c["runs"]) == 4
        for r in c["runs"]:
            assert len(r["curves"]["val_force_mae_free"]) == 2 and len(r["epoch_cpu_s"]) == 2
    # nothing left to do: a third call trains nothing
    res = subprocess.run(_cmd(tiny_si, tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "0 configurations to go" in res.stdout and "recorded 0 runs" in res.stdout
