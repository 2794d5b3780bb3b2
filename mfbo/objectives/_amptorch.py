"""Real AMPTorch as an objective backend, and the AMPTorch config builder.

AMPTorch (github.com/ulissigroup/amptorch) is not on any package registry, so it is optional:
this module imports it only when an :class:`AmptorchObjective` is built, and fails at once with
:class:`BackendUnavailable` (how to install it, and its constraints on current torch) when it is
missing or broken. The config builder itself needs neither AMPTorch nor skorch, so studies can
export AMPTorch configs on machines without it.

The builder turns (design hyperparameters, a ``TrainConfig``, fidelities) into the
``AtomsTrainer(config)`` dict of AMPTorch's README: ``model`` / ``optim`` / ``dataset`` / ``cmd``.
A trial's data fraction is applied as the built-in trainer's nested subset (one seeded
permutation, the first ``ceil(f*N)`` images) and its fixed validation set is appended after the
training images and split off in order, so AMPTorch validates on exactly the images the built-in
trainer uses, instead of drawing its own random ``val_split``.
"""

from __future__ import annotations

import copy
import math
import os
import re
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mfbo.errors import BackendUnavailable, ConfigError, ObjectiveError, TrainingDiverged
from mfbo.objectives._base import Objective, describe_source
from mfbo.objectives._record import RECORD_KEYS, check_metric, metric_curve

__all__ = [
    "AMPTORCH_INSTALL_HELP",
    "README_KEYS",
    "TRAINER_EXTRA_KEYS",
    "AmptorchObjective",
    "amptorch_available",
    "build_amptorch_config",
    "config_to_jsonable",
    "config_from_jsonable",
    "require_amptorch",
    "training_settings",
    "untransferable_settings",
]

AMPTORCH_INSTALL_HELP = (
    "AMPTorch is not on a package registry; install it from its GitHub repository into this "
    "environment: `pip install git+https://github.com/ulissigroup/amptorch.git` (or clone it and "
    "`pip install -e .`). Known constraints on current torch: it imports torch-scatter "
    "(`pip install torch-scatter` built for your exact torch version, from the PyG wheel index "
    "https://data.pyg.org/whl/), needs skorch 0.10 (`pip install skorch==0.10.0`) and numpy < 1.24 "
    "(it uses numpy aliases removed in 1.24), so it usually needs its own environment with an "
    "older torch. Or use mfbo's built-in trainer (backend = \"builtin\" in the study's [objective] table), "
    "which needs none of this."
)

# Keys of AtomsTrainer's config as AMPTorch's README (master, commit 02e5af3) lists them, with the
# Python type of each value. ``type`` marks values that are classes (activation,
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
# AMPTorch availability
# --------------------------------------------------------------------------------------------


def require_amptorch():
    """Import AMPTorch, or raise :class:`BackendUnavailable` saying how to install it.

    Returns:
        The imported ``amptorch`` module.
    """
    try:
        import amptorch  # noqa: F401
        from amptorch.trainer import AtomsTrainer  # noqa: F401
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(
            f"objective backend 'amptorch' needs AMPTorch, which is not importable here "
            f"(missing module {exc.name!r}). {AMPTORCH_INSTALL_HELP}"
        ) from None
    except Exception as exc:  # broken install: torch-scatter ABI, numpy >= 1.24, skorch API ...
        raise BackendUnavailable(
            f"objective backend 'amptorch': `import amptorch` failed with "
            f"{type(exc).__name__}: {exc}. {AMPTORCH_INSTALL_HELP}"
        ) from None
    return amptorch


def amptorch_available() -> bool:
    """True when AMPTorch and its trainer import cleanly."""
    try:
        require_amptorch()
    except BackendUnavailable:
        return False
    return True


# --------------------------------------------------------------------------------------------
# Settings: TrainConfig + design hyperparameters
# --------------------------------------------------------------------------------------------


def _training_api(name: str):
    """``mfbo.training.<name>`` (engineer TR's trainer), or None while it is not available."""
    import importlib

    for module in ("mfbo.training", "mfbo.training._config", "mfbo.training._data"):
        try:
            obj = getattr(importlib.import_module(module), name, None)
        except ImportError:
            obj = None
        if obj is not None:
            return obj
    return None


