"""End-to-end behaviour of train() on real GMP fingerprints (small sets, fast configurations)."""

import math

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from mfbo.errors import DataError, TrainingDiverged
from tests.training.conftest import SMALL_FP, needs_fingerprints

pytestmark = needs_fingerprints


def _strip(curve):
    return [{k: v for k, v in rec.items() if k not in ("wall_time", "epoch_time", "epoch_cpu_time")} for rec in curve]


def test_overfits_20_water_images(water):
    from mfbo.training import TrainConfig, evaluate_model, train

    images = water[:20]
    cfg = TrainConfig(fp_params=SMALL_FP, num_layers=2, num_nodes=20, batch_size=20, epochs=300, lr=1e-2,
                      activation="tanh", batchnorm=True, scheduler="none", warmup_epochs=0, keep_best=False,
                      get_forces=False, seed=0)
    result = train(cfg, images, images)
    assert len(result.curve) == 300
    metrics = evaluate_model(result.model, images, forces=False)
    assert metrics["energy_mae_per_atom"] < 0.005, metrics
    assert result.curve[-1]["val_energy_mae_per_atom"] == pytest.approx(metrics["energy_mae_per_atom"])
    assert result.curve[-1]["val_energy_mae_per_atom"] < 0.2 * result.curve[0]["val_energy_mae_per_atom"]


def test_record_keys_units_and_determinism(water, small_config):
    from mfbo.objectives import RECORD_KEYS
    from mfbo.training import train

    a = train(small_config, water[:12], water[30:36])
    b = train(small_config, water[:12], water[30:36])
    assert _strip(a.curve) == _strip(b.curve)
    c = train(small_config.replace(seed=2), water[:12], water[30:36])
    assert _strip(c.curve) != _strip(a.curve)
    for rec in a.curve:
        assert set(RECORD_KEYS) <= set(rec)
        for key in RECORD_KEYS:
            assert rec[key] is not None and math.isfinite(rec[key]), key
        assert rec["val_energy_mae_per_atom"] == pytest.approx(rec["val_energy_mae"] / 3)
    assert [r["epoch"] for r in a.curve] == [1, 2, 3]
    assert all(x["wall_time"] < y["wall_time"] for x, y in zip(a.curve, a.curve[1:]))
    assert a.timings["setup"] > 0 and a.n_train == 12 and a.n_val == 6


def test_epoch_fidelity_is_a_prefix_and_fraction_is_nested(water, small_config):
    from mfbo.training import nested_subset, train

    cfg = small_config.replace(scheduler="cosine", epochs=4)
    full = train(cfg, water[:16], water[30:34])
    short = train(cfg, water[:16], water[30:34], epochs=2)
    assert _strip(short.curve) == _strip(full.curve[:2])
    assert [r["lr"] for r in full.curve] != [cfg.lr] * 4  # cosine schedule moves
    half = train(cfg, water[:16], water[30:34], data_fraction=0.5, epochs=1)
    assert half.n_train == 8
    assert half.model.metadata["n_train"] == len(nested_subset(water[:16], 0.5, cfg.seed))


def test_forces_are_minus_energy_gradient(oc20_small, small_config):
    from mfbo.training import train

    result = train(small_config.replace(epochs=2), oc20_small[:5], oc20_small[5:7])
    model = result.model
    atoms = oc20_small[6].copy()
    pred = model.predict([atoms])
    forces = pred["forces"][0]
    rng = np.random.default_rng(0)
    h = 1e-4
    for i in rng.choice(len(atoms), 4, replace=False):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, k] += h
            minus.positions[i, k] -= h
            e = model.predict([plus, minus], forces=False)["energy"]
            numeric = -(e[0] - e[1]) / (2 * h)
            assert numeric == pytest.approx(forces[i, k], abs=1e-5 + 1e-5 * abs(forces[i, k]))
    assert np.abs(forces).max() > 1e-3  # a trained model predicts non-trivial forces


def _with_forces(images, fixed_scale):
    out = []
    for a in images:
        b = a.copy()
        f = a.get_forces(apply_constraint=False).copy()
        fixed = np.zeros(len(a), dtype=bool)
        for c in a.constraints:
            if isinstance(c, FixAtoms):
                fixed[c.get_indices()] = True
        f[fixed] *= fixed_scale
        b.calc = SinglePointCalculator(b, energy=a.get_potential_energy(), forces=f)
        out.append(b)
    return out


