"""``mfbo export``: best configuration -> AMPTorch / built-in trainer config, and back."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

from mfbo.errors import ConfigError
from mfbo.objectives._amptorch_config import build_amptorch_config, config_to_jsonable
from mfbo.objectives._export import (
    ExportError,
    export_amptorch,
    export_mfbo,
    load_amptorch_config_json,
    load_amptorch_config_py,
    load_mfbo_config,
    params_from_amptorch_config,
    read_best,
)
from mfbo.training._config import TrainConfig, config_from_hyperparameters
from tests.helpers import WATER, run_cli

BEST_PARAMS = {
    "fp_scheme": "gmpordernorm", "sigma_min": 0.2, "sigma_max": 2.8, "n_sigmas": 5, "sigma_spacing": "log",
    "mcsh_order": 3, "cutoff": 6.5, "solid_harmonics": True,
    "num_layers": 2, "num_nodes": 24, "activation": "silu", "batchnorm": True, "dropout": 0.0,
    "lr": 0.0021, "weight_decay": 1e-6, "force_coefficient": 0.04, "batch_size": 32,
    "scheduler": "step", "scheduler_gamma": 0.3, "scheduler_step_size": 12,
}


def _study(tmp_path, params=BEST_PARAMS, train=str(WATER), **extra):
    study = tmp_path / "study"
    study.mkdir()
    best = {"params": params, "train_config": TrainConfig(epochs=60).to_dict(),
            "test_metrics": {"test_energy_mae_per_atom": 0.012}, "model_path": "model.pt", **extra}
    if train is not None:
        best["train"] = train
    (study / "best.json").write_text(json.dumps(best))
    return study


def _cli(*args, cwd=None):
    # The real CLI in a subprocess (each start costs a few seconds of imports: used sparingly).
    return run_cli("export", *args, cwd=cwd, timeout=300)


def _main(capsys, *args):
    # The same dispatcher in-process: exit code, stdout and stderr as a user sees them.
    from mfbo.cli import main

    code = main(["export", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_amptorch_export_round_trips(tmp_path):
    study = _study(tmp_path)
    out = tmp_path / "out"
    proc = _cli(study, "--format", "amptorch", "--out", out)
    assert proc.returncode == 0, proc.stderr
    py_path, json_path = out / "amptorch_config.py", out / "amptorch_config.json"
    assert proc.stdout.split() == [str(py_path), str(json_path)]

    expected = build_amptorch_config(BEST_PARAMS, TrainConfig(epochs=60), raw_data=str(WATER), elements=["H", "O"],
                                     debug=False, verbose=True, save_fps=True, identifier="mfbo-best")
    from_py = load_amptorch_config_py(py_path)
    assert from_py == expected
    assert from_py["model"]["activation"] is torch.nn.SiLU
    assert from_py["optim"]["optimizer"] is torch.optim.Adam
    assert from_py["cmd"]["dtype"] is torch.DoubleTensor
    assert from_py["dataset"]["raw_data"] == str(WATER)
    assert set(from_py["dataset"]["fp_params"]["atom_gaussians"]) == {"H", "O"}
    assert load_amptorch_config_json(json_path) == expected
    assert json.loads(json_path.read_text()) == config_to_jsonable(expected)
    assert load_amptorch_config_py(py_path, resolve=False)["model"]["activation"] == "torch.nn.SiLU"

    # The file is plain Python whose `config` is exactly what the safe loader reads.
    namespace = runpy.run_path(str(py_path), run_name="exported")
    assert namespace["config"] == from_py

    # ... and it encodes the study's best design hyperparameters.
    back = params_from_amptorch_config(from_py)
    for key, value in BEST_PARAMS.items():
        if isinstance(value, float):
            assert back[key] == pytest.approx(value, rel=1e-5), key
        else:
            assert back[key] == value, key


def test_mfbo_export_round_trips(tmp_path, capsys):
    study = _study(tmp_path)
    code, out, err = _main(capsys, study, "--format", "mfbo")
    assert code == 0, err
    path = study / "export" / "mfbo_config.json"
    assert out.strip() == str(path)
    loaded = load_mfbo_config(path)
    assert loaded == config_from_hyperparameters(TrainConfig(epochs=60), BEST_PARAMS)
    assert loaded.fp_params["MCSHs"]["orders"] == [0, 1, 2, 3]
    assert loaded.num_nodes == 24 and loaded.activation == "silu" and loaded.epochs == 60


def test_gmp_export_without_recorded_data(tmp_path):
    params = {**BEST_PARAMS, "fp_scheme": "gmp", "mcsh_order": 2, "scheduler": "none", "solid_harmonics": False}
    study = _study(tmp_path, params=params, train=None)
    py_path, json_path = export_amptorch(study)
    config = load_amptorch_config_py(py_path)
    assert config["dataset"]["raw_data"] == "train.traj"
    assert "Edit config['dataset']['raw_data']" in py_path.read_text()
    assert config["dataset"]["fp_params"]["MCSHs"]["2"]["groups"] == [1, 2]
    assert config["optim"]["scheduler"] == {}
    back = params_from_amptorch_config(config)
    assert back["scheduler"] == "none" and back["mcsh_order"] == 2 and back["fp_scheme"] == "gmp"
    assert back["sigma_spacing"] == "log" and back["n_sigmas"] == 5 and back["solid_harmonics"] is False
    # --raw-data overrides
    py_path, _ = export_amptorch(study, tmp_path / "o2", raw_data="/scratch/oc20.traj")
    assert load_amptorch_config_py(py_path)["dataset"]["raw_data"] == "/scratch/oc20.traj"


def test_bad_study_dirs_give_one_clear_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = _main(capsys, empty, "--format", "mfbo")
    assert code == 2 and err.strip().count("\n") == 0
    assert err.startswith("mfbo export: error: ") and "best.json not found" in err

    code, out, err = _main(capsys, tmp_path / "nope")
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0 and "does not exist" in err
    code, _, err = _main(capsys, empty, "--format", "mfbo", "--check")
    assert code == 2 and "--check" in err

    with pytest.raises(ExportError, match="not valid JSON"):
        (empty / "best.json").write_text("{broken")
        read_best(empty)
    with pytest.raises(ExportError, match="'params'"):
        (empty / "best.json").write_text(json.dumps({"train_config": {}}))
        read_best(empty)
    with pytest.raises(ExportError, match="not writable|cannot create"):
        export_mfbo(_study(tmp_path), out_dir="/proc/forbidden")


def test_check_without_an_amptorch_interpreter_fails_clearly_and_writes_nothing(tmp_path, capsys):
    study = _study(tmp_path)
    code, out, err = _main(capsys, study, "--check", "--python", tmp_path / "no-python")
    assert code == 2 and out == ""
    assert err.startswith("mfbo export: error: ") and err.strip().count("\n") == 0
    assert str(tmp_path / "no-python") in err and "MFBO_AMPTORCH_PYTHON" in err and "numpy < 1.24" in err
    assert not (study / "export").exists()


def test_check_in_an_environment_without_amptorch_reports_its_error_and_writes_nothing(tmp_path, capsys):
    # mfbo's own interpreter stands in for a broken AMPTorch environment.
    study = _study(tmp_path)
    code, out, err = _main(capsys, study, "--check", "--python", sys.executable)
    assert code == 2 and out == "" and err.strip().count("\n") == 0
    assert "1-epoch smoke fit" in err and "No module named 'amptorch'" in err
    assert not (study / "export").exists()


def test_loader_never_executes_the_file(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.py"
    evil.write_text(f"import os\nconfig = {{'a': __import__('os').system('touch {marker}')}}\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_amptorch_config_py(evil)
    assert not marker.exists()
    for body in ("config = {'x': os.environ}", "config = {'x': torch.load}", "config = {**other}",
                 "config = [1, 2]"):
        (tmp_path / "bad.py").write_text("import torch\n" + body + "\n")
        with pytest.raises(ConfigError):
            load_amptorch_config_py(tmp_path / "bad.py")
    (tmp_path / "none.py").write_text("x = 1\n")
    with pytest.raises(ConfigError, match="does not assign"):
        load_amptorch_config_py(tmp_path / "none.py")
    (tmp_path / "syntax.py").write_text("config = {\n")
    with pytest.raises(ConfigError, match="not valid Python"):
        load_amptorch_config_py(tmp_path / "syntax.py")
    ok = tmp_path / "ok.py"
    ok.write_text("import torch\nconfig = {'a': (-1, 2.5e-3), 'b': [None, True], 'c': torch.nn.Tanh}\n")
    assert load_amptorch_config_py(ok) == {"a": (-1, 2.5e-3), "b": [None, True], "c": torch.nn.Tanh}


@pytest.mark.parametrize("raw", [False, True])
def test_mfbo_export_is_a_run_file_mfbo_train_accepts(tmp_path, raw):
    from ase.io import read, write

    small = tmp_path / "small.traj"
    write(small, read(WATER, ":10"))
    study = _study(tmp_path, train=None)
    (study / "data").mkdir()
    if not raw:  # a study's fixed split
        write(study / "data" / "train.traj", read(WATER, ":8"))
        write(study / "data" / "val.traj", read(WATER, "8:10"))
    args = ["--raw-data", small] if raw else []
    proc = _cli(study, "--format", "mfbo", *args)
    assert proc.returncode == 0, proc.stderr
    run_file = Path(proc.stdout.strip())
    data = json.loads(run_file.read_text())
    assert data["train"] == str(small if raw else study / "data" / "train.traj")
    assert ("val" in data) is (not raw)
    assert load_mfbo_config(run_file).num_nodes == 24
    train = run_cli("train", run_file, "--epochs", "1", "--no-progress", "--output", tmp_path / "trained",
                    timeout=600)
    assert train.returncode == 0, train.stderr[-2000:]
    assert (tmp_path / "trained" / "model.npz").is_file()
