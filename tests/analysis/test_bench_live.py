"""analysis/bench_live.py end to end on a tiny budget: both methods, every checkpoint, JSON and report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.helpers import load_analysis_script

pytestmark = pytest.mark.slow


def _bench():
    return load_analysis_script("bench_live.py")


def test_bench_live_runs_both_methods_and_reports_finite_test_errors(tmp_path, monkeypatch):
    from ase.io import read, write

    from mfbo.datasets import WATER

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    images = read(str(WATER), index=":30")
    write(tmp_path / "train.traj", images[:24])
    write(tmp_path / "test.traj", images[24:])
    bench = _bench()
    out = tmp_path / "out"
    wall = 40.0  # about the least mfbo init accepts for 24 images (the final retraining must fit)
    results = bench.run_cells(["tiny"], [0], wall, out,
                              paths={"tiny": (tmp_path / "train.traj", tmp_path / "test.traj")})
    assert results == json.loads((out / "results.json").read_text())
    cell = results["tiny"]["0"]
    assert set(cell) == {"mfbo", "optuna"}
    for method in ("mfbo", "optuna"):
        entry = cell[method]
        assert entry["wall_time_s"] == wall and entry["elapsed_s"] > 0
        assert [cp["fraction"] for cp in entry["checkpoints"]] == [0.25, 0.5, 0.75, 1.0]
        end = entry["checkpoints"][-1]
        assert end["params"] and end["test_metrics"] is not None, method
        for cp in entry["checkpoints"]:
            if cp["test_metrics"] is None:
                assert cp["params"] is None  # no recommendation yet at that time
                continue
            m = cp["test_metrics"]
            assert m["n_images"] == 6
            for key in ("energy_mae", "energy_mae_per_atom", "force_mae"):
                assert math.isfinite(m[key]) and m[key] > 0, (method, cp["fraction"], key)
    # Optuna trained every trial within the wall time and counted them.
    assert sum(cell["optuna"]["trials"].values()) == len(cell["optuna"]["trial_log"]) >= 1
    assert all(t["t"] <= wall + 60 for t in cell["optuna"]["trial_log"])

    summaries = bench.report(results, ["tiny"], out)
    assert (out / "live_tiny.png").stat().st_size > 0
    rows = summaries["tiny"]["checkpoints"]
    assert len(rows) == 4 and rows[-1]["mfbo_energy"][0] > 0 and rows[-1]["optuna_energy"][0] > 0
    assert set(summaries["tiny"]["time_to_optuna_final"]) == {"energy", "force", "score"}

    # The cells' fingerprint caches are gone; the mfbo study folder stays.
    work = out / "work" / "tiny-s0"
    assert not any(p.name in ("cache", "retrain-cache") for p in work.glob("*/*"))
    assert Path(cell["mfbo"]["study_dir"], "best.json").is_file()

    # A second call finds every cell done and runs nothing.
    before = (out / "results.json").read_text()
    bench.run_cells(["tiny"], [0], wall, out, paths={"tiny": (tmp_path / "train.traj", tmp_path / "test.traj")})
    assert (out / "results.json").read_text() == before
