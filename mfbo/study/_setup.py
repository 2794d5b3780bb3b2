"""Turning a validated study config into the things a driver needs.

Data split files, the objective, the search space / prior / constraints, the optimiser.
Each builder raises an :class:`~mfbo.errors.MfboError` naming the study-file field at fault.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mfbo.errors import MfboError
from mfbo.study._config import StudyConfig
from mfbo.study._errors import StudyFileError

__all__ = ["prepare_data", "build_objective", "build_space", "build_optimizer", "load_dotted", "SumPrior"]


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


def prepare_data(config: StudyConfig, study_dir: Path) -> dict[str, str | None]:
    """Write the fixed train/validation(/test) split into ``study_dir/data`` once; reuse it on resume.

    Returns:
        ``{"train": path, "val": path, "test": path or None}`` (all None without a training set).
    """
    data_dir = study_dir / "data"
    out: dict[str, str | None] = {"train": None, "val": None, "test": None}
    if config.train is None:
        return out
    paths = {k: data_dir / f"{k}.traj" for k in ("train", "val", "test")}
    if not (paths["train"].is_file() and paths["val"].is_file()):
        import ase.io

        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            images = ase.io.read(str(config.train), index=":")
        except Exception as exc:
            raise _field_error(config, "data.train", f"cannot read {config.train}: {exc}") from None
        for i, a in enumerate(images):
            try:
                a.get_potential_energy()
            except Exception:
                raise _field_error(config, "data.train", f"image {i} of {config.train} has no energy") from None
        images = _subsample(images, config.subsample, config.seed)
        perm = np.random.default_rng(config.seed + 1).permutation(len(images))
        n_val = max(1, int(round(config.val_fraction * len(images))))
        if n_val >= len(images):
            raise _field_error(config, "data.val_fraction", f"leaves no training image out of {len(images)}")
        val = [images[i] for i in sorted(perm[:n_val])]
        train = [images[i] for i in sorted(perm[n_val:])]
        ase.io.write(str(paths["val"]), val)
        ase.io.write(str(paths["train"]), train)  # written last: its presence marks a complete split
    out["train"], out["val"] = str(paths["train"]), str(paths["val"])
    if config.test is not None:
        if not paths["test"].is_file():
            import ase.io

            try:
                test = ase.io.read(str(config.test), index=":")
            except Exception as exc:
                raise _field_error(config, "data.test", f"cannot read {config.test}: {exc}") from None
            ase.io.write(str(paths["test"]), _subsample(test, config.test_subsample, config.seed + 2))
        out["test"] = str(paths["test"])
    return out


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
            from mfbo.training import TrainConfig

            try:
                kwargs["base_config"] = TrainConfig.from_dict(dict(config.base_config))
            except MfboError as exc:
                raise _field_error(config, "objective.base_config", str(exc)) from None
            except (TypeError, ValueError) as exc:
                raise _field_error(config, "objective.base_config", f"{type(exc).__name__}: {exc}") from None
        kwargs.update(config.objective_options)
        return get_objective(config.backend, **kwargs)
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
        try:
            from mfbo.optimize import MultiFidelityOptimizer as factory
        except ImportError:  # exported from the subpackage once the optimiser lands there
            from mfbo.optimize._optimizer import MultiFidelityOptimizer as factory
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
