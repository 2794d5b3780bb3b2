"""The builtin backend end to end (tiny): trials train the real SingleNN; the final run retrains the
recommendation at target fidelity, tests it and saves a model that loads."""

from __future__ import annotations

import json

import pytest

from mfbo.study import Study, load_study_file
from tests.helpers import water_study

pytest.importorskip("mfbo.objectives._builtin", reason="the builtin objective (engineer TR) is not available")


def test_builtin_study_retrains_tests_and_saves_model(tmp_path, monkeypatch):
    monkeypatch.setenv("MFBO_CACHE_DIR", str(tmp_path / "fpcache"))
    water_study(tmp_path / "s.toml", name="tiny_builtin", data={"test": "bundled:water", "subsample": 14,
                                                                "test_subsample": 6, "val_fraction": 0.2},
                execution={"workers": 1, "trial_timeout": 300})
    study = Study.from_file(tmp_path / "s.toml")
    out = study.run(progress=False)
    assert out["status"] == "finished", out
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    assert best["final"] is True and set(best["params"]) == {"lr", "num_nodes"}
    assert best["fidelity"] == {"data_fraction": 1.0, "epochs": 3}
    assert best["train_config"]["num_nodes"] == best["params"]["num_nodes"]
    assert best["train_config"]["lr"] == pytest.approx(best["params"]["lr"])
    tm = best["test_metrics"]
    assert tm and tm["energy_mae"] > 0 and tm["force_mae"] > 0
    from mfbo.training import TrainedModel

    model = TrainedModel.load(best["model_path"])
    assert model is not None
    # the data split is fixed in the study directory and the test set never reached a trial
    cfg = load_study_file(tmp_path / "s.toml", check_output=False)
    assert cfg.test_subsample == 6
    from ase.io import read

    assert len(read(tmp_path / "run" / "data" / "test.traj", ":")) == 6
    assert len(read(tmp_path / "run" / "data" / "val.traj", ":")) == 3
    for t in study.trials:
        assert t.status == "completed", t.error
        assert "n_train" in (t.metadata.get("metadata") or {})


def _first_trial(tmp_path, mode: str) -> dict:
    """Trial 0 of a tiny builtin study run by ``mfbo run`` with ``data_mode = mode``."""
    from tests.helpers import run_cli

    folder = tmp_path / mode
    folder.mkdir()
    study = water_study(folder / "s.toml", name=f"tiny_{mode}", budget_ffe=0.2, final={"enabled": False},
                        data={"subsample": 14, "val_fraction": 0.2, "data_mode": mode, "featurize_workers": 1,
                              "shard_size": 4},
                        execution={"workers": 1, "trial_timeout": 300})
    r = run_cli("run", study, "--no-progress", cwd=folder, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((folder / "run" / "results" / "trial_000000.json").read_text())


def test_a_streamed_study_gives_the_in_memory_first_trial(tmp_path):
    """The same study with data_mode = "stream" and "memory" (same seed): trial 0 has the same
    parameters and metrics; the streamed one read its subset from shards beside the study's split."""
    memory = _first_trial(tmp_path, "memory")
    stream = _first_trial(tmp_path, "stream")
    assert stream["params"] == memory["params"]
    assert (stream["data_fraction"], stream["epochs"]) == (memory["data_fraction"], memory["epochs"])
    assert stream["metadata"]["data_mode"] == "stream" and memory["metadata"]["data_mode"] == "memory"
    assert stream["metadata"]["n_train"] == memory["metadata"]["n_train"]
    assert len(stream["records"]) == len(memory["records"]) == stream["epochs"]
    for a, b in zip(stream["records"], memory["records"]):
        for key in ("train_energy_mae_per_atom", "val_energy_mae", "val_energy_mae_per_atom", "val_force_mae"):
            assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12), key
    assert stream["curve"] == pytest.approx(memory["curve"], rel=1e-9)
    shards = list((tmp_path / "stream" / "run" / "data" / "shards").glob("*/*/shard-*"))
    assert shards and not (tmp_path / "memory" / "run" / "data" / "shards").exists()
