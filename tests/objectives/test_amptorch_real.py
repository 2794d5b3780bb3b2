"""The AMPTorch backend against real AMPTorch (master 02e5af3), in its own interpreter.

The interpreter comes from the ``amptorch_python`` fixture (tests/objectives/conftest.py):
``MFBO_AMPTORCH_PYTHON``, or the environment ``.ci/setup-amptorch.sh`` builds from the vendored
source archive. Each AMPTorch process spends most of its ~10 s importing torch-geometric and
skorch, so the tests run few of them.
"""

from __future__ import annotations

import json
import math
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mfbo.errors import TrainingDiverged
from mfbo.objectives._amptorch import AmptorchObjective
from mfbo.objectives._amptorch_env import smoke_config, tiny_images, worker_env
from mfbo.training._config import TrainConfig
from tests.helpers import TINY_FP, WATER, load_analysis_script, run_cli, water_study


def _water(n):
    import ase.io

    return ase.io.read(str(WATER), f":{n}")


def test_evaluate_trains_in_amptorchs_own_environment(amptorch_python, tmp_path):
    images = _water(16)
    objective = AmptorchObjective(images[:12], images[12:], python=amptorch_python, workdir=tmp_path,
                                  base_config=TrainConfig(epochs=2, batch_size=4, fp_params=TINY_FP))
    assert objective.smoke_info["versions"]["numpy"] == "1.23.5"  # not mfbo's numpy
    cwd = Path.cwd()
    result = objective.evaluate({"num_layers": 2, "num_nodes": 5}, data_fraction=1.0, epochs=2)
    assert Path.cwd() == cwd
    assert len(result["curve"]) == 2 and all(math.isfinite(v) for v in result["curve"])
    assert [r["epoch"] for r in result["records"]] == [1, 2]
    assert result["records"][1]["val_energy_mae_per_atom"] == pytest.approx(result["curve"][1])
    assert all(r["val_force_mae"] > 0 and "amptorch_train_loss" in r for r in result["records"])
    meta = result["metadata"]
    assert meta["n_val"] == 4 and meta["n_train"] == 12 and meta["threads"] == 1
    assert meta["versions"]["skorch"] == "0.10.0" and meta["python"] == amptorch_python
    assert result["cost"] > 0 and not list(tmp_path.iterdir())  # the trial's folder is removed
    restored = pickle.loads(pickle.dumps(objective))
    assert restored.python == amptorch_python and restored._loaded is None


def test_fit_tests_and_keeps_the_weights_and_a_divergence_crosses_the_process_boundary(amptorch_python, tmp_path):
    images = _water(16)
    base = TrainConfig(epochs=2, batch_size=4, fp_params=TINY_FP)
    objective = AmptorchObjective(images[:12], images[12:], python=amptorch_python, base_config=base, smoke=False)
    fit = objective.fit({"num_nodes": 4}, 1.0, 2, test=_water(20)[16:])
    assert set(fit.test_metrics) >= {"energy_mae", "energy_mae_per_atom", "force_mae", "n_images"}
    assert fit.test_metrics["n_images"] == 4 and len(fit.curve) == 2 and fit.n_train == 12
    fit.model.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz") as z:
        weights = [k for k in z.files if k.startswith("param:")]
        assert weights and json.loads(str(z["config_json"]))["model"]["num_nodes"] == 4
    assert (tmp_path / "model.npz.amptorch" / "params.pt").is_file()  # AMPTorch's own checkpoint

    # Any epoch after the first "exceeds" 1e-9 x the best loss: diverges at epoch 2.
    touchy = AmptorchObjective(images[:12], images[12:], python=amptorch_python, smoke=False,
                               base_config=TrainConfig(epochs=3, batch_size=4, fp_params=TINY_FP,
                                                       divergence_factor=1e-9))
    with pytest.raises(TrainingDiverged) as info:
        touchy.evaluate({}, 1.0, 3)
    assert info.value.epoch == 2 and info.value.last_metrics["epoch"] == 1