def test_fixed_atoms_excluded_from_force_loss(oc20_small, small_config):
    from mfbo.training import train

    assert all(any(isinstance(c, FixAtoms) for c in a.constraints) for a in oc20_small)
    cfg = small_config.replace(epochs=2, force_coefficient=1.0)
    original = _with_forces(oc20_small[:5], 1.0)
    bogus = _with_forces(oc20_small[:5], 1000.0)  # garbage forces on fixed atoms only
    val = oc20_small[5:7]
    a = train(cfg, original, val)
    b = train(cfg, bogus, val)
    assert [r["train_loss"] for r in a.curve] == [r["train_loss"] for r in b.curve]
    assert [r["train_force_mae_free"] for r in a.curve] == [r["train_force_mae_free"] for r in b.curve]
    assert b.curve[0]["train_force_mae"] > 10 * a.curve[0]["train_force_mae"]  # "all atoms" metric sees them
    c = train(cfg.replace(force_loss_atoms="all"), bogus, val)
    assert c.curve[0]["train_loss"] > 10 * a.curve[0]["train_loss"]


def test_huge_learning_rate_diverges(water, small_config):
    from mfbo.training import train

    with pytest.raises(TrainingDiverged) as info:
        train(small_config.replace(lr=1e8, epochs=30, batch_size=2), water[:16], water[30:34])
    err = info.value
    assert 1 <= err.epoch <= 30
    assert "diverged at epoch" in str(err)
    if err.epoch > 1:
        assert err.last_metrics["epoch"] == err.epoch - 1
        assert all(v is None or math.isfinite(v) for v in err.last_metrics.values())


def test_calculator_agrees_with_trainer(oc20_small, small_config, tmp_path):
    from mfbo.training import MfboCalculator, TrainedModel, evaluate_model, train

    val = oc20_small[5:7]
    result = train(small_config.replace(epochs=2), oc20_small[:5], val, test_images=val)
    assert result.test_metrics["energy_mae"] == pytest.approx(result.curve[-1]["val_energy_mae"], rel=1e-10)
    assert result.test_metrics["force_mae"] == pytest.approx(result.curve[-1]["val_force_mae"], rel=1e-10)
    errors_e, errors_f = [], []
    for ref in val:
        atoms = ref.copy()
        atoms.calc = MfboCalculator(result.model, allow_unseen_elements=True)  # agreement, not refusal, is tested
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces(apply_constraint=False)
        assert atoms.get_potential_energies().sum() == pytest.approx(energy, abs=1e-8)
        errors_e.append(abs(energy - ref.get_potential_energy()))
        errors_f.append(np.abs(forces - ref.get_forces(apply_constraint=False)).ravel())
    assert np.mean(errors_e) == pytest.approx(result.curve[-1]["val_energy_mae"], rel=1e-9)
    assert np.concatenate(errors_f).mean() == pytest.approx(result.curve[-1]["val_force_mae"], rel=1e-9)
    reloaded = TrainedModel.load(result.model.save(tmp_path / "model.npz"))
    again = evaluate_model(reloaded, val)
    assert again["energy_mae"] == pytest.approx(result.test_metrics["energy_mae"], rel=1e-12)
    assert again["force_mae"] == pytest.approx(result.test_metrics["force_mae"], rel=1e-12)


def test_training_data_without_forces_is_refused(water, small_config):
    from mfbo.training import train

    broken = []
    for k, ref in enumerate(water[:6]):
        a = ref.copy()
        forces = ref.get_forces() if k < 3 else None
        a.calc = SinglePointCalculator(a, energy=ref.get_potential_energy(), forces=forces)
        broken.append(a)
    with pytest.raises(DataError, match="training set.*image 3 has no forces"):
        train(small_config, broken, water[30:32])
    assert train(small_config.replace(get_forces=False, epochs=1), broken, water[30:32]).curve[0][
        "val_force_mae"] is None


def test_float32_and_mae_loss_and_step_schedule(water, small_config, tmp_path):
    from mfbo.training import TrainedModel, train

    cfg = small_config.replace(dtype="float32", loss="mae", scheduler="step", scheduler_step_size=1,
                               scheduler_gamma=0.5, target_scaling="amptorch", feature_scaling="standardize")
    result = train(cfg, water[:8], water[30:32])
    assert [r["lr"] for r in result.curve] == pytest.approx([1e-2, 5e-3, 2.5e-3])
    assert result.model.dtype.is_floating_point and str(result.model.dtype) == "torch.float32"
    loaded = TrainedModel.load(result.model.save(tmp_path / "m32.npz"))
    e = loaded.predict(water[30:32])["energy"]
    assert np.all(np.isfinite(e)) and e.dtype == np.float64


def test_on_epoch_sees_each_record_and_its_exception_stops_training(water, small_config):
    from mfbo.training import train

    seen = []
    result = train(small_config, water[:12], water[30:36], on_epoch=seen.append)
    assert seen == result.curve

    class Stop(Exception):
        pass

    calls = []

    def stop_after_two(record):
        calls.append(record["epoch"])
        if record["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        train(small_config.replace(epochs=5), water[:12], water[30:36], on_epoch=stop_after_two)
    assert calls == [1, 2]
