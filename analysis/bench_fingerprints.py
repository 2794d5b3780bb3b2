"""Benchmark the GMP engine against real AMPTorch, measured live in the same run.

Images/s and atoms/s on the first 100 images of the OC20 train pool with parameter sets
(a) and (b) of the AMPTorch reference, values only and with the Jacobian, with 1 and 2
torch threads; plus the whole 569-image pool with derivatives (the trainer's set-up).
AMPTorch's own featurisation (its C++ kernels, 1 thread, no fingerprint database) runs in its
own interpreter (``--python``, ``MFBO_AMPTORCH_PYTHON`` or the ``.ci/setup-amptorch.sh``
environment) through ``analysis/amptorch_gmp_timer.py``, alternating with mfbo's repeats, so
both see the same machine load; without an AMPTorch interpreter only mfbo is measured.

The machine is shared, so every figure is the median over repeats: wall-clock img/s and
atoms/s, the best wall time, the process CPU time, and "est img/s" = images / (CPU time /
threads), the throughput with the threads never descheduled (load-independent); ratios are
given for both.

    OMP_NUM_THREADS=1 .venv/bin/python analysis/bench_fingerprints.py [--repeats 5] [--device cpu] [--python PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
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


class AmptorchTimer:
    """AMPTorch's featurisation, timed in its own interpreter (one persistent process)."""

    def __init__(self, python: str):
        from mfbo.objectives._amptorch_env import worker_env

        self.proc = subprocess.Popen(
            [python, str(REPO / "analysis" / "amptorch_gmp_timer.py")], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=worker_env(1), cwd=str(REPO),
        )

    def __call__(self, spec: dict, derivatives: bool, count: int) -> tuple[float, float]:
        """(wall s, CPU s) of one featurisation of the pool's first ``count`` images."""
        from mfbo.objectives._amptorch_config import amptorch_fp_params

        fp = amptorch_fp_params(spec["fp_scheme"], {k: v for k, v in spec.items() if k != "fp_scheme"})
        self.proc.stdin.write(json.dumps({"images": str(POOL), "fp_params": fp, "derivatives": derivatives,
                                          "count": count}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"AMPTorch's timer exited with code {self.proc.wait()}")
        out = json.loads(line)
        return out["wall"], out["cpu"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(60)


def _time(fn, repeats: int, other=None):
    """Medians over ``repeats`` of fn's wall and CPU time (and of ``other``'s, alternating), best wall."""
    walls, cpus, other_times = [], [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        if other is not None:
            other_times.append(other())
    theirs = None
    if other_times:
        theirs = (statistics.median(t[0] for t in other_times), statistics.median(t[1] for t in other_times))
    return statistics.median(walls), statistics.median(cpus), min(walls), theirs


def _amptorch_timer(python):
    from mfbo.errors import BackendUnavailable
    from mfbo.objectives._amptorch_env import find_python

    try:
        return AmptorchTimer(find_python(python))
    except BackendUnavailable as exc:
        print(f"AMPTorch not measured: {exc}", file=sys.stderr)
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", default="1,2", help="comma-separated torch thread counts")
    ap.add_argument("--skip-pool", action="store_true", help="skip the 569-image run")
    ap.add_argument("--python", default=None, help="AMPTorch's interpreter (default: MFBO_AMPTORCH_PYTHON, ...)")
    args = ap.parse_args(argv)
    amptorch = _amptorch_timer(args.python)
    measured: dict = {}  # (set, derivatives) -> AMPTorch's (median wall, median CPU) at 1 thread

    pool = read(POOL, ":")
    imgs = pool[:100]
    n_atoms = sum(len(a) for a in imgs)
    print(f"{len(imgs)} images, {n_atoms} atoms; device {args.device}; repeats {args.repeats} (median)")
    header = (
        f"{'set':>3} {'mode':>7} {'thr':>3} {'img/s':>8} {'atoms/s':>9} {'best img/s':>10} {'cpu s':>7} "
        f"{'est img/s':>9} {'AMPTorch':>8} {'AMP cpu':>7} {'ratio':>6} {'ratio(cpu)':>10}"
    )
    print(header)
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for name, spec in SETS.items():
            params = GMPParams.from_fp_params(spec, spec["fp_scheme"])
            for deriv in (False, True):
                featurize_many(imgs[:10], params, derivatives=deriv, device=args.device)  # warm-up
                # AMPTorch is measured once per set and mode (its kernels are single-threaded),
                # alternating with mfbo's first thread count.
                other = None
                if amptorch is not None and (name, deriv) not in measured:
                    amptorch(spec, deriv, 10)  # warm-up (imports, kernel set-up)
                    other = lambda spec=spec, deriv=deriv: amptorch(spec, deriv, len(imgs))  # noqa: E731
                wall, cpu, best, theirs = _time(
                    lambda params=params, deriv=deriv: featurize_many(
                        imgs, params, derivatives=deriv, device=args.device
                    ),
                    args.repeats,
                    other,
                )
                if theirs is not None:
                    measured[(name, deriv)] = theirs
                ips = len(imgs) / wall
                # est img/s = images / (process CPU time / threads): the throughput when the
                # threads are never descheduled, i.e. a load-independent estimate on a shared machine.
                per_cpu = len(imgs) / cpu * threads
                ref = measured.get((name, deriv))
                amp = (f"{len(imgs) / ref[0]:8.1f} {len(imgs) / ref[1]:7.1f} {ips / (len(imgs) / ref[0]):6.2f} "
                       f"{per_cpu / (len(imgs) / ref[1]):10.2f}") if ref else f"{'-':>8} {'-':>7} {'-':>6} {'-':>10}"
                print(
                    f"{name:>3} {'deriv' if deriv else 'values':>7} {threads:>3} {ips:8.1f} "
                    f"{n_atoms / wall:9.0f} {len(imgs) / best:10.1f} {cpu:7.2f} {per_cpu:9.1f} {amp}"
                )
    if not args.skip_pool:
        torch.set_num_threads(1)
        params = GMPParams.from_fp_params(SETS["a"], "gmp")
        out = []
        other = (lambda: amptorch(SETS["a"], True, len(pool))) if amptorch is not None else None
        wall, cpu, best, theirs = _time(
            lambda: out.append(featurize_many(pool, params, derivatives=True, device=args.device)),
            max(1, args.repeats // 2),
            other,
        )
        mib = sum(fp.dfeatures.nbytes + fp.features.nbytes for fp in out[-1]) / 2**20
        amp = (f"; AMPTorch featurisation {theirs[0]:.1f} s wall, {theirs[1]:.1f} s CPU "
               f"({theirs[0] / wall:.1f}x wall, {theirs[1] / cpu:.1f}x CPU)") if theirs else ""
        print(
            f"full pool ({len(pool)} images, {sum(len(a) for a in pool)} atoms), set a, derivatives, 1 thread: "
            f"{wall:.1f} s wall (best {best:.1f} s), {cpu:.1f} s CPU, {mib:.0f} MiB features + Jacobian{amp}"
        )
    if amptorch is not None:
        amptorch.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