def test_worker_restores_the_global_state_amptorch_changes(amptorch_python, tmp_path):
    # AMPTorch changes the working directory, torch's default dtype and skorch.net.to_tensor;
    # run_amptorch must undo all three (checked inside AMPTorch's interpreter).
    import ase.io

    from mfbo.objectives._amptorch import build_amptorch_config, config_to_jsonable

    images = tiny_images(["H", "O"])
    ase.io.write(str(tmp_path / "images.traj"), images)
    config = build_amptorch_config({}, TrainConfig(fp_params=TINY_FP), train_images=images[:1],
                                   val_images=images[1:], epochs=1, torch_objects=False)
    config["dataset"]["raw_data"] = "<images>"
    (tmp_path / "config.json").write_text(json.dumps(smoke_config(config_to_jsonable(config), ["H", "O"],
                                                                  str(tmp_path / "run"))))
    script = (
        "import json, os, sys, ase.io, torch, skorch.net\n"
        "from mfbo.objectives._amptorch_config import config_from_jsonable\n"
        "from mfbo.objectives._amptorch_worker import run_amptorch\n"
        "config = config_from_jsonable(json.load(open('config.json')))\n"
        "images = ase.io.read('images.traj', ':')\n"
        "config['dataset']['raw_data'] = images\n"
        "cwd, dtype, to_tensor = os.getcwd(), torch.get_default_dtype(), skorch.net.to_tensor\n"
        "seen = {}\n"
        "def after(trainer):\n"
        "    seen.update(cwd=os.getcwd(), dtype=str(torch.get_default_dtype()),\n"
        "                patched=skorch.net.to_tensor is not to_tensor)\n"
        "records, timings, _ = run_amptorch(config, 1, images[:1], images[1:], 1e12, after)\n"
        "print(json.dumps({'inside': seen, 'epochs': len(records), 'cwd': os.getcwd() == cwd,\n"
        "                  'dtype': torch.get_default_dtype() == dtype, 'to_tensor': skorch.net.to_tensor is to_tensor}))\n"
    )
    proc = subprocess.run([amptorch_python, "-c", script], cwd=tmp_path, env=worker_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # AMPTorch did change all three while it ran ...
    assert out["inside"] == {"cwd": str(tmp_path / "run"), "dtype": "torch.float64", "patched": True}
    # ... and all three are back afterwards.
    assert out["epochs"] == 1 and out["cwd"] and out["dtype"] and out["to_tensor"]




def test_study_with_the_amptorch_backend_finishes_and_exports_a_checked_config(amptorch_python, tmp_path):
    water_study(tmp_path / "s.toml", backend="amptorch", name="tiny_amptorch", options={"python": amptorch_python},
                data={"test": "bundled:water", "subsample": 14, "test_subsample": 4, "val_fraction": 0.25},
                epochs=(1, 2), budget_ffe=0.75, execution={"workers": 1, "trial_timeout": 300},
                final={"timeout": 300})
    proc = run_cli("run", "s.toml", "--no-progress", cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads(run_cli("status", "run", "--json", cwd=tmp_path).stdout)
    assert status["status"] == "finished"
    assert status["trials"]["completed"] >= 2 and status["trials"]["failed"] == 0
    best = run_cli("best", "run", "--json", cwd=tmp_path)
    assert best.returncode == 0, best.stderr
    best = json.loads(best.stdout)
    assert best["test_metrics"]["n_images"] == 4 and best["test_metrics"]["energy_mae_per_atom"] > 0
    assert best["fidelity"] == {"data_fraction": 1.0, "epochs": 2}
    assert Path(best["model_path"]).is_file()

    # `mfbo export --check` trains the exported config for one epoch in AMPTorch before writing it.
    proc = run_cli("export", "run", "--check", "--python", amptorch_python, cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "export" / "amptorch_config.py").is_file()


def test_parity_with_the_same_start_and_no_validation_leak(amptorch_python):
    # analysis/parity_amptorch.py's "no leak" variant, smaller: AMPTorch's settings, the
    # built-in trainer's initial weights, one batch per epoch, validation = the training images.
    # What remains is AMPTorch's energy std over the duplicated images (ddof=1), smaller by
    # 1 - sqrt((N-1)/N * 2N/(2N-1)) (1.1 % for N = 24); the curves agree within 2 %.
    parity = load_analysis_script("parity_amptorch.py")
    train_images = _water(24)
    val_images = [a.copy() for a in train_images]
    for atoms, src in zip(val_images, train_images):
        atoms.calc = src.calc
    config = TrainConfig(**dict(parity.AMPTORCH_SEED_CONFIG, batch_size=len(train_images), fp_params=TINY_FP))
    builtin, initial = parity.builtin_run(config, train_images, val_images, 3)
    amp = parity.amptorch_run(amptorch_python, config, train_images, val_images, 3, initial)
    for b, a in zip(builtin, amp, strict=True):
        e_rel = abs(b["val_energy_mae_per_atom"] - a["val_energy_mae_per_atom"]) / a["val_energy_mae_per_atom"]
        f_rel = abs(b["val_force_mae"] - a["val_force_mae"]) / a["val_force_mae"]
        assert e_rel < 0.02 and f_rel < 0.02, (b["epoch"], e_rel, f_rel)
