"""The AMPTorch worker: one AMPTorch training run, executed in AMPTorch's own interpreter.

AMPTorch needs numpy < 1.24 and skorch 0.10, which mfbo's environment does not allow, so the
study process (``AmptorchObjective``) never imports it. It writes a request and the images, then
runs ``PYTHON -m mfbo.objectives._amptorch_worker REQUEST.json`` with AMPTorch's interpreter.
This module imports AMPTorch, skorch, torch, numpy and ASE, and from mfbo only its errors, the
record keys, the history callback and the JSON config reader; never the optimiser stack (Ax,
BoTorch, GPyTorch), Dask or mfbo's own trainer.

Request (JSON)::

    {"config": AtomsTrainer config, JSON form (dotted torch names), "raw_data": images file,
     "n_val": trailing images held out for validation, "divergence_factor": float,
     "threads": torch threads, "test": test-images file or null,
     "model_out": .npz path for the trained weights or null,
     "checkpoint_out": folder for AMPTorch's checkpoint files or null, "result": result .json path,
     "initial_state": .npz of initial weights (``param:<AMPTorch state key>``) or absent}

Result (JSON): ``{"ok": true, "records": [...], "timings": {"setup": s, "train": s},
"test_metrics": {...} | null, "versions": {...}, "threads": torch threads used}``, or ``{"ok": false, "error_type": ...,
"message": ..., "epoch": ..., "last_metrics": ..., "traceback": ...}``. Weights go to an
``.npz`` (arrays only), never a pickle.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mfbo.errors import ObjectiveError, TrainingDiverged
from mfbo.objectives._amptorch_config import config_from_jsonable
from mfbo.objectives._amptorch_history import (
    SplitTargets,
    make_scoring_callback,
    records_from_history,
    split_metrics,
    tail_split,
)

__all__ = ["main", "run_amptorch"]


def _initial_state_callback(path: str):
    """A skorch callback that loads weights (``.npz`` of ``param:<AMPTorch state key>``) at fit start.

    skorch re-initialises the module when ``fit`` begins, so the weights are copied in place
    once training begins, before the first batch (the optimizer keeps its references).
    """
    import numpy as np
    import torch
    from skorch.callbacks import Callback

    with np.load(path) as z:
        arrays = {k[len("param:"):]: z[k].copy() for k in z.files if k.startswith("param:")}

    class InitialState(Callback):
        def on_train_begin(self, net, **kwargs):
            module = net.module_
            own = module.state_dict()
            missing = sorted(set(own) - set(arrays))
            extra = sorted(set(arrays) - set(own))
            if missing or extra:
                raise ObjectiveError(f"initial weights do not fit AMPTorch's model: missing {missing}, "
                                     f"unexpected {extra}")
            with torch.no_grad():
                for key, value in own.items():
                    value.copy_(torch.as_tensor(arrays[key], dtype=value.dtype))

    return InitialState()


def run_amptorch(config: dict, n_val: int, train_images: Sequence, val_images: Sequence,
                 divergence_factor: float = 1e4, after: Callable[[Any], Any] | None = None,
                 initial_state: str | None = None):
    """Train with AMPTorch's ``AtomsTrainer``; return (records, timings, ``after(trainer)``).

    The last ``n_val`` images of ``config["dataset"]["raw_data"]`` are the validation set,
    scored in mfbo's record layout after every epoch. AMPTorch changes the working directory
    (into its run directory), torch's default dtype and ``skorch.net.to_tensor``; all three are
    restored afterwards, after ``after(trainer)`` (e.g. ``trainer.predict``) has run in
    AMPTorch's setting. ``initial_state`` (an ``.npz`` of ``param:<state key>`` arrays) replaces
    AMPTorch's initial weights, for like-for-like comparisons with the built-in trainer.
    """
    import skorch.net
    import torch
    from amptorch.trainer import AtomsTrainer

    with_forces = bool(config["model"]["get_forces"])
    train_targets = SplitTargets(train_images, with_forces)
    val_targets = SplitTargets(val_images, with_forces)
    cwd = os.getcwd()
    default_dtype = torch.get_default_dtype()
    to_tensor = skorch.net.to_tensor
    timings: dict[str, float] = {}
    try:
        t0 = time.perf_counter()
        # AtomsTrainer edits its config (deletes raw_data, adds descriptor entries): give it a copy.
        own = {name: copy.deepcopy({k: v for k, v in section.items() if k != "raw_data"})
               for name, section in config.items()}
        own["dataset"]["raw_data"] = list(config["dataset"]["raw_data"])
        os.makedirs(own["cmd"].get("run_dir") or ".", exist_ok=True)  # AMPTorch changes into it
        trainer = AtomsTrainer(own)
        trainer.load()  # featurise, scale, build the model and the skorch net
        timings["setup"] = time.perf_counter() - t0
        # Hold out exactly the trailing validation images (whatever skorch's train_split
        # signature) and score in mfbo's record layout after every epoch.
        trainer.net.train_split = tail_split(n_val)
        callbacks = list(trainer.net.callbacks or [])
        if initial_state:
            callbacks.insert(0, ("mfbo_initial_state", _initial_state_callback(initial_state)))
        trainer.net.callbacks = callbacks + [
            ("mfbo_scoring", make_scoring_callback(train_targets, val_targets, with_forces, divergence_factor))
        ]
        t1 = time.perf_counter()
        trainer.net.fit(trainer.train_dataset, None)
        timings["train"] = time.perf_counter() - t1
        extra = after(trainer) if after is not None else None
    finally:
        os.chdir(cwd)
        torch.set_default_dtype(default_dtype)
        skorch.net.to_tensor = to_tensor
    return records_from_history(trainer.net.history), timings, extra


def _test_metrics(trainer, images: list, with_forces: bool) -> dict[str, Any]:
    import numpy as np

    pred = trainer.predict(list(images))
    forces = None
    if with_forces and len(pred.get("forces", [])):
        forces = np.concatenate([np.asarray(f).reshape(-1, 3) for f in pred["forces"]])
    raw = split_metrics(pred["energy"], forces, SplitTargets(images, with_forces), "test")
    metrics: dict[str, Any] = {k[len("test_"):]: v for k, v in raw.items()}
    metrics["n_images"] = len(images)
    return metrics


def _save_model(trainer, model_out: str | None, checkpoint_out: str | None) -> None:
    import numpy as np

    if model_out:
        module = getattr(trainer.net, "module_", None) or trainer.net.module
        arrays = {f"param:{k}": v.detach().cpu().numpy() for k, v in module.state_dict().items()}
        with open(model_out, "wb") as fh:
            np.savez(fh, **arrays)
    cp_dir = getattr(trainer, "cp_dir", None)
    if checkpoint_out and cp_dir and os.path.isdir(cp_dir):
        out = Path(checkpoint_out)
        out.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(cp_dir):
            full = Path(cp_dir) / name
            if full.is_file():
                (out / name).write_bytes(full.read_bytes())


def _versions() -> dict[str, str]:
    import amptorch
    import numpy
    import skorch
    import torch

    return {"amptorch": getattr(amptorch, "__version__", "unknown"), "numpy": numpy.__version__,
            "skorch": skorch.__version__, "torch": torch.__version__, "python": sys.version.split()[0]}


def serve(request: dict) -> dict:
    """Run one request (see the module docstring); return the result dict (never raises)."""
    try:
        import ase.io
        import torch

        threads = int(request.get("threads") or 1)
        torch.set_num_threads(threads)
        config = config_from_jsonable(request["config"])
        images = ase.io.read(request["raw_data"], index=":")
        n_val = int(request["n_val"])
        if not 0 < n_val < len(images):
            raise ObjectiveError(f"n_val={n_val} must be in [1, {len(images) - 1}] for {len(images)} images")
        config["dataset"]["raw_data"] = images
        with_forces = bool(config["model"]["get_forces"])
        test = ase.io.read(request["test"], index=":") if request.get("test") else None

        def after(trainer):
            metrics = _test_metrics(trainer, test, with_forces) if test else None
            _save_model(trainer, request.get("model_out"), request.get("checkpoint_out"))
            return metrics

        records, timings, test_metrics = run_amptorch(
            config, n_val, images[:-n_val], images[-n_val:], float(request.get("divergence_factor", 1e4)), after,
            initial_state=request.get("initial_state"))
        return {"ok": True, "records": records, "timings": timings, "test_metrics": test_metrics,
                "versions": _versions(), "threads": torch.get_num_threads()}
    except Exception as exc:  # reported to the study process, which raises it there
        out: dict[str, Any] = {"ok": False, "error_type": type(exc).__name__,
                               "message": " ".join(str(exc).split()) or type(exc).__name__,
                               "traceback": traceback.format_exc()}
        if isinstance(exc, TrainingDiverged):
            out["epoch"] = exc.epoch
            out["last_metrics"] = exc.last_metrics
        return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mfbo.objectives._amptorch_worker REQUEST.json``: serve it, write its result."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m mfbo.objectives._amptorch_worker REQUEST.json", file=sys.stderr)
        return 2
    request = json.loads(Path(args[0]).read_text())
    result = serve(request)
    path = Path(request["result"])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, allow_nan=True))
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
