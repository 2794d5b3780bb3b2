"""Real AMPTorch as an objective backend: each trial trains in AMPTorch's own interpreter.

AMPTorch (github.com/ulissigroup/amptorch) is not on any package registry and needs numpy < 1.24
and skorch 0.10, so it lives in its own Python environment. The study process never imports it:
:class:`AmptorchObjective` builds each trial's ``AtomsTrainer`` config here
(``_amptorch_config``), writes the images, and runs the worker (``_amptorch_worker``) in
AMPTorch's interpreter (``_amptorch_env``: ``python`` option, ``MFBO_AMPTORCH_PYTHON``, or the
environment ``.ci/setup-amptorch.sh`` builds), which returns mfbo's learning-curve records
(``_amptorch_history``) as JSON and the weights as ``.npz``. Building the objective runs a
1-epoch smoke fit there, so a broken AMPTorch environment fails at once, with AMPTorch's error.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mfbo.errors import ConfigError, ObjectiveError
from mfbo.objectives._amptorch_config import (
    ACTIVATIONS,
    README_KEYS,
    TORCH_NAMES,
    TRAINER_EXTRA_KEYS,
    _config_dict,
    _trainconfig_class,
    _training_api,
    amptorch_fp_params,
    build_amptorch_config,
    bundled_atom_gaussians,
    config_from_jsonable,
    config_to_jsonable,
    training_settings,
    untransferable_settings,
)
from mfbo.objectives._amptorch_env import (
    AMPTORCH_INSTALL_HELP,
    amptorch_available,
    find_python,
    require_amptorch,
    run_worker,
    smoke_check,
    tiny_images,
)
from mfbo.objectives._amptorch_history import records_from_history, split_metrics
from mfbo.objectives._base import Objective, describe_source
from mfbo.objectives._record import check_metric, metric_curve

__all__ = [
    "ACTIVATIONS",
    "AMPTORCH_INSTALL_HELP",
    "README_KEYS",
    "TORCH_NAMES",
    "TRAINER_EXTRA_KEYS",
    "AmptorchFitResult",
    "AmptorchModel",
    "AmptorchObjective",
    "amptorch_available",
    "amptorch_fp_params",
    "build_amptorch_config",
    "bundled_atom_gaussians",
    "config_from_jsonable",
    "config_to_jsonable",
    "records_from_history",
    "require_amptorch",
    "split_metrics",
    "training_settings",
    "untransferable_settings",
]


def _elements_of(images) -> list[str]:
    return sorted({s for atoms in images for s in atoms.get_chemical_symbols()})


def _write_images(path: Path, images) -> str:
    import ase.io

    ase.io.write(str(path), list(images))
    return str(path)


class AmptorchObjective(Objective):
    """Objective that trains each trial with real AMPTorch (``AtomsTrainer``) in its own interpreter.

    Same inputs and outputs as ``BuiltinObjective``: ``evaluate(params, data_fraction, epochs)``
    trains on the built-in trainer's nested subset of the training pool, validates on the same
    fixed validation set, and returns the same learning-curve records, scored after every epoch
    inside AMPTorch's skorch loop. Picklable: holds paths (or the given Atoms), configurations
    and the interpreter's path; images are loaded lazily in the process that evaluates.

    Args:
        train: training pool (path of an ASE-readable file, or list of Atoms).
        val: fixed validation set; None splits it off ``train`` like the built-in trainer
            (``split_train_val(train, val_fraction, seed)`` of the base config).
        base_config: ``TrainConfig`` (or its dict) each trial's hyperparameters modify.
        metric: record key minimised ("val_energy_mae_per_atom" default, "val_force_mae", ...) or
            a dict of record key -> weight.
        workdir: where the per-trial run directories go (default: the system temp folder); each
            is removed after its trial.
        save_fps: let AMPTorch also store fingerprints on disk (in the trial's run directory).
        python: AMPTorch's interpreter (default: ``$MFBO_AMPTORCH_PYTHON``, else the environment
            ``.ci/setup-amptorch.sh`` builds; see docs/amptorch.md).
        threads: torch (and OpenMP) threads per trial, default 1: AMPTorch's small networks
            train faster on one thread, and parallel trials do not oversubscribe the cores.
        smoke: run the 1-epoch smoke fit at construction (default True).

    Raises:
        BackendUnavailable: at construction, when no AMPTorch interpreter is found or the smoke
            fit fails there (one line with AMPTorch's error).
    """

    def __init__(self, train, val=None, base_config=None, metric: str | dict = "val_energy_mae_per_atom",
                 workdir=None, save_fps: bool = False, python: str | os.PathLike | None = None, threads: int = 1,
                 smoke: bool = True):
        self.python = find_python(python)
        self.base_config = _config_dict(base_config)
        check_metric(metric)
        self.metric = metric
        self.train_source = str(train) if isinstance(train, os.PathLike) else train
        self.val_source = str(val) if isinstance(val, os.PathLike) else val
        self.workdir = None if workdir is None else str(workdir)
        self.save_fps = bool(save_fps)
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise ConfigError(f"objective option threads must be an integer >= 1, got {threads!r}")
        self.threads = threads
        self._loaded = None
        self.smoke_info = self.smoke() if smoke else None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_loaded"] = None  # re-read in the worker
        return state

    def smoke(self) -> dict[str, Any]:
        """The 1-epoch fit on two tiny images of the data's elements, with this objective's settings.

        Raises:
            BackendUnavailable: one line with the interpreter and AMPTorch's exact error.
        """
        pool, val = self.datasets()
        elements = _elements_of(list(pool) + list(val))
        images = tiny_images(elements)
        config = build_amptorch_config({}, self.base_config, train_images=images[:1], val_images=images[1:],
                                       epochs=1, elements=elements, torch_objects=False)
        config["dataset"]["raw_data"] = "<smoke images>"
        return smoke_check(self.python, config_to_jsonable(config), elements, threads=self.threads)

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

    def build_config(self, params: Mapping[str, Any], data_fraction: float, epochs: int | None,
                     run_dir: str = "./", **kwargs):
        """The AtomsTrainer config this objective trains for one trial (see build_amptorch_config)."""
        pool, val = self.datasets()
        return build_amptorch_config(
            params, self.base_config, train_images=pool, val_images=val, data_fraction=data_fraction,
            epochs=epochs, run_dir=run_dir, save_fps=self.save_fps, **kwargs,
        )

    def _run(self, params, data_fraction, epochs, prefix: str, test=None, keep_model: bool = False, **kwargs):
        """Build the trial's config, run it in AMPTorch's interpreter; (config, n_train, n_val, result, folder)."""
        root = self.workdir or tempfile.gettempdir()
        os.makedirs(root, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
        try:
            config = self.build_config(params, data_fraction, epochs, run_dir=str(folder / "run"),
                                       torch_objects=False, **kwargs)
            images = config["dataset"]["raw_data"]
            n_val = len(self.datasets()[1])
            request = {
                "config": config_to_jsonable({**config, "dataset": {**config["dataset"], "raw_data": "<images>"}}),
                "raw_data": _write_images(folder / "images.traj", images),
                "n_val": n_val,
                "divergence_factor": float(training_settings(params, self.base_config).get("divergence_factor", 1e4)),
                "threads": self.threads,
                "test": _write_images(folder / "test.traj", test) if test else None,
                "model_out": str(folder / "model.npz") if keep_model else None,
                "checkpoint_out": str(folder / "checkpoint") if keep_model else None,
            }
            result = run_worker(self.python, request, folder)
            model = AmptorchModel.from_files(folder / "model.npz", folder / "checkpoint", request["config"]) \
                if keep_model else None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        config["dataset"]["raw_data"] = f"<{len(images)} images>"
        return config, len(images) - n_val, n_val, result, model

    def evaluate(self, params: dict, data_fraction: float, epochs: int) -> dict:
        """Train one trial through AMPTorch; see :meth:`Objective.evaluate`.

        Raises:
            TrainingDiverged: non-finite loss or metrics (carries the epoch and last finite record).
            ObjectiveError: AMPTorch failed (its exception type and message, one line).
        """
        t0 = time.perf_counter()
        config, n_train, n_val, result, _ = self._run(params, data_fraction, epochs, "amptorch-trial-")
        records = result["records"]
        if len(records) != int(epochs):
            raise ObjectiveError(f"AMPTorch ran {len(records)} epochs, {epochs} were asked for")
        return {
            "curve": metric_curve(records, self.metric),
            "cost": time.perf_counter() - t0,
            "records": records,
            "metadata": {
                "backend": "amptorch",
                "amptorch_version": result.get("versions", {}).get("amptorch", "unknown"),
                "versions": result.get("versions", {}),
                "python": self.python,
                "threads": result.get("threads"),
                "n_train": n_train,
                "n_val": n_val,
                "timings": result.get("timings", {}),
                "not_transferred": untransferable_settings(training_settings(params, self.base_config)),
                "config": config_to_jsonable(config),
            },
        }

    def fit(self, params: dict, data_fraction: float = 1.0, epochs: int | None = None, test=None, **kwargs):
        """Train once through AMPTorch and keep the model (the study's final retraining).

        AMPTorch runs with checkpointing on (``debug = False``), as AMPTorch users get it.

        Args:
            params, data_fraction, epochs: as for :meth:`evaluate` (epochs None: the config's).
            test: test images (path or list) scored with ``trainer.predict``; None/False: none.

        Returns:
            :class:`AmptorchFitResult` (``curve`` = records, ``model`` with ``save(path)``,
            ``config``, ``test_metrics``, ``timings``, ``n_train``, ``n_val``).
        """
        test_images = None if test in (None, False) else list(_training_api("load_images")(test))
        settings = training_settings(params, self.base_config)
        t0 = time.perf_counter()
        _, n_train, n_val, result, model = self._run(
            params, data_fraction, epochs, "amptorch-fit-", test=test_images, keep_model=True,
            debug=False, identifier="mfbo-final")
        timings = dict(result.get("timings", {}))
        timings["total"] = time.perf_counter() - t0
        return AmptorchFitResult(
            curve=result["records"], model=model, config=_trainconfig_class().from_dict(settings),
            test_metrics=result.get("test_metrics"), timings=timings, n_train=n_train, n_val=n_val,
        )

    def describe(self) -> dict:
        return {
            "class": "mfbo.objectives._amptorch:AmptorchObjective",
            "train": describe_source(self.train_source),
            "val": describe_source(self.val_source),
            "metric": self.metric,
            "base_config": self.base_config,
            "python": self.python,
            "threads": self.threads,
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
    def from_files(cls, weights, checkpoint_dir, config: Mapping[str, Any]) -> AmptorchModel:
        """Read the worker's weights (``.npz`` of ``param:<name>`` arrays) and checkpoint folder."""
        import numpy as np

        weights = Path(weights)
        if not weights.is_file():
            raise ObjectiveError(f"AMPTorch's worker wrote no weights file {weights}")
        with np.load(weights) as z:
            state = {k[len("param:"):]: z[k].copy() for k in z.files if k.startswith("param:")}
        folder = Path(checkpoint_dir)
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.is_dir() else {}
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
