"""`mfbo train CONFIG` in a subprocess."""

import json
import subprocess
import sys

from tests.training.conftest import SMALL_FP, needs_fingerprints

pytestmark = needs_fingerprints


def _run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mfbo.cli", "train", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


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
