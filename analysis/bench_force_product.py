"""Forces from the fingerprint Jacobian: one product per image against one per batch.

    OMP_NUM_THREADS=1 python analysis/bench_force_product.py [--epochs 3] [--repeats 2] [--device cpu]

In-memory trainings on the bundled OC20 pool (90/10 split, default TrainConfig but a constant learning
rate and the last epoch's weights), in this process, alternating ``jacobian_forces(..., batched=False)``
(one product per image of a batch) and ``batched=True`` (the batch's Jacobian blocks gathered into one
product), ``--repeats`` times each: median epoch seconds of each and their ratio, and the last epoch's
validation force MAE of both (the same numbers: the two products agree). ``batched=None``, the
trainer's default, picks the per-image products on the CPU and the gathered product elsewhere.
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

import torch

import mfbo.training._core as core
from mfbo.datasets import OC20_TRAIN_POOL
from mfbo.training import TrainConfig, load_images, split_train_val, train
from mfbo.training._packed import jacobian_forces


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    images = load_images(OC20_TRAIN_POOL, require_forces=True)
    pool, val = split_train_val(images, 0.1, seed=0)
    config = TrainConfig(epochs=args.epochs, scheduler="none", warmup_epochs=0, keep_best=False, device=args.device)
    seconds: dict = {False: [], True: []}
    force_mae: dict = {}
    try:
        for _ in range(args.repeats):
            for batched in (False, True):
                # run_batch reaches the product through this module attribute.
                core.jacobian_forces = partial(jacobian_forces, batched=batched)
                result = train(config, pool, val, data="memory", progress=False)
                seconds[batched] += [c["epoch_time"] for c in result.curve]
                force_mae[batched] = result.curve[-1]["val_force_mae"]
                print(f"{'one product per batch' if batched else 'one product per image'}: epochs "
                      + ", ".join(f"{c['epoch_time']:.2f}" for c in result.curve) + " s", flush=True)
    finally:
        core.jacobian_forces = jacobian_forces
    per_image, per_batch = statistics.median(seconds[False]), statistics.median(seconds[True])
    print(f"{len(pool)} training images, batch {config.batch_size}, {args.device}: median epoch {per_image:.2f} s with "
          f"one product per image, {per_batch:.2f} s with one per batch (ratio {per_batch / per_image:.2f}x); last validation "
          f"force MAE {force_mae[False]:.6g} and {force_mae[True]:.6g} eV/Å")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
