"""`mfbo train CONFIG` in a subprocess: test errors beside the trivial baselines, unseen elements."""

import json

from tests.helpers import run_cli
from tests.training.conftest import SMALL_FP, needs_fingerprints

pytestmark = needs_fingerprints


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
    proc = run_cli("train", "run.json", "--no-progress", cwd=tmp_path, timeout=300)
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