def _trainconfig_class():
    TrainConfig = _training_api("TrainConfig")  # noqa: N806
    if TrainConfig is None:
        raise ConfigError("mfbo.training.TrainConfig is not available in this mfbo installation")
    return TrainConfig


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
    nested_subset = _training_api("nested_subset")
    if nested_subset is None:
        raise ConfigError("mfbo.training.nested_subset is not available in this mfbo installation")
    return list(nested_subset(train, data_fraction, seed))


def _scheduler(settings: Mapping[str, Any]) -> dict[str, Any]:
    kind = str(settings.get("scheduler") or "none").lower()
    if kind == "none":
        return {}  # AMPTorch: a falsy scheduler means none
    if kind == "step":
        return {"policy": "StepLR", "params": {"step_size": int(settings["scheduler_step_size"]),
                                               "gamma": float(settings["scheduler_gamma"])}}
    if kind == "cosine":
        # One cosine cycle over the configured (target) epochs, stepped per epoch, so a run to t
        # epochs is the first t epochs of a run to the target: the learning curve is a trace.
        return {"policy": "CosineAnnealingLR", "params": {"T_max": int(settings["epochs"])}}
    raise ConfigError(f"scheduler must be 'none', 'step' or 'cosine', got {kind!r}")


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


# --------------------------------------------------------------------------------------------
# Learning-curve records from AMPTorch's skorch history
# --------------------------------------------------------------------------------------------

# The prefix of the columns our scoring callback writes into AMPTorch's skorch history.
HISTORY_PREFIX = "mfbo_"


class _SplitTargets:
    """Reference energies (eV), atom counts, forces (eV/Å) and free-atom masks of one split."""

    def __init__(self, images: Sequence, with_forces: bool):
        import numpy as np

        # Raw DFT values, FixAtoms not applied: what AMPTorch and the built-in trainer fit.
        self.energies = np.array([float(a.get_potential_energy(apply_constraint=False)) for a in images])
        self.natoms = np.array([len(a) for a in images], dtype=float)
        self.forces = None
        self.free = None
        if with_forces:
            self.forces = np.concatenate(
                [np.asarray(a.get_forces(apply_constraint=False), dtype=float) for a in images]
            )
            free_atom_mask = _training_api("free_atom_mask") or _free_atom_mask
            self.free = np.concatenate([np.asarray(free_atom_mask(a), dtype=bool) for a in images])


