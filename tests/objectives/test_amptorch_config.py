"""The AMPTorch config builder: AtomsTrainer keys and types, data placement, JSON round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from mfbo.errors import ConfigError
from mfbo.objectives._amptorch_config import (
    build_amptorch_config,
    config_from_jsonable,
    config_to_jsonable,
    training_settings,
    untransferable_settings,
)
from mfbo.training._config import TrainConfig, preset
from mfbo.training._data import nested_subset

# The keys of AtomsTrainer's config as AMPTorch's README lists them (master 02e5af3), with the
# value types it documents; "object" entries are classes. Kept literal here on purpose, so the
# test does not just compare the module with itself.
README = {
    "model": {"num_layers": int, "num_nodes": int, "get_forces": bool, "batchnorm": bool, "activation": type},
    "optim": {"gpus": int, "force_coefficient": float, "lr": float, "batch_size": int, "epochs": int,
              "optimizer": type, "loss": str, "metric": str, "cp_metric": str, "scheduler": dict},
    "dataset": {"raw_data": (str, list), "val_split": float, "elements": list, "fp_scheme": str,
                "fp_params": dict, "save_fps": bool, "scaling": dict},
    "cmd": {"debug": bool, "dtype": type, "run_dir": str, "seed": int, "identifier": str, "verbose": bool,
            "logger": bool},
}
# Read by AMPTorch master's trainer.py / SingleNN but absent from the README (its **custom_args).
EXTRA = {
    "model": {"name": str, "dropout": bool, "dropout_rate": float, "initialization": str},
    "optim": {"optimizer_args": dict},
    "dataset": {"val_split_mode": str},
    "cmd": {},
}

DATA = Path(__file__).resolve().parents[2] / "mfbo" / "datasets"


def _water(n=24):
    import ase.io

    return ase.io.read(str(DATA / "water_2d.traj"), f":{n}")


def _check_keys_and_types(config, *, with_elements=True):
    assert set(config) == {"model", "optim", "dataset", "cmd"}
    for section in README:
        expected = set(README[section]) | set(EXTRA[section])
        if not with_elements and section == "dataset":
            expected.discard("elements")
        assert set(config[section]) == expected, section
        for key, value in config[section].items():
            kind = README[section].get(key, EXTRA[section].get(key))
            assert isinstance(value, kind), (section, key, value)
            if kind is float:
                assert not isinstance(value, bool)
            if kind is int:
                assert not isinstance(value, bool)


GMP_PARAMS = {
    "fp_scheme": "gmp", "sigma_min": 0.25, "sigma_max": 2.5, "n_sigmas": 4, "sigma_spacing": "linear",
    "mcsh_order": 3, "cutoff": 6.0,
    "num_layers": 4, "num_nodes": 17, "activation": "gelu", "batchnorm": False, "dropout": 0.2, "lr": 3e-3,
    "weight_decay": 1e-5, "force_coefficient": 0.05, "batch_size": 8, "scheduler": "step",
    "scheduler_gamma": 0.5, "scheduler_step_size": 7,
}


def test_gmp_config_keys_types_and_placement():
    train, val = _water(30)[:24], _water(30)[24:]
    config = build_amptorch_config(GMP_PARAMS, TrainConfig(epochs=40), train_images=train, val_images=val,
                                   data_fraction=0.5, epochs=3)
    _check_keys_and_types(config)
    model, optim, dataset, cmd = config["model"], config["optim"], config["dataset"], config["cmd"]
    # network
    assert model["name"] == "singlenn"
    assert (model["num_layers"], model["num_nodes"], model["batchnorm"]) == (4, 17, False)
    assert model["activation"] is torch.nn.GELU
    assert model["dropout"] is True and model["dropout_rate"] == pytest.approx(0.2)
    assert model["get_forces"] is True
    # optimiser
    assert optim["lr"] == pytest.approx(3e-3) and optim["batch_size"] == 8
    assert optim["force_coefficient"] == pytest.approx(0.05)
    assert optim["epochs"] == 3  # the epoch fidelity, not the config's 40
    assert optim["optimizer"] is torch.optim.Adam
    assert optim["optimizer_args"] == {"optimizer__weight_decay": pytest.approx(1e-5)}
    assert optim["scheduler"] == {"policy": "StepLR", "params": {"step_size": 7, "gamma": 0.5}}
    assert optim["gpus"] == 0 and optim["loss"] == "mse"
    # fingerprints: per-order groups and sigmas, cutoff
    fp = dataset["fp_params"]
    assert dataset["fp_scheme"] == "gmp"
    assert fp["cutoff"] == 6.0
    assert list(fp["MCSHs"]) == ["0", "1", "2", "3"]
    for order, spec in fp["MCSHs"].items():
        assert spec["groups"] == list(range(1, max(1, int(order)) + 1))
        assert spec["sigmas"] == pytest.approx([0.25, 1.0, 1.75, 2.5])
    assert set(fp["atom_gaussians"]) == {"H", "O"}
    for path in fp["atom_gaussians"].values():
        assert Path(path).is_absolute() and Path(path).is_file()
    assert dataset["elements"] == ["H", "O"]
    assert cmd["dtype"] is torch.DoubleTensor and cmd["seed"] == TrainConfig().seed


def test_gmpordernorm_config_orders_sigmas_solid_harmonics():
    params = {"fp_scheme": "gmpordernorm", "sigma_min": 0.3, "sigma_max": 3.0, "n_sigmas": 3,
              "sigma_spacing": "log", "mcsh_order": 2, "cutoff": 7.5, "solid_harmonics": False,
              "activation": "softplus", "scheduler": "cosine"}
    images = _water(20)
    config = build_amptorch_config(params, TrainConfig(epochs=25), train_images=images[:15],
                                   val_images=images[15:], data_fraction=1.0, epochs=5)
    _check_keys_and_types(config)
    fp = config["dataset"]["fp_params"]
    assert config["dataset"]["fp_scheme"] == "gmpordernorm"
    assert fp["MCSHs"]["orders"] == [0, 1, 2]
    assert fp["MCSHs"]["sigmas"] == pytest.approx([0.3, math.sqrt(0.3 * 3.0), 3.0])
    assert fp["solid_harmonics"] is False and fp["cutoff"] == 7.5
    assert config["model"]["activation"] is torch.nn.Softplus
    # Cosine over the full run's epochs, so a 5-epoch trial is a prefix of the 25-epoch run.
    assert config["optim"]["scheduler"]["policy"] == "CosineAnnealingLR"
    assert config["optim"]["scheduler"]["params"]["T_max"] == 25
    assert config["optim"]["epochs"] == 5


def test_builder_uses_the_built_in_trainers_settings():
    # The AMPTorch config carries exactly the fingerprint parameters the built-in trainer uses.
    from mfbo.training._config import config_from_hyperparameters

    base = TrainConfig()
    cfg = config_from_hyperparameters(base, GMP_PARAMS)
    images = _water(12)
    config = build_amptorch_config(GMP_PARAMS, base, train_images=images[:9], val_images=images[9:])
    fp = dict(config["dataset"]["fp_params"])
    fp.pop("atom_gaussians")
    assert fp == cfg.fp_params
    assert training_settings(GMP_PARAMS, base) == cfg.to_dict()


@pytest.mark.parametrize("fraction", [0.1, 0.34, 0.5, 0.77, 1.0])
def test_raw_data_is_the_nested_subset_then_the_fixed_validation_set(fraction):
    images = _water(40)
    train, val = images[:31], images[31:]
    seed = 5
    config = build_amptorch_config({}, TrainConfig(seed=seed), train_images=train, val_images=val,
                                   data_fraction=fraction)
    raw = config["dataset"]["raw_data"]
    expected = nested_subset(train, fraction, seed)
    assert len(raw) == len(expected) + len(val)
    assert all(a is b for a, b in zip(raw[: len(expected)], expected))
    assert all(a is b for a, b in zip(raw[len(expected):], val))
    # AMPTorch's in-order split holds out int(N * val_split) trailing images: exactly ours.
    assert int(len(raw) * config["dataset"]["val_split"]) == len(val)
    assert config["dataset"]["val_split_mode"] == "inorder"


def test_val_split_is_exact_for_every_size():
    for n_train in range(1, 120, 7):
        for n_val in (1, 2, 5, 57):
            n = n_train + n_val
            assert int(n * ((n_val + 0.5) / n)) == n_val


def test_smaller_fractions_are_nested_in_larger_ones():
    images = _water(40)
    train, val = images[:30], images[30:]
    small = build_amptorch_config({}, None, train_images=train, val_images=val, data_fraction=0.3)
    large = build_amptorch_config({}, None, train_images=train, val_images=val, data_fraction=0.7)
    small_ids = {id(a) for a in small["dataset"]["raw_data"][:-10]}
    large_ids = {id(a) for a in large["dataset"]["raw_data"][:-10]}
    assert small_ids < large_ids


def test_export_mode_json_round_trip_and_explicit_atom_gaussians(tmp_path):
    fp_params = {"MCSHs": {"orders": [0, 1], "sigmas": [0.5, 1.0]}, "cutoff": 5.0, "solid_harmonics": True,
                 "atom_gaussians": {"Cu": "/data/Cu.g"}}
    base = TrainConfig(fp_scheme="gmpordernorm", fp_params=fp_params, dtype="float32", activation="tanh")
    config = build_amptorch_config({"lr": 0.01}, base, raw_data="/data/train.traj")
    _check_keys_and_types(config, with_elements=False)
    assert config["dataset"]["raw_data"] == "/data/train.traj"
    assert config["dataset"]["val_split"] == pytest.approx(base.val_fraction)
    assert config["dataset"]["val_split_mode"] == "cv"
    assert config["dataset"]["fp_params"]["atom_gaussians"] == {"Cu": "/data/Cu.g"}
    assert config["cmd"]["dtype"] is torch.FloatTensor
    import json

    text = json.dumps(config_to_jsonable(config))
    assert "torch.nn.Tanh" in text and "torch.optim.Adam" in text
    assert config_from_jsonable(json.loads(text)) == config
    # Without explicit files every bundled element is offered (AMPTorch reads only its own).
    plain = build_amptorch_config({}, None, raw_data="x.traj")
    assert {"Cu", "O", "H", "Pt"} <= set(plain["dataset"]["fp_params"]["atom_gaussians"])
    with pytest.raises(ConfigError, match="raw_data must be a path"):
        config_to_jsonable(build_amptorch_config({}, None, train_images=_water(4), val_images=_water(2)))


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ConfigError, match="feature_scaling"):
        build_amptorch_config({}, TrainConfig(feature_scaling="none"), raw_data="x.traj")
    no_cutoff = {"MCSHs": {"orders": [0], "sigmas": [1.0]}}
    with pytest.raises(ConfigError, match="cutoff"):
        build_amptorch_config({}, {**TrainConfig().to_dict(), "fp_params": no_cutoff}, raw_data="x.traj")
    with pytest.raises(ConfigError, match="val_images"):
        build_amptorch_config({}, None, train_images=_water(4), val_images=[])
    with pytest.raises(ConfigError, match="raw_data"):
        build_amptorch_config({}, None)
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        build_amptorch_config({"nonsense": 1}, None, raw_data="x.traj")


def test_untransferable_settings_are_named():
    assert untransferable_settings(preset("amptorch").to_dict()) == []
    notes = untransferable_settings(TrainConfig().to_dict())
    assert any("target_scaling" in n for n in notes) and any("FixAtoms" in n for n in notes)


def test_bundled_valence_files_are_the_fingerprint_engines():
    from mfbo.fingerprints._valence import bundled_valence_files
    from mfbo.objectives._amptorch_config import bundled_atom_gaussians

    assert bundled_atom_gaussians() == {el: str(Path(p).resolve()) for el, p in bundled_valence_files().items()}
    with pytest.raises(ConfigError, match="Xx"):
        bundled_atom_gaussians(["H", "Xx"])


def test_plateau_cosine_floor_and_what_does_not_transfer_are_stated():
    from mfbo.objectives._amptorch_config import untransferable_settings

    images = _water(12)
    base = TrainConfig(scheduler="plateau", scheduler_gamma=0.3, scheduler_patience=4, warmup_epochs=2,
                       keep_best=True, early_stopping_patience=5)
    config = build_amptorch_config({}, base, train_images=images[:9], val_images=images[9:])
    assert config["optim"]["scheduler"] == {"policy": "ReduceLROnPlateau", "params": {"factor": 0.3, "patience": 4}}
    cosine = build_amptorch_config({"scheduler": "cosine", "lr": 0.01}, TrainConfig(min_lr_ratio=0.1, epochs=30),
                                   train_images=images[:9], val_images=images[9:])
    assert cosine["optim"]["scheduler"]["params"] == {"T_max": 30, "eta_min": pytest.approx(0.001)}
    notes = " ".join(untransferable_settings(base.to_dict()))
    for word in ("warmup_epochs=2", "plateau", "keep_best", "early_stopping_patience=5"):
        assert word in notes
