"""AMPTorch config translation: a trial's settings as an ``AtomsTrainer(config)`` dict, and back.

Needs neither AMPTorch nor skorch, so studies build and export AMPTorch configs on machines
without them, and AMPTorch's own interpreter (see ``_amptorch_worker``) reads the same JSON.

The builder turns (design hyperparameters, a ``TrainConfig``, fidelities) into the
``AtomsTrainer(config)`` dict of AMPTorch's README: ``model`` / ``optim`` / ``dataset`` / ``cmd``.
A trial's data fraction is applied as the built-in trainer's nested subset (one seeded
permutation, the first ``ceil(f*N)`` images) and its fixed validation set is appended after the
training images and split off in order, so AMPTorch validates on exactly the images the built-in
trainer uses, instead of drawing its own random ``val_split``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mfbo.errors import ConfigError

__all__ = [
    "ACTIVATIONS",
    "README_KEYS",
    "TORCH_NAMES",
    "TRAINER_EXTRA_KEYS",
    "amptorch_fp_params",
    "build_amptorch_config",
    "bundled_atom_gaussians",
    "config_from_jsonable",
    "config_to_jsonable",
    "training_settings",
    "untransferable_settings",
]

# optimizer, dtype). README keys the builder never emits: model/optim loss_fn (we keep
# AMPTorch's CustomLoss), dataset lmdb_path (we pass raw data), cutoff_params (only for the
# "gaussian" symmetry-function scheme).
README_KEYS: dict[str, dict[str, Any]] = {
    "model": {
        "num_layers": int,
        "num_nodes": int,
        "get_forces": bool,
        "batchnorm": bool,
        "activation": type,
    },
    "optim": {
        "gpus": int,
        "force_coefficient": float,
        "lr": float,
        "batch_size": int,
        "epochs": int,
        "optimizer": type,
        "loss_fn": type,
        "loss": str,
        "metric": str,
        "cp_metric": str,
        "scheduler": dict,
    },
    "dataset": {
        "raw_data": (str, list),
        "lmdb_path": str,
        "val_split": float,
        "elements": list,
        "fp_scheme": str,
        "fp_params": dict,
        "cutoff_params": dict,
        "save_fps": bool,
        "scaling": dict,
    },
    "cmd": {
        "debug": bool,
        "dtype": type,
        "run_dir": str,
        "seed": int,
        "identifier": str,
        "verbose": bool,
        "logger": bool,
    },
}

# Keys AMPTorch master's trainer.py/model.py read that the README does not list: the README's
# ``**custom_args`` of the model (SingleNN's name/dropout/initialisation), the optimizer's extra
# arguments (weight decay) and the validation split mode ("inorder" keeps our fixed validation
# set, which is appended after the training images).
TRAINER_EXTRA_KEYS: dict[str, dict[str, Any]] = {
    "model": {"name": str, "dropout": bool, "dropout_rate": float, "initialization": str},
    "optim": {"optimizer_args": dict},
    "dataset": {"val_split_mode": str},
    "cmd": {},
}

# mfbo activation name -> torch.nn class name.
ACTIVATIONS = {"tanh": "Tanh", "silu": "SiLU", "gelu": "GELU", "softplus": "Softplus", "relu": "ReLU"}
_DTYPES = {"float64": "DoubleTensor", "float32": "FloatTensor"}
# Dotted names the JSON form and the .py loader may refer to, and nothing else.
TORCH_NAMES = frozenset(
    [f"torch.nn.{c}" for c in ACTIVATIONS.values()]
    + [f"torch.{c}" for c in _DTYPES.values()]
    + ["torch.optim.Adam", "torch.optim.AdamW"]
)


# --------------------------------------------------------------------------------------------
# Settings: TrainConfig + design hyperparameters
# --------------------------------------------------------------------------------------------


def _training_api(name: str):
    """``mfbo.training.<name>``, imported on first use (the builder's import stays light)."""
    import mfbo.training

    return getattr(mfbo.training, name)


def _trainconfig_class():
    return _training_api("TrainConfig")


def _config_dict(train_config) -> dict[str, Any]:
    if train_config is None:
        return _trainconfig_class()().to_dict()
    if hasattr(train_config, "to_dict"):
        return dict(train_config.to_dict())
    if isinstance(train_config, Mapping):
        return _trainconfig_class().from_dict(train_config).to_dict()  # validated, defaults filled in
    raise ConfigError(
        f"train_config must be a TrainConfig or a mapping of its fields, got {type(train_config).__name__}"
    )


def training_settings(params: Mapping[str, Any] | None, train_config=None) -> dict[str, Any]:
    """The built-in trainer's settings for a trial: ``train_config`` with ``params`` applied.

    Goes through ``mfbo.training.config_from_hyperparameters``, the function the built-in
    trainer uses, so both backends read the hyperparameters (GMP ones included) identically.

    Args:
        params: design hyperparameters (handbook contract 2); None or {} for none.
        train_config: a ``TrainConfig``, a mapping of its fields, or None for the defaults.

    Returns:
        dict of TrainConfig fields (``TrainConfig.to_dict()`` layout).
    """
    TrainConfig = _trainconfig_class()  # noqa: N806
    config_from_hyperparameters = _training_api("config_from_hyperparameters")
    base = TrainConfig.from_dict(_config_dict(train_config))
    return dict(config_from_hyperparameters(base, dict(params or {})).to_dict())


# --------------------------------------------------------------------------------------------
# Fingerprint parameters in AMPTorch's layout
# --------------------------------------------------------------------------------------------


def bundled_atom_gaussians(elements: Sequence[str] | None = None) -> dict[str, str]:
    """Absolute paths of mfbo's bundled valence-density files, element -> path.

    Args:
        elements: chemical symbols to include; None for every bundled element.

    Returns:
        dict element -> absolute path of ``<El>_pseudodensity_<N>.g``.
    """
    # The files the fingerprint engine reads (mfbo/fingerprints/valence_gaussians), located without
    # importing mfbo.fingerprints, whose torch import would slow every `mfbo export`.
    folder = Path(__file__).resolve().parents[1] / "fingerprints" / "valence_gaussians"
    found = {p.name.split("_", 1)[0]: str(p) for p in sorted(folder.glob("*_pseudodensity_*.g"))}
    if elements is None:
        return found
    missing = sorted(set(elements) - set(found))
    if missing:
        raise ConfigError(
            f"no bundled valence-density file for element(s) {', '.join(missing)} in {folder}; "
            "give fp_params['atom_gaussians'] with a .g file for each"
        )
    return {el: found[el] for el in sorted(set(elements))}


def amptorch_fp_params(fp_scheme: str, fp_params: Mapping[str, Any] | None,
                       elements: Sequence[str] | None = None) -> dict[str, Any]:
    """Validate fingerprint parameters and complete them the way AMPTorch needs them.

    AMPTorch's GMP descriptor has no default valence densities and reads
    ``fp_params["atom_gaussians"][element]`` for every element; mfbo defaults to its bundled
    files, so those paths are filled in (absolute) when absent, to featurise identically.

    Args:
        fp_scheme: "gmp" (``MCSHs`` = {"<order>": {"groups": [...], "sigmas": [...]}}) or
            "gmpordernorm" (``MCSHs`` = {"orders": [...], "sigmas": [...]}).
        fp_params: AMPTorch-layout parameters (cutoff in Å, sigmas in Å).
        elements: elements of the data, or None for every bundled element.

    Returns:
        A new fp_params dict (lists, floats and ints only; JSON-able).
    """
    if fp_scheme not in ("gmp", "gmpordernorm"):
        raise ConfigError(f"fp_scheme must be 'gmp' or 'gmpordernorm', got {fp_scheme!r}")
    if not isinstance(fp_params, Mapping) or "MCSHs" not in fp_params:
        raise ConfigError(
            f"fp_params must be a mapping with an 'MCSHs' entry (AMPTorch layout), got {fp_params!r}"
        )
    out = copy.deepcopy(dict(fp_params))
    mcshs = out["MCSHs"]
    if fp_scheme == "gmp":
        if not isinstance(mcshs, Mapping) or not mcshs or not all(re.fullmatch(r"\d+", str(k)) for k in mcshs):
            raise ConfigError("fp_params['MCSHs'] for fp_scheme 'gmp' must map orders '0', '1', ... to "
                              "{'groups': [...], 'sigmas': [...]}")
        out["MCSHs"] = {
            str(order): {"groups": [int(g) for g in spec["groups"]],
                         "sigmas": [float(s) for s in spec["sigmas"]]}
            for order, spec in sorted(mcshs.items(), key=lambda kv: int(kv[0]))
        }
    else:
        if not isinstance(mcshs, Mapping) or "orders" not in mcshs or "sigmas" not in mcshs:
            raise ConfigError("fp_params['MCSHs'] for fp_scheme 'gmpordernorm' must be "
                              "{'orders': [...], 'sigmas': [...]}")
        out["MCSHs"] = {"orders": [int(o) for o in mcshs["orders"]],
                        "sigmas": [float(s) for s in mcshs["sigmas"]]}
    if "cutoff" not in out:
        # AMPTorch's GMP has no default cutoff; gmpordernorm's default depends on a threshold.
        raise ConfigError("fp_params has no 'cutoff' (Å); AMPTorch's gmp scheme requires one")
    out["cutoff"] = float(out["cutoff"])
    if out["cutoff"] <= 0:
        raise ConfigError(f"fp_params['cutoff'] must be > 0 Å, got {out['cutoff']}")
    if not out.get("atom_gaussians"):
        out["atom_gaussians"] = bundled_atom_gaussians(elements)
    else:
        out["atom_gaussians"] = {str(k): str(v) for k, v in out["atom_gaussians"].items()}
    return out


# --------------------------------------------------------------------------------------------
# The config builder
# --------------------------------------------------------------------------------------------


def _torch_object(name: str, resolve: bool):
    if name not in TORCH_NAMES:
        raise ConfigError(f"{name!r} is not a torch object an AMPTorch config may name")
    if not resolve:
        return name
    import torch

    obj: Any = torch
    for part in name.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def _nested_subset(train: list, data_fraction: float, seed: int) -> list:
    return list(_training_api("nested_subset")(train, data_fraction, seed))


def _scheduler(settings: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(settings.get("scheduler") or "none").lower()
    if kind == "none":
        return {}  # AMPTorch: a falsy scheduler means none
    if kind == "step":
        return {"policy": "StepLR", "params": {"step_size": int(settings["scheduler_step_size"]),
                                               "gamma": float(settings["scheduler_gamma"])}}
    if kind == "cosine":
        # One cosine cycle over the configured (target) epochs, stepped per epoch, so a run to t
        # epochs is the first t epochs of a run to the target: the learning curve is a trace. The
        # floor is the built-in trainer's (lr x min_lr_ratio); its warm-up has no AMPTorch equivalent.
        params = {"T_max": int(settings["epochs"])}
        ratio = float(settings.get("min_lr_ratio", 0.0) or 0.0)
        if ratio > 0:
            params["eta_min"] = float(settings["lr"]) * ratio
        return {"policy": "CosineAnnealingLR", "params": params}
    if kind == "plateau":
        # skorch's LRScheduler steps ReduceLROnPlateau on AMPTorch's validation loss.
        return {"policy": "ReduceLROnPlateau", "params": {"factor": float(settings["scheduler_gamma"]),
                                                          "patience": int(settings["scheduler_patience"])}}
    raise ConfigError(f"scheduler must be 'none', 'step', 'cosine' or 'plateau', got {kind!r}")


def _scaling(settings: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(settings.get("feature_scaling") or "normalize").lower()
    elementwise = bool(settings.get("feature_scaling_per_element", True))
    if kind == "normalize":
        lo, hi = settings.get("feature_range") or (0.0, 1.0)
        return {"type": "normalize", "range": (float(lo), float(hi)), "elementwise": elementwise}
    if kind == "standardize":
        return {"type": "standardize", "elementwise": elementwise}
    raise ConfigError(
        f"feature_scaling={kind!r} has no AMPTorch equivalent (AMPTorch always scales features: "
        "use 'normalize' or 'standardize')"
    )


def untransferable_settings(settings: Mapping[str, Any]) -> list[str]:
    """Built-in trainer settings AMPTorch cannot honour (it runs with its own behaviour instead).

    Args:
        settings: TrainConfig fields (``training_settings`` output).

    Returns:
        one sentence per difference (empty when the configuration transfers exactly, apart from
        AMPTorch's own quirks listed in docs/amptorch.md).
    """
    notes = []
    target = settings.get("target_scaling", "amptorch")
    if target != "amptorch":
        notes.append(f"target_scaling={target!r}: AMPTorch always scales total energies by their mean/std "
                     "(mfbo's 'amptorch' mode)")
    if settings.get("force_loss_atoms", "all") != "all":
        notes.append("force_loss_atoms='free': AMPTorch's force loss includes atoms fixed by FixAtoms")
    if settings.get("get_forces", True) and float(settings.get("force_coefficient", 0.0)) == 0.0:
        notes.append("force_coefficient=0 with get_forces: AMPTorch computes but ignores forces")
    scheduler = str(settings.get("scheduler") or "none").lower()
    if int(settings.get("warmup_epochs", 0) or 0) > 0:
        notes.append(f"warmup_epochs={settings['warmup_epochs']}: AMPTorch starts at the full learning rate")
    if scheduler == "plateau":
        notes.append("scheduler='plateau': AMPTorch reduces the lr on its validation loss, mfbo on the "
                     "validation score (errors over baselines)")
    if settings.get("keep_best", False):
        notes.append("keep_best: AMPTorch reloads the epoch with the best validation energy MAE at the end, "
                     "mfbo the one with the best validation score (energy and forces over their baselines)")
    if settings.get("element_outputs", False):
        notes.append("element_outputs: AMPTorch's SingleNN has one output unit shared by all elements, not one "
                     "per element")
    if int(settings.get("early_stopping_patience", 0) or 0) > 0:
        notes.append(f"early_stopping_patience={settings['early_stopping_patience']}: AMPTorch trains every epoch")
    return notes


def _elements_of(images: Sequence) -> list[str]:
    return sorted({s for atoms in images for s in atoms.get_chemical_symbols()})


def build_amptorch_config(
    params: Mapping[str, Any] | None = None,
    train_config=None,
    *,
    train_images: Sequence | None = None,
    val_images: Sequence | None = None,
    data_fraction: float = 1.0,
    epochs: int | None = None,
    raw_data: str | None = None,
    elements: Sequence[str] | None = None,
    run_dir: str = "./",
    identifier: str = "mfbo",
    debug: bool = True,
    verbose: bool = False,
    save_fps: bool = False,
    torch_objects: bool = True,
) -> dict[str, dict[str, Any]]:
    """Build the ``AtomsTrainer(config)`` dict for one trial or for export.

    Two ways to give the data:

    * ``train_images`` and ``val_images`` (a trial): ``raw_data`` becomes the built-in trainer's
      nested subset ``nested_subset(train_images, data_fraction, seed)`` followed by every
      validation image, ``val_split`` the validation share and ``val_split_mode`` "inorder", so
      AMPTorch holds out exactly the fixed validation images (see :class:`AmptorchObjective`).
    * ``raw_data`` (export): a path AMPTorch reads; ``val_split`` = the config's
      ``val_fraction`` with AMPTorch's usual random ("cv") split.

    Args:
        params: design hyperparameters (network and GMP, handbook contract 2).
        train_config: ``TrainConfig`` (or its dict) the params are applied to.
        train_images, val_images: lists of ASE Atoms (trial mode).
        data_fraction: fraction in (0, 1] of the training images (trial mode).
        epochs: epoch fidelity; None for the config's epochs.
        raw_data: dataset path for export mode.
        elements: chemical symbols of the data (default: from the images, else every bundled one).
        run_dir, identifier, debug, verbose, save_fps: AMPTorch ``cmd``/``dataset`` switches.
        torch_objects: True for torch classes (activation, optimizer, dtype) as AtomsTrainer
            needs them; False for their dotted names (JSON).

    Returns:
        dict with exactly the sections "model", "optim", "dataset", "cmd".
    """
    s = training_settings(params, train_config)
    seed = int(s.get("seed", 0))
    n_epochs = int(epochs if epochs is not None else s["epochs"])
    if n_epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {n_epochs}")
    if not 0.0 < float(data_fraction) <= 1.0:
        raise ConfigError(f"data_fraction must be in (0, 1], got {data_fraction}")

    dataset: dict[str, Any] = {}
    if train_images is not None:
        if not val_images:
            raise ConfigError("val_images must be a non-empty list when train_images is given")
        subset = _nested_subset(list(train_images), float(data_fraction), seed)
        images = subset + list(val_images)
        # AMPTorch's in-order split holds out int(N * val_split) trailing images; the +0.5 keeps
        # that integer exactly len(val_images) despite floating-point rounding.
        val_split = (len(val_images) + 0.5) / len(images)
        dataset["raw_data"] = images
        dataset["val_split"] = float(val_split)
        dataset["val_split_mode"] = "inorder"
        if elements is None:
            elements = _elements_of(images)
    else:
        if raw_data is None:
            raise ConfigError("give either train_images and val_images, or raw_data (a dataset path)")
        dataset["raw_data"] = str(raw_data)
        dataset["val_split"] = float(s.get("val_fraction", 0.1))
        dataset["val_split_mode"] = "cv"
    if elements is not None:
        dataset["elements"] = sorted(set(elements))
    fp_scheme = str(s.get("fp_scheme", "gmp"))
    dataset["fp_scheme"] = fp_scheme
    dataset["fp_params"] = amptorch_fp_params(fp_scheme, s.get("fp_params"), elements)
    dataset["save_fps"] = bool(save_fps)
    dataset["scaling"] = _scaling(s)

    activation = str(s.get("activation", "tanh")).lower()
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    dropout = float(s.get("dropout") or 0.0)
    force_coefficient = float(s.get("force_coefficient", 0.0))
    model = {
        "name": "singlenn",
        "get_forces": bool(s.get("get_forces", force_coefficient > 0)),
        "num_layers": int(s["num_layers"]),
        "num_nodes": int(s["num_nodes"]),
        "batchnorm": bool(s.get("batchnorm", False)),
        "activation": _torch_object(f"torch.nn.{ACTIVATIONS[activation]}", torch_objects),
        "dropout": dropout > 0,
        "dropout_rate": dropout,
        "initialization": "xavier",
    }
    loss = str(s.get("loss", "mse")).lower()
    if loss not in ("mse", "mae"):
        raise ConfigError(f"loss must be 'mse' or 'mae', got {loss!r}")
    device = str(s.get("device", "cpu"))
    optim = {
        "gpus": 1 if device.startswith("cuda") else 0,
        "force_coefficient": force_coefficient,
        "lr": float(s["lr"]),
        "batch_size": int(s["batch_size"]),
        "epochs": n_epochs,
        "loss": loss,
        "metric": "mae",
        "cp_metric": "energy",
        "optimizer": _torch_object("torch.optim.Adam", torch_objects),
        # skorch routes "optimizer__<arg>" to the optimizer's constructor.
        "optimizer_args": {"optimizer__weight_decay": float(s.get("weight_decay") or 0.0)},
        "scheduler": _scheduler(s),
    }
    dtype = str(s.get("dtype", "float64"))
    if dtype not in _DTYPES:
        raise ConfigError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    cmd = {
        "debug": bool(debug),
        "dtype": _torch_object(f"torch.{_DTYPES[dtype]}", torch_objects),
        "run_dir": str(run_dir),
        "seed": seed,
        "identifier": str(identifier),
        "verbose": bool(verbose),
        "logger": False,
    }
    return {"model": model, "optim": optim, "dataset": dataset, "cmd": cmd}


def config_to_jsonable(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config with torch classes as dotted names and tuples as lists (for JSON).

    Raises:
        ConfigError: when ``raw_data`` holds Atoms objects (only a path can be written out).
    """

    def conv(value):
        if isinstance(value, Mapping):
            return {str(k): conv(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [conv(v) for v in value]
        if isinstance(value, type):
            for candidate in sorted(TORCH_NAMES):
                if _torch_object(candidate, True) is value:
                    return candidate
            raise ConfigError(f"cannot write {value.__module__}.{value.__qualname__} to an AMPTorch config file")
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise ConfigError(f"cannot write a {type(value).__name__} to an AMPTorch config file "
                          "(raw_data must be a path)")

    return conv(config)


def config_from_jsonable(config: Mapping[str, Any], *, resolve: bool = True) -> dict[str, Any]:
    """Inverse of :func:`config_to_jsonable`: dotted torch names back to classes.

    Only the places that hold objects (model.activation, optim.optimizer, cmd.dtype) are
    resolved, only to names in :data:`TORCH_NAMES`; ``scaling.range`` becomes a tuple again.
    """
    out = copy.deepcopy(dict(config))
    for section, key in (("model", "activation"), ("optim", "optimizer"), ("cmd", "dtype")):
        value = out.get(section, {}).get(key)
        if isinstance(value, str):
            out[section][key] = _torch_object(value, resolve)
    scaling = out.get("dataset", {}).get("scaling")
    if isinstance(scaling, dict) and isinstance(scaling.get("range"), list):
        scaling["range"] = tuple(scaling["range"])
    return out
