"""Turning a validated study config into the things a driver needs.

Data split files, the objective, the search space / prior / constraints, the optimiser.
Each builder raises an :class:`~mfbo.errors.MfboError` naming the study-file field at fault;
:func:`check_study` runs all of them without writing into the study's output, so ``mfbo run
--check`` and ``mfbo run`` refuse the same things before anything is created.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mfbo.errors import MfboError, StudyError
from mfbo.study._config import StudyConfig
from mfbo.study._errors import StudyFileError

__all__ = ["prepare_data", "load_split", "write_split", "check_images", "base_train_config", "build_objective",
           "build_space", "build_optimizer", "build_setup", "check_study", "Setup", "load_dotted", "SumPrior"]


def _field_error(config: StudyConfig, field_name: str, message: str) -> StudyFileError:
    src = f"study file {config.source}" if config.source else f"study {config.name}"
    return StudyFileError(f"{src}: field '{field_name}': {message}")


def load_dotted(path: str, python_path: Sequence[Path] = ()) -> Any:
    """Import ``"pkg.module:attr"`` (folders in ``python_path`` are searched first)."""
    for p in reversed([str(q) for q in python_path]):
        if p not in sys.path:
            sys.path.insert(0, p)
    mod_name, _, attr = path.partition(":")
    mod = importlib.import_module(mod_name)
    obj = mod
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _subsample(images: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(images):
        return list(images)
    idx = np.random.default_rng(seed).permutation(len(images))[:n]
    return [images[i] for i in sorted(idx)]


def base_train_config(config: StudyConfig) -> Any:
    """The TrainConfig every trial starts from (builtin/amptorch backends), or None for other backends.

    Raises:
        StudyFileError: naming ``objective.base_config`` (unknown field, bad value).
    """
    if config.backend not in ("builtin", "amptorch"):
        return None
    from mfbo.training import TrainConfig

    try:
        return TrainConfig.from_dict(dict(config.base_config))
    except MfboError as exc:
        raise _field_error(config, "objective.base_config", str(exc)) from None
    except (TypeError, ValueError) as exc:
        raise _field_error(config, "objective.base_config", f"{type(exc).__name__}: {exc}") from None


def _needs_forces(config: StudyConfig, base: Any) -> bool:
    metrics = [config.metric] if isinstance(config.metric, str) else list(config.metric)
    return bool(getattr(base, "get_forces", False)) or any("force" in m for m in metrics)


def _read_images(config: StudyConfig, field_name: str, path: Path) -> list:
    from mfbo.training._images import read_all

    try:
        images = read_all(path)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _field_error(config, field_name, f"cannot read {path} as structures ({msg}); give an "
                                               "ASE-readable file (.traj, .extxyz, ASE .db, ...) or an OC20 "
                                               "LMDB") from None
    if not images:
        raise _field_error(config, field_name, f"{path} holds no structures")
    return images


def check_images(config: StudyConfig, field_name: str, path: Path, images: Sequence, base: Any) -> None:
    """Every image has a DFT energy (and forces when the trainer fits them), and every element a
    valence density for the GMP fingerprints.

    Raises:
        StudyFileError: naming the field, the file, the first bad image (0-based) and what to do.
    """
    if base is None:  # a user's objective reads its own data
        return
    from mfbo.training._data import image_energy, image_forces

    forces = _needs_forces(config, base)
    elements: dict[str, int] = {}
    for i, atoms in enumerate(images):
        if len(atoms) == 0:
            raise _field_error(config, field_name, f"image {i} of {path} has no atoms")
        if atoms.calc is None:
            raise _field_error(config, field_name, f"image {i} of {path} has no calculator, so no DFT energy; "
                                                   "attach a SinglePointCalculator with its energy (and forces)")
        if image_energy(atoms) is None:
            raise _field_error(config, field_name, f"image {i} of {path} has no energy (eV); every image "
                                                   "needs its DFT total energy")
        if forces and image_forces(atoms) is None:
            raise _field_error(config, field_name, f"image {i} of {path} has no forces (eV/Å); supply forces "
                                                   "on every image, or set objective.base_config get_forces = "
                                                   "false and an energy metric")
        for el in atoms.get_chemical_symbols():
            elements.setdefault(el, i)
    from mfbo.training._featurize import gmp_params_of

    try:
        gmp = gmp_params_of(base)
    except MfboError as exc:
        raise _field_error(config, "objective.base_config", str(exc)) from None
    for el, i in sorted(elements.items()):
        try:
            gmp.density(el)
        except MfboError as exc:
            raise _field_error(config, field_name, f"element {el} (first in image {i} of {path}): {exc}") from None


def _read_set(config: StudyConfig, field_name: str, path: Path, base: Any, sub_field: str,
              subsample: int | None, seed: int) -> list:
    """Read and check the images of study-file field ``field_name`` and draw the seeded subsample
    that field ``sub_field`` asks for.

    Raises:
        StudyFileError: naming the field (unreadable file, bad image, a subsample larger than the file).
    """
    images = _read_images(config, field_name, path)
    check_images(config, field_name, path, images, base)
    if subsample is not None and subsample > len(images):
        raise _field_error(config, sub_field, f"{subsample} images asked for, but {path} holds {len(images)}; "
                                              f"remove it or choose at most {len(images)}")
    return _subsample(images, subsample, seed)


def load_split(config: StudyConfig, base: Any = None) -> dict[str, list | None]:
    """Read, check and split the study's data in memory (nothing is written).

    Returns:
        ``{"train": [Atoms], "val": [Atoms], "test": [Atoms] or None}`` (all None without a training set).

    Raises:
        StudyFileError: unreadable files, images without energy/forces, elements without a valence
            density, a subsample larger than the file, or too few images to split.
    """
    out: dict[str, list | None] = {"train": None, "val": None, "test": None}
    if config.train is None:
        return out
    images = _read_set(config, "data.train", config.train, base, "data.subsample", config.subsample, config.seed)
    perm = np.random.default_rng(config.seed + 1).permutation(len(images))
    n_val = max(1, int(round(config.val_fraction * len(images))))
    if n_val >= len(images):
        raise _field_error(config, "data.val_fraction", f"leaves no training image out of {len(images)} in "
                                                        f"{config.train}; a study needs at least 2 images")
    out["val"] = [images[i] for i in sorted(perm[:n_val])]
    out["train"] = [images[i] for i in sorted(perm[n_val:])]
    if config.test is not None:
        out["test"] = _read_set(config, "data.test", config.test, base, "data.test_subsample", config.test_subsample,
                                config.seed + 2)
    return out


def write_split(split: Mapping[str, list | None], data_dir: Path) -> dict[str, str | None]:
    """Write a split from :func:`load_split` as ``data_dir/{val,train,test}.traj`` (train last: its
    presence marks a complete split); the paths, None where a set is absent."""
    import ase.io

    out: dict[str, str | None] = {"train": None, "val": None, "test": None}
    if split.get("train") is None:
        return out
    data_dir.mkdir(parents=True, exist_ok=True)
    for key in ("test", "val", "train"):
        if split.get(key) is not None:
            ase.io.write(str(data_dir / f"{key}.traj"), split[key])
            out[key] = str(data_dir / f"{key}.traj")
    return out


def prepare_data(config: StudyConfig, study_dir: Path, split: Mapping | None = None,
                 base: Any = None) -> dict[str, str | None]:
    """Write the fixed train/validation(/test) split into ``study_dir/data`` once; reuse it on resume.

    A split already in the directory is checked again (energies, forces, valence densities), so a
    resumed study refuses data its trials cannot use before it runs any.

    Args:
        split: an already loaded split (:func:`load_split`), written when the directory has none.
        base: the base TrainConfig (:func:`base_train_config`), for the checks.

    Returns:
        ``{"train": path, "val": path, "test": path or None}`` (all None without a training set).
    """
    data_dir = study_dir / "data"
    if config.train is None:
        return {"train": None, "val": None, "test": None}
    paths = {k: data_dir / f"{k}.traj" for k in ("train", "val", "test")}
    if not (paths["train"].is_file() and paths["val"].is_file()):
        return write_split(split if split is not None else load_split(config, base), data_dir)
    for key in ("train", "val"):
        check_images(config, "data." + key, paths[key], _read_images(config, "data." + key, paths[key]), base)
    out: dict[str, str | None] = {"train": str(paths["train"]), "val": str(paths["val"]), "test": None}
    if config.test is not None:
        if not paths["test"].is_file():
            test = split["test"] if split is not None else load_split(config, base)["test"]
            import ase.io

            ase.io.write(str(paths["test"]), test)
        out["test"] = str(paths["test"])
    return out


@dataclass
class Setup:
    """What a driver needs, built from a study config (see :func:`build_setup`)."""

    data: dict
    objective: Any
    blob: bytes
    space: Any
    prior: Any
    constraints: list
    optimizer: Any


def build_setup(config: StudyConfig, data: Mapping[str, str | None], objective: Any = None,
                optimizer_factory: Any = None) -> Setup:
    """The objective (built unless given), its pickle, the search space, prior, constraints, optimiser.

    Raises:
        MfboError: naming the study-file field at fault.
    """
    if objective is None:
        objective = build_objective(config, data)
    try:
        blob = pickle.dumps(objective)
    except Exception as exc:
        raise StudyError(f"the objective of backend {config.backend!r} cannot be pickled for worker processes: "
                         f"{exc}") from None
    space, prior, constraints = build_space(config, objective)
    optimizer = build_optimizer(config, space, prior, constraints, factory=optimizer_factory)
    return Setup(dict(data), objective, blob, space, prior, constraints, optimizer)


def check_study(config: StudyConfig, objective: Any = None, optimizer_factory: Any = None) -> dict:
    """Everything ``mfbo run`` checks before it writes anything, writing nothing in the study's output.

    Reads and checks the data (a temporary copy of the split is written to build the objective),
    the base TrainConfig, the objective, the prior files and search space, the optimiser options,
    and the storage URL (a PostgreSQL server must answer).

    Returns:
        ``{"split": ..., "base": ...}`` (the loaded split and base TrainConfig, reused by the run).

    Raises:
        MfboError: naming the file and field at fault.
    """
    import tempfile

    from mfbo.study._storage import check_storage

    base = base_train_config(config)
    split = load_split(config, base)
    with tempfile.TemporaryDirectory(prefix="mfbo-check-") as tmp:
        data = write_split(split, Path(tmp) / "data")
        build_setup(config, data, objective, optimizer_factory)
    check_storage(config.storage_url, config.output)
    return {"split": split, "base": base}


def _accepts(fn: Any, name: str) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    # Only explicit parameters: a factory taking **kwargs may forward them to something that refuses them.
    return name in sig.parameters


def build_objective(config: StudyConfig, data: Mapping[str, str | None]) -> Any:
    """The objective the study file names (built once in the driver, then pickled to workers)."""
    if config.backend in ("builtin", "amptorch"):
        from mfbo.objectives import get_objective

        kwargs: dict[str, Any] = {"train": data["train"], "val": data["val"], "metric": config.metric}
        if config.base_config:
            kwargs["base_config"] = base_train_config(config)
        if config.backend == "builtin":
            # Trials stream from shards when the data are large ("auto") or the study file says so;
            # the shards of the study's split live beside it unless data.shard_dir names a folder.
            options = {"mode": "auto", **config.data_options}
            if options.get("shard_dir") is None and data["train"] is not None:
                options["shard_dir"] = str(Path(data["train"]).parent / "shards")
            kwargs["data"] = options
        kwargs.update(config.objective_options)
        try:
            return get_objective(config.backend, **kwargs)
        except MfboError:
            raise
        except Exception as exc:
            raise _field_error(config, "objective.options", f"{type(exc).__name__}: {exc}") from None
    try:
        factory = load_dotted(config.backend, config.python_path)
    except (ImportError, AttributeError) as exc:
        raise _field_error(config, "objective.backend",
                           f"cannot load {config.backend!r}: {type(exc).__name__}: {exc}") from None
    kwargs = dict(config.objective_options)
    extras = {"train": data["train"], "val": data["val"], "test": data["test"], "metric": config.metric,
              "seed": config.seed}
    for k, v in extras.items():
        if k not in kwargs and v is not None and k != "seed" and _accepts(factory, k):
            kwargs[k] = v
    try:
        obj = factory(**kwargs)
    except MfboError:
        raise
    except Exception as exc:
        raise _field_error(config, "objective.options",
                           f"{config.backend}(**options) failed: {type(exc).__name__}: {exc}") from None
    if not (hasattr(obj, "evaluate") or callable(obj)):
        raise _field_error(config, "objective.backend", f"{config.backend!r} returned {type(obj).__name__}, "
                                                        "which has no evaluate(params, data_fraction, epochs)")
    return obj


class SumPrior:
    """Joint belief of several prior files: the sum of their log densities (independent beliefs)."""

    def __init__(self, priors: Sequence[Any]):
        self.priors = list(priors)

    def log_prob(self, configs):
        return np.sum([np.asarray(p.log_prob(configs), dtype=float) for p in self.priors], axis=0)

    def sample(self, n, seed=0):
        # Each prior samples its own parameters; merged per configuration.
        parts = [p.sample(n, seed=seed + i) for i, p in enumerate(self.priors)]
        return [{k: v for part in parts for k, v in part[j].items()} for j in range(n)]


def _fidelity_entries(config: StudyConfig) -> dict:
    out = {}
    if "data_fraction" in config.fidelity:
        lo, hi = config.fidelity["data_fraction"]
        out["data_fraction"] = {"type": "fidelity", "bounds": [lo, hi], "target": hi, "kind": "data"}
    if "epochs" in config.fidelity:
        lo, hi = config.fidelity["epochs"]
        out["epochs"] = {"type": "fidelity", "bounds": [lo, hi], "target": hi, "kind": "iteration"}
    return out


def build_space(config: StudyConfig, objective: Any = None) -> tuple[Any, Any, list]:
    """(SearchSpace, prior or None, constraints) from the objective, the prior files and the study file.

    Later sources override earlier ones per parameter: objective's own ``space`` < prior files (in order)
    < inline ``[space]`` < ``[fidelity]``.
    """
    from mfbo.errors import SearchSpaceError
    from mfbo.optimize import SearchSpace

    merged: dict[str, Any] = {}
    own = getattr(objective, "space", None) if objective is not None else None
    if own is not None:
        merged.update(own.to_dict() if isinstance(own, SearchSpace) else dict(own))
    priors, constraints = [], []
    specs = []
    for i, path in enumerate(config.prior_files):
        from mfbo.priors import load_prior_file

        try:
            specs.append(load_prior_file(path))
        except MfboError as exc:
            raise _field_error(config, f"priors.files[{i}]", str(exc)) from None
    if len(specs) > 1:
        from mfbo.priors import merge_prior_specs

        try:  # one joint prior (product of beliefs) when the files can be merged
            specs = [merge_prior_specs(*specs)]
        except MfboError:
            pass  # e.g. custom priors: keep them apart and sum their log densities
    for spec in specs:
        merged.update(dict(spec.space))
        fids = getattr(spec, "fidelities", None) or {}
        for name, entry in dict(fids).items():
            if isinstance(entry, Mapping):
                merged[name] = {"type": "fidelity", **dict(entry)}
            elif isinstance(entry, Sequence) and len(entry) == 2:
                kind = "iteration" if name in ("epochs", "epoch", "n_epochs", "iterations") else "data"
                merged[name] = {"type": "fidelity", "bounds": list(entry), "target": entry[1], "kind": kind}
        if getattr(spec, "prior", None) is not None:
            priors.append(spec.prior)
        constraints.extend(list(getattr(spec, "constraints", ()) or ()))
    merged.update(config.space)
    merged.update(_fidelity_entries(config))
    if not merged:
        raise _field_error(config, "space", "no search space: add a [space] table or [priors] files")
    try:
        space = SearchSpace.from_dict(merged)
    except SearchSpaceError as exc:
        raise _field_error(config, "space", str(exc)) from None
    if not space.fidelity_parameters:
        raise _field_error(config, "fidelity", "the search space has no fidelity parameter; add [fidelity] "
                                               "data_fraction = [lo, 1.0] and/or epochs = [1, N]")
    prior = None if not priors else (priors[0] if len(priors) == 1 else SumPrior(priors))
    return space, prior, constraints


def build_optimizer(config: StudyConfig, space: Any, prior: Any, constraints: list, factory: Any = None) -> Any:
    """The ask/tell optimiser (default :class:`mfbo.optimize.MultiFidelityOptimizer`)."""
    if factory is None and config.optimizer_factory:
        try:
            factory = load_dotted(config.optimizer_factory, config.python_path)
        except (ImportError, AttributeError) as exc:
            raise _field_error(config, "optimizer.factory", f"cannot load {config.optimizer_factory!r}: "
                                                            f"{exc}") from None
    if factory is None:
        from mfbo.optimize import MultiFidelityOptimizer as factory
    kwargs = dict(config.optimizer_options)
    kwargs.setdefault("seed", config.seed)
    if config.budget_ffe is not None and _accepts(factory, "budget"):
        kwargs.setdefault("budget", config.budget_ffe)  # drives cost-cooling in the default optimiser
    if prior is not None:
        kwargs["prior"] = prior
    if constraints:
        kwargs["constraints"] = tuple(constraints)
    try:
        return factory(space, **kwargs)
    except MfboError:
        raise
    except TypeError as exc:
        raise _field_error(config, "optimizer.options", f"{exc}") from None