def _free_atom_mask(atoms):
    import numpy as np
    from ase.constraints import FixAtoms

    free = np.ones(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            free[np.asarray(constraint.get_indices(), dtype=int)] = False
    return free


def split_metrics(energy_pred, forces_pred, targets: _SplitTargets, prefix: str) -> dict[str, float]:
    """MAEs of one split from denormalised predictions.

    Args:
        energy_pred: (n_images,) predicted total energies, eV.
        forces_pred: (n_atoms_total, 3) predicted forces, eV/Å, or None.
        targets: the split's reference values.
        prefix: "train" or "val".

    Returns:
        {prefix_energy_mae (eV/image), prefix_energy_mae_per_atom (eV/atom), prefix_force_mae,
        prefix_force_mae_free (eV/Å; None without forces)}.
    """
    import numpy as np

    energy_pred = np.asarray(energy_pred, dtype=float).reshape(-1)
    if energy_pred.shape != targets.energies.shape:
        raise ObjectiveError(
            f"AMPTorch returned {energy_pred.size} {prefix} energies for {targets.energies.size} images"
        )
    err = np.abs(energy_pred - targets.energies)
    out = {
        f"{prefix}_energy_mae": float(err.mean()),
        f"{prefix}_energy_mae_per_atom": float((err / targets.natoms).mean()),
        f"{prefix}_force_mae": None,
        f"{prefix}_force_mae_free": None,
    }
    if forces_pred is not None and targets.forces is not None:
        forces_pred = np.asarray(forces_pred, dtype=float).reshape(-1, 3)
        if forces_pred.shape != targets.forces.shape:
            raise ObjectiveError(
                f"AMPTorch returned {forces_pred.shape[0]} {prefix} force rows for "
                f"{targets.forces.shape[0]} atoms"
            )
        ferr = np.abs(forces_pred - targets.forces)
        out[f"{prefix}_force_mae"] = float(ferr.mean())
        out[f"{prefix}_force_mae_free"] = float(ferr[targets.free].mean()) if targets.free.any() else None
    return out


def records_from_history(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Learning-curve records (the built-in trainer's layout) from a skorch history.

    Reads the columns our scoring callback wrote (``mfbo_*``) for every epoch; AMPTorch's own
    columns (``train_energy_mae`` etc., scored on training-mode predictions) are kept under
    ``amptorch_*`` for reference.
    """
    records = []
    for row in history:
        rec: dict[str, Any] = {"epoch": int(row["epoch"])}
        for key in RECORD_KEYS[1:]:
            if HISTORY_PREFIX + key not in row:
                raise ObjectiveError(f"AMPTorch history of epoch {rec['epoch']} lacks {key!r}")
            value = row[HISTORY_PREFIX + key]
            rec[key] = None if value is None else float(value)
        for key in ("train_energy_mae", "val_energy_mae", "train_forces_mae", "val_forces_mae", "train_loss",
                    "valid_loss", "dur"):
            if key in row and row[key] is not None:
                rec["amptorch_" + key] = float(row[key])
        records.append(rec)
    return records


def _make_scoring_callback(train_targets: _SplitTargets, val_targets: _SplitTargets, with_forces: bool,
                           divergence_factor: float = 1e4):
    """A skorch callback scoring both splits each epoch in eval mode, in mfbo's record layout.

    It also stops a diverging run the way the built-in trainer does: a non-finite loss or metric,
    or a mean training loss above ``divergence_factor`` x the best epoch's, raises
    :class:`TrainingDiverged` carrying the epoch and the last finite record.
    """
    import numpy as np
    from skorch.callbacks import Callback

    class MfboScoring(Callback):
        def on_train_begin(self, net, **kwargs):
            self.t0 = time.perf_counter()
            self.last = None
            self.best_loss = math.inf

        def on_epoch_begin(self, net, **kwargs):
            # The lr used during this epoch (schedulers step at epoch end).
            self.lr = float(net.optimizer_.param_groups[0]["lr"])

        def _predict(self, net, dataset):
            energy, forces = net.forward(dataset, training=False)
            base = dataset.dataset if hasattr(dataset, "dataset") else dataset
            energy = base.target_scaler.denorm(energy.detach().cpu(), pred="energy")
            forces_np = None
            if with_forces and forces.numel():
                forces_np = base.target_scaler.denorm(forces.detach().cpu(), pred="forces").numpy()
            return np.asarray(energy, dtype=float), forces_np

        def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
            epoch = len(net.history)
            rec = {}
            rec.update(split_metrics(*self._predict(net, dataset_train), train_targets, "train"))
            rec.update(split_metrics(*self._predict(net, dataset_valid), val_targets, "val"))
            rec["lr"] = self.lr
            rec["wall_time"] = time.perf_counter() - self.t0
            loss = net.history[-1].get("train_loss")
            loss = math.nan if loss is None else float(loss)
            finite = math.isfinite(loss) and all(v is None or math.isfinite(v) for v in rec.values())
            if not finite or loss > divergence_factor * self.best_loss:
                why = "non-finite loss or metrics" if not finite else (
                    f"training loss {loss:.3g} > {divergence_factor:g} x best {self.best_loss:.3g}")
                raise TrainingDiverged(f"AMPTorch training diverged at epoch {epoch} ({why})",
                                       epoch=epoch, last_metrics=self.last)
            self.best_loss = min(self.best_loss, loss)
            for key, value in rec.items():
                net.history.record(HISTORY_PREFIX + key, value)
            self.last = {"epoch": epoch, **rec}

    return MfboScoring()


def _tail_split(n_val: int):
    """skorch train_split holding out the last ``n_val`` items (accepts any skorch signature)."""
    import torch

    def split(dataset, y=None, **fit_params):
        n = len(dataset)
        return (torch.utils.data.Subset(dataset, list(range(n - n_val))),
                torch.utils.data.Subset(dataset, list(range(n - n_val, n))))

    return split


def run_amptorch(config: dict, n_val: int, train_images: Sequence, val_images: Sequence,
                 divergence_factor: float = 1e4, after=None):
    """Train with AMPTorch's AtomsTrainer; return (records, trainer, timings, after's result).

    The last ``n_val`` images of ``config["dataset"]["raw_data"]`` are the validation set.
    AMPTorch changes the working directory and torch's default dtype; both are restored, after
    ``after(trainer)`` (if given) has run in AMPTorch's setting (e.g. ``trainer.predict``).
    """
    require_amptorch()
    import torch
    from amptorch.trainer import AtomsTrainer

    with_forces = bool(config["model"]["get_forces"])
    train_targets = _SplitTargets(train_images, with_forces)
    val_targets = _SplitTargets(val_images, with_forces)
    cwd = os.getcwd()
    default_dtype = torch.get_default_dtype()
    timings = {}
    try:
        t0 = time.perf_counter()
        # AtomsTrainer edits its config (deletes raw_data, adds descriptor entries): give it a copy.
        own = {name: copy.deepcopy({k: v for k, v in section.items() if k != "raw_data"})
               for name, section in config.items()}
        own["dataset"]["raw_data"] = list(config["dataset"]["raw_data"])
        trainer = AtomsTrainer(own)
        trainer.load()  # featurise, scale, build model and the skorch net
        timings["setup"] = time.perf_counter() - t0
        # Hold out exactly our validation images (whatever skorch's train_split signature) and
        # score in mfbo's record layout after every epoch.
        trainer.net.train_split = _tail_split(n_val)
        trainer.net.callbacks = list(trainer.net.callbacks or []) + [
            ("mfbo_scoring", _make_scoring_callback(train_targets, val_targets, with_forces, divergence_factor))
        ]
        t1 = time.perf_counter()
        trainer.net.fit(trainer.train_dataset, None)
        timings["train"] = time.perf_counter() - t1
        extra = after(trainer) if after is not None else None
    finally:
        os.chdir(cwd)
        torch.set_default_dtype(default_dtype)
    return records_from_history(trainer.net.history), trainer, timings, extra


# --------------------------------------------------------------------------------------------
# The objective
# --------------------------------------------------------------------------------------------


class AmptorchObjective(Objective):
    """Objective that trains each trial with real AMPTorch (``AtomsTrainer``).

    Same inputs and outputs as ``BuiltinObjective``: ``evaluate(params, data_fraction, epochs)``
    trains on the built-in trainer's nested subset of the training pool, validates on the same
    fixed validation set, and returns the same learning-curve records, read from AMPTorch's
    per-epoch skorch history. Picklable: holds paths (or the given Atoms) and configurations;
    images are loaded lazily in the process that evaluates.

    Args:
        train: training pool (path of an ASE-readable file, or list of Atoms).
        val: fixed validation set; None splits it off ``train`` like the built-in trainer
            (``split_train_val(train, val_fraction, seed)`` of the base config).
        base_config: ``TrainConfig`` (or its dict) each trial's hyperparameters modify.
        metric: record key minimised ("val_energy_mae_per_atom" default, "val_force_mae", ...) or
            a dict of record key -> weight.
        workdir: where AMPTorch's per-trial run directories go (default: the system temp
            folder); each is removed after its trial.
        save_fps: let AMPTorch also store fingerprints on disk (in the trial's run directory).

    Raises:
        BackendUnavailable: at construction, when AMPTorch does not import.
    """

    def __init__(self, train, val=None, base_config=None, metric: str | dict = "val_energy_mae_per_atom",
                 workdir=None, save_fps: bool = False):
        require_amptorch()
        self.base_config = _config_dict(base_config)
        check_metric(metric)
        self.metric = metric
        self.train_source = str(train) if isinstance(train, os.PathLike) else train
        self.val_source = str(val) if isinstance(val, os.PathLike) else val
        self.workdir = None if workdir is None else str(workdir)
        self.save_fps = bool(save_fps)
        self._loaded = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_loaded"] = None  # re-read in the worker
        return state

    def datasets(self) -> tuple[list, list]:
        """(training pool, validation set), loaded and split exactly as the built-in objective does."""
        if self._loaded is None:
            load_images = _training_api("load_images")
            split_train_val = _training_api("split_train_val")
            base = _trainconfig_class().from_dict(self.base_config)
            pool = list(load_images(self.train_source, require_forces=base.get_forces))
            if self.val_source is None:
                pool, val = split_train_val(pool, base.val_fraction, base.seed)
            else:
                val = load_images(self.val_source, require_forces=base.get_forces)
            self._loaded = (list(pool), list(val))
        return self._loaded

    def build_config(self, params: Mapping[str, Any], data_fraction: float, epochs: int, run_dir: str = "./"):
        """The AtomsTrainer config this objective trains for one trial (see build_amptorch_config)."""
        pool, val = self.datasets()
        return build_amptorch_config(
            params, self.base_config, train_images=pool, val_images=val, data_fraction=data_fraction,
            epochs=epochs, run_dir=run_dir, save_fps=self.save_fps,
        )

    def evaluate(self, params: dict, data_fraction: float, epochs: int) -> dict:
        """Train one trial through AMPTorch; see :meth:`Objective.evaluate`.

        Raises:
            TrainingDiverged: non-finite loss or metrics (carries the epoch and last finite record).
        """
        import shutil

        t0 = time.perf_counter()
        root = self.workdir or tempfile.gettempdir()
        os.makedirs(root, exist_ok=True)
        run_dir = tempfile.mkdtemp(prefix="amptorch-trial-", dir=root)
        try:
            config = self.build_config(params, data_fraction, epochs, run_dir=run_dir)
            val = self.datasets()[1]
            train_subset = config["dataset"]["raw_data"][: -len(val)]
            factor = float(training_settings(params, self.base_config).get("divergence_factor", 1e4))
            records, _, timings, _ = run_amptorch(config, len(val), train_subset, val, factor)
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        if len(records) != int(epochs):
            raise ObjectiveError(f"AMPTorch ran {len(records)} epochs, {epochs} were asked for")
        import amptorch

        return {
            "curve": metric_curve(records, self.metric),
            "cost": time.perf_counter() - t0,
            "records": records,
            "metadata": {
                "backend": "amptorch",
                "amptorch_version": getattr(amptorch, "__version__", "unknown"),
                "n_train": len(train_subset),
                "n_val": len(val),
                "timings": timings,
                "not_transferred": untransferable_settings(training_settings(params, self.base_config)),
                "config": config_to_jsonable(
                    {**config, "dataset": {**config["dataset"], "raw_data": f"<{len(train_subset) + len(val)} images>"}}
                ),
            },
        }

    def fit(self, params: dict, data_fraction: float = 1.0, epochs: int | None = None, test=None, **kwargs):
        """Train once through AMPTorch and keep the model (the study's final retraining).

        AMPTorch runs with checkpointing on, so at the end it reloads its best epoch by validation
        energy MAE, as AMPTorch users get it.

        Args:
            params, data_fraction, epochs: as for :meth:`evaluate` (epochs None: the config's).
            test: test images (path or list) scored with ``trainer.predict``; None/False: none.

        Returns:
            :class:`AmptorchFitResult` (``curve`` = records, ``model`` with ``save(path)``,
            ``config``, ``test_metrics``, ``timings``, ``n_train``, ``n_val``).
        """
        import shutil

        test_images = None if test in (None, False) else _training_api("load_images")(test)
        pool, val = self.datasets()
        root = self.workdir or tempfile.gettempdir()
        os.makedirs(root, exist_ok=True)
        run_dir = tempfile.mkdtemp(prefix="amptorch-fit-", dir=root)
        settings = training_settings(params, self.base_config)
        try:
            config = build_amptorch_config(
                params, self.base_config, train_images=pool, val_images=val, data_fraction=data_fraction,
                epochs=epochs, run_dir=run_dir, debug=False, identifier="mfbo-final", save_fps=self.save_fps,
            )
            train_subset = config["dataset"]["raw_data"][: -len(val)]

            def finish(trainer):
                metrics = None
                if test_images:
                    with_forces = bool(config["model"]["get_forces"])
                    pred = trainer.predict(list(test_images))
                    forces = None
                    if with_forces and len(pred.get("forces", [])):
                        import numpy as np

                        forces = np.concatenate([np.asarray(f).reshape(-1, 3) for f in pred["forces"]])
                    raw = split_metrics(pred["energy"], forces, _SplitTargets(test_images, with_forces), "test")
                    metrics = {k[len("test_"):]: v for k, v in raw.items()}
                    metrics["n_images"] = len(test_images)
                return metrics, AmptorchModel.from_trainer(trainer, config)

            t0 = time.perf_counter()
            records, _, timings, (test_metrics, model) = run_amptorch(
                config, len(val), train_subset, val, float(settings.get("divergence_factor", 1e4)), after=finish,
            )
            timings["total"] = time.perf_counter() - t0
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        return AmptorchFitResult(
            curve=records, model=model, config=_trainconfig_class().from_dict(settings), test_metrics=test_metrics,
            timings=timings, n_train=len(train_subset), n_val=len(val),
        )

    def describe(self) -> dict:
        return {
            "class": "mfbo.objectives._amptorch:AmptorchObjective",
            "train": describe_source(self.train_source),
            "val": describe_source(self.val_source),
            "metric": self.metric,
            "base_config": self.base_config,
        }


class AmptorchModel:
    """A model trained by AMPTorch: its weights, its config, and AMPTorch's checkpoint files.

    ``save(path)`` writes a NumPy ``.npz`` (weights as arrays, the config as JSON; no pickled
    code) and, when AMPTorch wrote a checkpoint, copies its files to ``<path>.amptorch/`` so
    AMPTorch users can ``AtomsTrainer(config).load_pretrained("<path>.amptorch")``.
    """

    def __init__(self, state: dict, config: dict, checkpoint: dict[str, bytes] | None = None):
        self.state = state
        self.config = config
        self.checkpoint = checkpoint or {}

    @classmethod
    def from_trainer(cls, trainer, config: Mapping[str, Any]) -> AmptorchModel:
        module = getattr(trainer.net, "module_", None) or trainer.net.module
        state = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
        files: dict[str, bytes] = {}
        cp_dir = getattr(trainer, "cp_dir", None)
        if cp_dir and os.path.isdir(cp_dir):
            for name in os.listdir(cp_dir):
                full = os.path.join(cp_dir, name)
                if os.path.isfile(full):
                    with open(full, "rb") as fh:
                        files[name] = fh.read()
        plain = {**config, "dataset": {**config["dataset"], "raw_data": "<training images>"}}
        return cls(state, config_to_jsonable(plain), files)

    def save(self, path) -> None:
        import json

        import numpy as np

        path = Path(path)
        arrays = {f"param:{k}": v for k, v in self.state.items()}
        with open(path, "wb") as fh:
            np.savez(fh, config_json=np.array(json.dumps(self.config)), **arrays)
        if self.checkpoint:
            folder = path.with_name(path.name + ".amptorch")
            folder.mkdir(parents=True, exist_ok=True)
            for name, data in self.checkpoint.items():
                (folder / name).write_bytes(data)


class AmptorchFitResult:
    """What :meth:`AmptorchObjective.fit` returns (the fields of the built-in ``TrainResult`` a study reads)."""

    def __init__(self, curve, model, config, test_metrics, timings, n_train, n_val):
        self.curve = curve
        self.model = model
        self.config = config
        self.test_metrics = test_metrics
        self.timings = timings
        self.n_train = n_train
        self.n_val = n_val
