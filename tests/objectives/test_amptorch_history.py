"""The AMPTorch backend's learning-curve records and skorch plumbing, in a real skorch loop.

AMPTorch trains through skorch's ``NeuralNetRegressor``; the backend's worker adds a scoring
callback and a fixed in-order validation split to that net. These tests drive the same callback
and split in mfbo's own environment (skorch 1.x) with a real skorch net around a tiny
energy/force model that has AMPTorch's interface: batches -> (energies, forces), and a dataset
with a ``target_scaler.denorm(tensor, pred=...)``. The metrics are checked against a direct
computation from the trained net's predictions. The same code inside real AMPTorch (skorch
0.10, its own interpreter) is tested in test_amptorch_real.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

skorch = pytest.importorskip("skorch", reason="skorch (AMPTorch's training loop) is not installed")

from ase import Atoms  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
from ase.constraints import FixAtoms  # noqa: E402

from mfbo.errors import ObjectiveError, TrainingDiverged  # noqa: E402
from mfbo.objectives import RECORD_KEYS, metric_curve  # noqa: E402
from mfbo.objectives._amptorch_history import (  # noqa: E402
    SplitTargets,
    make_scoring_callback,
    records_from_history,
    split_metrics,
    tail_split,
)

WATER = Path(__file__).resolve().parents[2] / "mfbo" / "datasets" / "water_2d.traj"
N_VAL = 5


class _Scaler:
    # AMPTorch's TargetScaler interface: the net predicts energies in scaled units.
    def denorm(self, tensor, pred):
        return tensor * 4.0 - 2.0 if pred == "energy" else tensor * 4.0


class _Images(torch.utils.data.Dataset):
    def __init__(self, images):
        self.target_scaler = _Scaler()
        self.x = [torch.tensor(a.get_positions(), dtype=torch.float64) for a in images]
        self.y = [((a.get_potential_energy() + 2.0) / 4.0, torch.tensor(a.get_forces(apply_constraint=False)) / 4.0)
                  for a in images]

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def _collate(items):
    xs = [x for x, _ in items]
    index = torch.cat([torch.full((len(x),), k) for k, x in enumerate(xs)])
    energies = torch.tensor([y[0] for _, y in items], dtype=torch.float64)
    return [torch.cat(xs), index], [energies, torch.cat([y[1] for _, y in items])]


class _PairModel(torch.nn.Module):
    """Per-atom energy from positions, summed per image; forces = -dE/dx (AMPTorch's outputs)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 1).double()

    def forward(self, batch):
        x, index = batch
        with torch.enable_grad():
            x = x.clone().requires_grad_(True)
            atomic = self.lin(torch.tanh(x)).sum(1)
            energy = torch.zeros(int(index.max()) + 1, dtype=atomic.dtype).index_add(0, index, atomic)
            forces = -torch.autograd.grad(energy.sum(), x, create_graph=True)[0]
        return energy, forces


class _Loss(torch.nn.Module):
    def forward(self, prediction, target):
        return 0.5 * (((prediction[0] - target[0]) ** 2).mean() + 0.1 * ((prediction[1] - target[1]) ** 2).mean())


def _net(images, lr, epochs, divergence_factor=1e4):
    from skorch import NeuralNetRegressor
    from skorch.callbacks import LRScheduler

    torch.manual_seed(0)
    scoring = make_scoring_callback(SplitTargets(images[:-N_VAL], True), SplitTargets(images[-N_VAL:], True),
                                     True, divergence_factor)
    return NeuralNetRegressor(
        _PairModel, criterion=_Loss, lr=lr, batch_size=4, max_epochs=epochs, optimizer=torch.optim.Adam,
        iterator_train__collate_fn=_collate, iterator_valid__collate_fn=_collate, train_split=tail_split(N_VAL),
        callbacks=[LRScheduler("StepLR", step_size=1, gamma=0.5), ("mfbo_scoring", scoring)], verbose=0,
    )


def _images(n=17):
    import ase.io

    return ase.io.read(str(WATER), f":{n}")


def test_scoring_callback_records_mfbo_metrics_in_the_skorch_history():
    images = _images()
    net = _net(images, lr=1e-2, epochs=3)
    net.fit(_Images(images), None)
    records = records_from_history(net.history)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert set(RECORD_KEYS) <= set(records[0])
    # the learning rate used during each epoch, under StepLR(gamma=0.5)
    assert [r["lr"] for r in records] == pytest.approx([1e-2, 5e-3, 2.5e-3])
    assert all(b["wall_time"] > a["wall_time"] for a, b in zip(records, records[1:]))
    # skorch's own validation loss was computed on exactly our held-out tail
    assert all(np.isfinite(r["amptorch_valid_loss"]) for r in records)

    # The last record equals a direct evaluation of the trained net on the last N_VAL images.
    val_images = images[-N_VAL:]
    energy, forces = net.forward(torch.utils.data.Subset(_Images(images), range(len(images) - N_VAL, len(images))))
    energy = energy.detach().numpy() * 4.0 - 2.0
    forces = forces.detach().numpy() * 4.0
    ref_e = np.array([a.get_potential_energy() for a in val_images])
    natoms = np.array([len(a) for a in val_images])
    ref_f = np.concatenate([a.get_forces(apply_constraint=False) for a in val_images])
    last = records[-1]
    assert last["val_energy_mae"] == pytest.approx(np.abs(energy - ref_e).mean(), rel=1e-9)
    assert last["val_energy_mae_per_atom"] == pytest.approx((np.abs(energy - ref_e) / natoms).mean(), rel=1e-9)
    assert last["val_force_mae"] == pytest.approx(np.abs(forces - ref_f).mean(), rel=1e-9)
    assert metric_curve(records, "val_energy_mae_per_atom")[-1] == last["val_energy_mae_per_atom"]


def testtail_split_holds_out_exactly_the_last_images():
    data = list(range(23))
    train, val = tail_split(N_VAL)(data, None)
    assert list(train) == data[:-N_VAL] and list(val) == data[-N_VAL:]
    train, val = tail_split(N_VAL)(data)  # skorch versions differ in passing y
    assert len(val) == N_VAL


def test_a_blow_up_raises_training_diverged_with_the_last_finite_record():
    images = _images()
    # A loss that grows by any factor > 0.5 counts as a blow-up at this setting.
    net = _net(images, lr=50.0, epochs=4, divergence_factor=0.5)
    with pytest.raises(TrainingDiverged) as info:
        net.fit(_Images(images), None)
    assert info.value.epoch >= 2
    assert info.value.last_metrics["epoch"] == info.value.epoch - 1
    assert np.isfinite(info.value.last_metrics["val_energy_mae"])


def _image(n, energy, forces, fixed=()):
    atoms = Atoms("H" * n, positions=np.arange(3 * n, dtype=float).reshape(n, 3))
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    if fixed:
        atoms.set_constraint(FixAtoms(indices=list(fixed)))
    return atoms


def test_split_metrics_per_image_per_atom_and_free_atoms():
    f1 = np.zeros((2, 3))
    f2 = np.ones((4, 3))
    images = [_image(2, -10.0, f1), _image(4, -20.0, f2, fixed=(0, 1))]
    targets = SplitTargets(images, with_forces=True)
    pred_f = np.concatenate([f1 + 0.3, f2 + np.array([[0.0], [0.0], [0.6], [0.6]])])
    out = split_metrics(np.array([-9.0, -24.0]), pred_f, targets, "val")
    assert out["val_energy_mae"] == pytest.approx((1.0 + 4.0) / 2)
    assert out["val_energy_mae_per_atom"] == pytest.approx((1.0 / 2 + 4.0 / 4) / 2)
    assert out["val_force_mae"] == pytest.approx((6 * 0.3 + 6 * 0.6) / 18)
    # free atoms: both of image 1, atoms 2 and 3 of image 2
    assert out["val_force_mae_free"] == pytest.approx((6 * 0.3 + 6 * 0.6) / 12)
    with pytest.raises(ObjectiveError, match="energies"):
        split_metrics(np.array([1.0]), None, targets, "val")
    no_forces = split_metrics(np.array([-10.0, -20.0]), None, SplitTargets(images, False), "train")
    assert no_forces["train_energy_mae"] == 0.0 and no_forces["train_force_mae"] is None


def _history(values):
    rows = []
    for epoch, v in enumerate(values, start=1):
        row = {"epoch": epoch, "dur": 0.5, "train_loss": v, "val_energy_mae": 10 * v}
        for key in ("train_energy_mae", "train_energy_mae_per_atom", "val_energy_mae", "val_energy_mae_per_atom",
                    "train_force_mae", "train_force_mae_free", "val_force_mae", "val_force_mae_free"):
            row["mfbo_" + key] = v * (2 if key.startswith("val") else 1)
        row["mfbo_lr"] = 1e-3
        row["mfbo_wall_time"] = 0.5 * epoch
        rows.append(row)
    return rows


def test_records_and_curves_from_a_skorch_history():
    records = records_from_history(_history([3.0, 2.0, 1.5]))
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[2]["val_energy_mae_per_atom"] == 3.0
    assert records[1]["wall_time"] == 1.0 and records[0]["amptorch_val_energy_mae"] == 30.0
    # The shared metric of every backend applies to these records unchanged.
    assert metric_curve(records, "val_energy_mae_per_atom") == [6.0, 4.0, 3.0]
    weighted = metric_curve(records, {"val_energy_mae_per_atom": 1.0, "val_force_mae": 0.5})
    assert weighted == pytest.approx([9.0, 6.0, 4.5])
    broken = _history([1.0])
    del broken[0]["mfbo_val_force_mae"]
    with pytest.raises(ObjectiveError, match="val_force_mae"):
        records_from_history(broken)
    none_forces = records_from_history([{**_history([1.0])[0], "mfbo_val_force_mae": None}])
    assert none_forces[0]["val_force_mae"] is None
    with pytest.raises(ObjectiveError, match="val_force_mae"):
        metric_curve(none_forces, "val_force_mae")
