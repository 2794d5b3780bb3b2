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
