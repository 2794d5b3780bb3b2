"""Parity: per-epoch validation errors of the built-in trainer and of real AMPTorch.

Both train the same images, split and settings: AMPTorch's seed configuration written out
explicitly (gmp orders 0-2, 3 x 10 tanh with batch norm, Adam lr 1e-3, MSE, force coefficient
0.01, float64) with the built-in trainer set to AMPTorch's behaviour where it has a switch:
``target_scaling = "amptorch"`` (total-energy mean/std), ``force_loss_atoms = "all"``,
``batchnorm_stats = "standard"``. AMPTorch runs in its own interpreter (``--python``,
``MFBO_AMPTORCH_PYTHON`` or the ``.ci/setup-amptorch.sh`` environment). Three variants peel the
known causes of difference off one at a time:

* ``as shipped``: minibatches of 16, each trainer's own initial weights and batch order;
* ``same start``: the built-in trainer's initial weights loaded into AMPTorch, and one batch
  of all training images per epoch (so the batch order, which each trainer draws from its own
  random stream, cannot matter);
* ``no leak``: ``same start`` with the validation set = a copy of the training images, so that
  AMPTorch's scalers, which it fits on training + validation images, see the built-in trainer's
  training-only ranges (the energy std still differs by the duplicated images' ddof=1 factor).

Prints, per variant and epoch, both validation energy MAEs (eV/atom) and force MAEs (eV/Å) and
their relative difference. Usage::

    python analysis/parity_amptorch.py [--python PATH] [--images 60] [--epochs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mfbo.objectives._amptorch_config import build_amptorch_config, config_to_jsonable  # noqa: E402
from mfbo.objectives._amptorch_env import find_python, run_worker  # noqa: E402
from mfbo.training import PRESETS, TrainConfig, split_train_val  # noqa: E402

SIGMAS = [0.2, 0.69, 1.1, 1.66, 2.66]
AMPTORCH_SEED_CONFIG = dict(
    PRESETS["amptorch"],
    fp_scheme="gmp",
    fp_params={"MCSHs": {"0": {"groups": [1], "sigmas": SIGMAS}, "1": {"groups": [1], "sigmas": SIGMAS},
                         "2": {"groups": [1, 2], "sigmas": SIGMAS}}, "cutoff": 8.0},
    dropout=0.0, weight_decay=0.0, get_forces=True, dtype="float64", seed=1, val_fraction=0.2,
)


def builtin_run(config: TrainConfig, train_images, val_images, epochs: int):
    """(records, initial weights as AMPTorch state keys) of one built-in training run."""
    import mfbo.training._train as trainer

    captured = []
    original = trainer.SingleNN

    class Capturing(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            captured.append({"model.model_" + k: v.detach().cpu().numpy().copy()
                             for k, v in self.state_dict().items()})

    trainer.SingleNN = Capturing
    try:
        result = trainer.train(config, train_images, val_images, epochs=epochs)
    finally:
        trainer.SingleNN = original
    return result.curve, captured[0]


def amptorch_run(python: str, config: TrainConfig, train_images, val_images, epochs: int, initial=None):
    """Records of one AMPTorch run of the same settings (``initial``: weights to start from)."""
    import ase.io

    with tempfile.TemporaryDirectory(prefix="mfbo-parity-") as folder:
        cfg = build_amptorch_config({}, config, train_images=train_images, val_images=val_images, epochs=epochs,
                                    run_dir=os.path.join(folder, "run"), torch_objects=False)
        images = cfg["dataset"]["raw_data"]
        cfg["dataset"]["raw_data"] = "<images>"
        ase.io.write(os.path.join(folder, "images.traj"), images)
        request = {"config": config_to_jsonable(cfg), "raw_data": os.path.join(folder, "images.traj"),
                   "n_val": len(val_images), "divergence_factor": 1e12, "threads": 1}
        if initial is not None:
            np.savez(os.path.join(folder, "initial.npz"), **{f"param:{k}": v for k, v in initial.items()})
            request["initial_state"] = os.path.join(folder, "initial.npz")
        return run_worker(python, request, folder)["records"]


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--python", default=None, help="AMPTorch's interpreter")
    parser.add_argument("--images", type=int, default=60, help="images of water_2d.traj used (default 60)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--json", default=None, help="also write the numbers to this file")
    args = parser.parse_args(argv)
    import ase.io
    import torch

    torch.set_num_threads(1)
    python = find_python(args.python)
    images = ase.io.read(str(REPO / "mfbo" / "datasets" / "water_2d.traj"), f":{args.images}")
    train_images, val_images = split_train_val(images, AMPTORCH_SEED_CONFIG["val_fraction"],
                                               AMPTORCH_SEED_CONFIG["seed"])
    full = dict(AMPTORCH_SEED_CONFIG, batch_size=len(train_images))
    variants = [
        ("as shipped", TrainConfig(**AMPTORCH_SEED_CONFIG), val_images, False),
        ("same start", TrainConfig(**full), val_images, True),
        ("no leak", TrainConfig(**full), [a.copy() for a in train_images], True),
    ]
    for atoms, src in zip(variants[2][2], train_images):
        atoms.calc = src.calc
    print(f"water_2d: {len(train_images)} training, {len(val_images)} validation images; {args.epochs} epochs; "
          f"AMPTorch in {python}")
    out = {}
    for name, config, val, same_start in variants:
        builtin, initial = builtin_run(config, train_images, val, args.epochs)
        amp = amptorch_run(python, config, train_images, val, args.epochs, initial if same_start else None)
        print(f"\n{name}: epoch, val energy MAE (eV/atom) built-in / AMPTorch / rel diff; "
              "val force MAE (eV/Å) built-in / AMPTorch / rel diff")
        rows = []
        for b, a in zip(builtin, amp):
            e_b, e_a = b["val_energy_mae_per_atom"], a["val_energy_mae_per_atom"]
            f_b, f_a = b["val_force_mae"], a["val_force_mae"]
            rows.append({"epoch": b["epoch"], "energy": [e_b, e_a, _rel(e_b, e_a)], "force": [f_b, f_a, _rel(f_b, f_a)]})
            print(f"  {b['epoch']}  {e_b:.5f} / {e_a:.5f} / {_rel(e_b, e_a):6.2%}    "
                  f"{f_b:.5f} / {f_a:.5f} / {_rel(f_b, f_a):6.2%}")
        worst = max(max(r["energy"][2], r["force"][2]) for r in rows)
        print(f"  largest relative difference: {worst:.2%}")
        out[name] = rows
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
