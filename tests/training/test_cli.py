"""`mfbo train CONFIG` in a subprocess."""

import json

from tests.helpers import run_cli
from tests.training.conftest import SMALL_FP, needs_fingerprints

pytestmark = needs_fingerprints


def _run(*args, cwd):
    return run_cli("train", *args, cwd=cwd, timeout=300)


def test_train_cli_toml_writes_model_and_record(tmp_path):
    import tomli_w
    from ase.io import read, write

    from mfbo.datasets import WATER

    images = read(str(WATER), index=":24")
    write(tmp_path / "water.traj", images)
    run = {"train": "water.traj", "test": "water.traj", "fp_params": SMALL_FP, "epochs": 3, "num_nodes": 8,
           "num_layers": 2, "batch_size": 4, "lr": 0.01, "val_fraction": 0.25, "output": "out"}
    (tmp_path / "run.toml").write_text(tomli_w.dumps(run))
    proc = _run("run.toml", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "val E (eV/atom)" in proc.stdout and "test (24 images)" in proc.stdout
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert record["status"] == "completed" and len(record["curve"]) == 3
    assert record["n_train"] == 18 and record["n_val"] == 6
    assert (tmp_path / "out" / "model.npz").is_file()
    from mfbo.training import TrainedModel

    model = TrainedModel.load(tmp_path / "out" / "model.npz")
    assert model.config.num_nodes == 8


def test_train_cli_bad_inputs(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.json").write_text(json.dumps({"train": "missing.traj"}))
    proc = _run("bad.json", cwd=tmp_path)
    assert proc.returncode == 2
    assert "missing.traj" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # The same dispatcher in-process (each subprocess pays the torch import).
    from mfbo.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "typo.json").write_text(json.dumps({"train": "x.traj", "num_nodez": 3}))
    assert main(["train", "typo.json"]) == 2
    assert "num_nodez" in capsys.readouterr().err
    (tmp_path / "broken.toml").write_text("train = [")
    assert main(["train", "broken.toml"]) == 2
    assert "broken.toml" in capsys.readouterr().err
    assert main(["train", "nothing-here.toml"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_cli_divergence_keeps_the_record(tmp_path, capsys, monkeypatch):
    from ase.io import read, write

    from mfbo.cli import main
    from mfbo.datasets import WATER

    write(tmp_path / "w.traj", read(str(WATER), index=":20"))
    run = {"train": "w.traj", "fp_params": SMALL_FP, "epochs": 30, "lr": 1e8, "batch_size": 2,
           "num_layers": 2, "num_nodes": 8, "output": "div"}
    (tmp_path / "div.json").write_text(json.dumps(run))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "div.json", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "diverged at epoch" in err and len(err.strip().splitlines()) == 1
    record = json.loads((tmp_path / "div" / "record.json").read_text())
    assert record["status"] == "diverged" and record["epoch"] >= 1


def test_train_cli_puts_test_errors_beside_the_baselines_and_warns_on_unseen_elements(tmp_path):
    import numpy as np
    import pytest
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import read, write

    from mfbo.datasets import WATER
    from mfbo.training import baseline_metrics

    images = read(str(WATER), index=":24")
    odd = images[23].copy()
    odd.symbols[1] = "Cu"  # the test set holds an element no training image has
    odd.calc = SinglePointCalculator(odd, energy=images[23].get_potential_energy(), forces=images[23].get_forces())
    write(tmp_path / "train.traj", images[:18])
    write(tmp_path / "test.traj", [*images[18:23], odd])
    run = {"train": "train.traj", "test": "test.traj", "fp_params": SMALL_FP, "epochs": 2, "num_layers": 2,
           "num_nodes": 8, "activation": "tanh", "batchnorm": False, "batch_size": 4, "lr": 0.01,
           "force_coefficient": 1.0, "val_fraction": 0.25, "output": "out"}
    (tmp_path / "run.json").write_text(json.dumps(run))
    proc = _run("run.json", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "test set" in warnings[0] and "Cu" in warnings[0], proc.stderr
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert record["unseen_test_elements"] == ["Cu"]
    # Baselines fitted on the whole training file (training + validation images), scored on the test file.
    train_images, test_images = read(tmp_path / "train.traj", ":"), read(tmp_path / "test.traj", ":")
    expected = baseline_metrics(train_images, test_images)
    base = record["test_baselines"]
    assert base["n_images"] == 6
    for kind, key in (("linear_fit", "energy_mae_per_atom"), ("mean_energy", "energy_mae"),
                      ("zero_forces", "force_mae")):
        assert base[kind][key] == pytest.approx(expected[kind][key], rel=1e-12), kind
    all_forces = np.concatenate([a.get_forces(apply_constraint=False) for a in test_images])
    assert base["zero_forces"]["force_mae"] == pytest.approx(np.abs(all_forces).mean(), rel=1e-12)
    tm, ratios = record["test_metrics"], record["test_ratios"]
    assert ratios["energy_vs_linear_fit"] == pytest.approx(
        tm["energy_mae_per_atom"] / base["linear_fit"]["energy_mae_per_atom"], rel=1e-12)
    assert ratios["force_vs_zero"] == pytest.approx(tm["force_mae"] / base["zero_forces"]["force_mae"], rel=1e-12)
    assert "x the per-element linear fit" in proc.stdout and "x zero forces" in proc.stdout
