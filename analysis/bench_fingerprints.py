"""Benchmark the GMP engine against AMPTorch's measured single-thread throughput.

Images/s and atoms/s on the first 100 images of the OC20 train pool with parameter sets
(a) and (b) of the AMPTorch reference, values only and with the Jacobian, with 1 and 2
torch threads; plus the whole 569-image pool with derivatives (the trainer's set-up).
AMPTorch (C++ kernels, 1 thread, same machine class): (a) 96 img/s values, 32 img/s with
derivatives; (b) 147 and 49 img/s.

The machine is shared, so every figure is the median over repeats: wall-clock img/s and
atoms/s, the best wall time, the process CPU time, and "est img/s" = images / (CPU time /
threads), the throughput with the threads never descheduled (load-independent); ratios are
given for both.

    OMP_NUM_THREADS=1 .venv/bin/python analysis/bench_fingerprints.py [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from ase.io import read

from mfbo.fingerprints import GMPParams, featurize_many

REPO = Path(__file__).resolve().parents[1]
POOL = REPO / "mfbo" / "datasets" / "train_pool.traj"

SETS = {
    "a": {
        "fp_scheme": "gmp",
        "MCSHs": {
            "0": {"groups": [1], "sigmas": [0.2, 0.69, 1.1, 1.66, 2.66]},
            "1": {"groups": [1], "sigmas": [0.2, 0.69, 1.1, 1.66, 2.66]},
            "2": {"groups": [1, 2], "sigmas": [0.2, 0.69, 1.1, 1.66, 2.66]},
        },
        "cutoff": 8,
    },
    "b": {
        "fp_scheme": "gmp",
        "MCSHs": {
            str(o): {"groups": g, "sigmas": [0.02, 0.2, 0.4, 0.69, 1.1, 1.66, 2.66, 4.4]}
            for o, g in ((0, [1]), (1, [1]), (2, [1, 2]))
        },
        "cutoff": 5,
    },
}
AMPTORCH = {("a", False): 96.0, ("a", True): 32.0, ("b", False): 147.0, ("b", True): 49.0}


def _time(fn, repeats: int):
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), min(walls)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--skip-pool", action="store_true", help="skip the 569-image run")
    args = ap.parse_args(argv)

    pool = read(POOL, ":")
    imgs = pool[:100]
    n_atoms = sum(len(a) for a in imgs)
    print(f"{len(imgs)} images, {n_atoms} atoms; device {args.device}; repeats {args.repeats} (median)")
    header = (
        f"{'set':>3} {'mode':>7} {'thr':>3} {'img/s':>8} {'atoms/s':>9} {'best img/s':>10} {'cpu s':>7} "
        f"{'est img/s':>9} {'AMPTorch':>8} {'ratio':>6} {'ratio(est)':>10}"
    )
    print(header)
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for name, spec in SETS.items():
            params = GMPParams.from_fp_params(spec, spec["fp_scheme"])
            for deriv in (False, True):
                featurize_many(imgs[:10], params, derivatives=deriv, device=args.device)  # warm-up
                wall, cpu, best = _time(
                    lambda params=params, deriv=deriv: featurize_many(
                        imgs, params, derivatives=deriv, device=args.device
                    ),
                    args.repeats,
                )
                ips = len(imgs) / wall
                ref = AMPTORCH[(name, deriv)]
                # est img/s = images / (process CPU time / threads): the throughput when the
                # threads are never descheduled, i.e. a load-independent estimate on a shared machine.
                per_cpu = len(imgs) / cpu * threads
                print(
                    f"{name:>3} {'deriv' if deriv else 'values':>7} {threads:>3} {ips:8.1f} "
                    f"{n_atoms / wall:9.0f} {len(imgs) / best:10.1f} {cpu:7.2f} {per_cpu:9.1f} {ref:8.0f} "
                    f"{ips / ref:6.2f} {per_cpu / ref:10.2f}"
                )
    if not args.skip_pool:
        torch.set_num_threads(1)
        params = GMPParams.from_fp_params(SETS["a"], "gmp")
        out = []
        wall, cpu, best = _time(
            lambda: out.append(featurize_many(pool, params, derivatives=True, device=args.device)),
            max(1, args.repeats // 2),
        )
        mib = sum(fp.dfeatures.nbytes + fp.features.nbytes for fp in out[-1]) / 2**20
        print(
            f"full pool ({len(pool)} images, {sum(len(a) for a in pool)} atoms), set a, derivatives, 1 thread: "
            f"{wall:.1f} s wall (best {best:.1f} s), {cpu:.1f} s CPU, {mib:.0f} MiB features + Jacobian; "
            f"AMPTorch featurisation + dataset build 155 s ({155 / wall:.1f}x wall, {155 / cpu:.1f}x CPU)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
