"""The SingleNN trainer on a CUDA GPU against the same runs on the CPU (same process, same fingerprints).

Run where a GPU is present (CPU-only machines print the CPU runs and say so)::

    PYTHONUNBUFFERED=1 python analysis/bench_training_device.py --epochs 5 --out device.json

What it measures, on the bundled 569-image OC20 pool (90/10 split, forces on, fingerprints computed once on
the CPU in float64 and shared by every run):

1. Agreement: the seed configuration (GMP set (a), 3 x 10 tanh + batchnorm, batch 16) trained for
   ``--epochs`` epochs with the same seed on ``cpu`` and ``cuda``, both float64. Printed: the largest
   relative difference of the per-epoch validation energy and force MAEs (eV, eV/A). Float64 kernels on
   the two devices sum in different orders, so the curves agree to rounding, not bit for bit.
2. Take-away: ``train`` returns its model on the CPU; the GPU-trained one is saved, loaded, and its
   energies (eV) and forces (eV/A) on 20 validation images compared with the CPU-trained model's.
3. Speed: median seconds per epoch (wall) for the seed configuration and a wider one (3 x 64 silu,
   batch 64), each on cpu/float64, cuda/float64 and cuda/float32, printed as ratios cpu / cuda.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_training import _MemoryCache  # noqa: E402 - the shared in-process fingerprint cache

from mfbo.datasets import OC20_TRAIN_POOL  # noqa: E402
from mfbo.training import TrainConfig, TrainedModel, load_images, split_train_val, train  # noqa: E402


def _curve(result, key: str) -> np.ndarray:
    return np.array([rec[key] for rec in result.curve], dtype=float)


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=5, help="epochs per run (5)")
    ap.add_argument("--out", default=None, help="write every number to this JSON file")
    args = ap.parse_args(argv)

    cuda = torch.cuda.is_available()
    report: dict = {"torch": torch.__version__, "cuda": cuda, "epochs": args.epochs,
                    "gpu": torch.cuda.get_device_name(0) if cuda else None}
    print(f"torch {torch.__version__}; CUDA {'available: ' + report['gpu'] if cuda else 'NOT available'}")
    pool = load_images(OC20_TRAIN_POOL, require_forces=True)
    seed_cfg = TrainConfig(target_scaling="amptorch", batchnorm_stats="standard", epochs=args.epochs, seed=1)
    wide_cfg = seed_cfg.replace(num_nodes=64, activation="silu", batch_size=64, target_scaling="per_element")
    train_set, val_set = split_train_val(pool, 0.1, seed=seed_cfg.seed)
    cache = _MemoryCache()
    t0 = time.perf_counter()
    train(seed_cfg.replace(epochs=1), train_set, val_set, cache=cache)  # featurise once (float64, CPU)
    report["featurise_and_first_run_s"] = time.perf_counter() - t0
    print(f"{len(train_set)} train / {len(val_set)} val images; fingerprints computed in "
          f"{report['featurise_and_first_run_s']:.1f} s (CPU)")

    runs: dict = {}
    models: dict = {}
    devices = [("cpu", "float64")] + ([("cuda", "float64"), ("cuda", "float32")] if cuda else [])
    for name, cfg in (("seed", seed_cfg), ("wide", wide_cfg)):
        for device, dtype in devices:
            res = train(cfg.replace(device=device, dtype=dtype), train_set, val_set, cache=cache)
            key = f"{name}/{device}/{dtype}"
            runs[key] = {"epoch_s": [rec["epoch_time"] for rec in res.curve],
                         "val_energy_mae": _curve(res, "val_energy_mae").tolist(),
                         "val_force_mae": _curve(res, "val_force_mae").tolist()}
            runs[key]["median_epoch_s"] = statistics.median(runs[key]["epoch_s"])
            print(f"{key:22s} median epoch {runs[key]['median_epoch_s']:.3f} s; after {args.epochs} epochs val "
                  f"energy MAE {runs[key]['val_energy_mae'][-1]:.2f} eV, force MAE "
                  f"{runs[key]['val_force_mae'][-1]:.4f} eV/A")
            if name == "seed" and dtype == "float64":
                models[device] = res.model
    report["runs"] = runs
    if cuda:
        a, b = runs["seed/cuda/float64"], runs["seed/cpu/float64"]
        agree = {"energy_mae_max_rel_diff": _max_rel(np.array(a["val_energy_mae"]), np.array(b["val_energy_mae"])),
                 "force_mae_max_rel_diff": _max_rel(np.array(a["val_force_mae"]), np.array(b["val_force_mae"]))}
        print(f"1. cuda vs cpu (float64, seed config): largest relative difference of the per-epoch validation "
              f"MAEs: energy {agree['energy_mae_max_rel_diff']:.2e}, force {agree['force_mae_max_rel_diff']:.2e}")
        # train() hands its model back on the CPU, so a GPU-trained model is used like any other
        path = Path(args.out or "device_model.json").with_suffix(".model.npz")
        models["cuda"].save(path)
        loaded = TrainedModel.load(path)
        sample = val_set[:20]
        on_gpu, on_cpu = loaded.predict(sample, cache=cache), models["cpu"].predict(sample, cache=cache)
        agree["returned_on"] = str(models["cuda"].device)
        agree["takeaway_energy_max_abs_diff_eV"] = float(np.max(np.abs(on_gpu["energy"] - on_cpu["energy"])))
        agree["takeaway_force_max_abs_diff_eV_per_A"] = float(max(
            np.max(np.abs(f - g)) for f, g in zip(on_gpu["forces"], on_cpu["forces"])))
        print(f"2. GPU-trained model returned on {agree['returned_on']}, saved and loaded, against the CPU-trained "
              f"one on 20 validation images: largest difference {agree['takeaway_energy_max_abs_diff_eV']:.2e} eV, "
              f"{agree['takeaway_force_max_abs_diff_eV_per_A']:.2e} eV/A")
        report["agreement"] = agree
        speed = {}
        for name in ("seed", "wide"):
            base = runs[f"{name}/cpu/float64"]["median_epoch_s"]
            for dtype in ("float64", "float32"):
                speed[f"{name}/cpu_over_cuda_{dtype}"] = base / runs[f"{name}/cuda/{dtype}"]["median_epoch_s"]
        print("3. speed, median epoch cpu/float64 over cuda: " + ", ".join(f"{k} {v:.2f}x" for k, v in speed.items()))
        report["speed"] = speed
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
