"""Data-parallel training: epoch time of one run over N torchrun processes against one process.

Both sides train the same configuration through the real CLI (``mfbo train``; the data-parallel side
under ``python -m torch.distributed.run --nproc-per-node N``, gloo on 127.0.0.1), one thread per
process, after one featurisation has filled a shared fingerprint cache. N processes with batch size B
take the optimiser steps of one process with batch size N x B (the same trajectory when the batches
hold equally many atoms), so that single-process run is the baseline; one process at batch size B is
shown too. Printed: mean epoch seconds (validation included) and the ratios, repeated ``--repeats``
times in alternation.

    .venv/bin/python analysis/bench_distributed.py --processes 2 --epochs 4 --repeats 2 \\
        --out analysis/scale_results/bench_distributed_cpu.json

On a machine with N free cores the ideal ratio is 1/N; each process also evaluates the whole
validation set after every epoch, which does not shrink with N.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(run_file: Path, out: Path, processes: int, env: dict) -> dict:
    from mfbo.training._distributed import torchrun_command

    cli = ["-m", "mfbo.cli", "train", str(run_file), "-o", str(out), "--no-progress"]
    cmd = torchrun_command(processes, cli) if processes > 1 else [sys.executable, *cli]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_distributed: {' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    record = json.loads((out / "record.json").read_text())
    epochs = [r["epoch_time"] for r in record["curve"]]
    return {"epoch_s": sum(epochs[1:]) / max(len(epochs) - 1, 1),  # the first epoch warms caches up
            "wall_s": wall, "final_val_energy_mae_per_atom": record["curve"][-1]["val_energy_mae_per_atom"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", default=None, help="training data (default: the bundled 569-image OC20 pool)")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8, help="per process")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the numbers to this JSON file")
    args = ap.parse_args(argv)

    from mfbo.datasets import OC20_TRAIN_POOL
    from mfbo.training._distributed import torchrun_env

    train = Path(args.train or OC20_TRAIN_POOL).resolve()
    env = torchrun_env()
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    n, b = args.processes, args.batch_size
    sides = {f"1 process, batch {n * b}": (1, n * b), f"{n} processes, batch {b} each": (n, b),
             f"1 process, batch {b}": (1, b)}
    results: dict = {name: [] for name in sides}
    with tempfile.TemporaryDirectory(prefix="mfbo-bench-ddp-") as tmp:
        work = Path(tmp)
        base = {"train": str(train), "cache_dir": str(work / "cache"), "epochs": args.epochs, "num_threads": 1}
        warm = work / "warm.json"
        warm.write_text(json.dumps({**base, "epochs": 1}))
        _run(warm, work / "warm", 1, env)  # fills the fingerprint cache once
        for rep in range(args.repeats):
            for name, (procs, batch) in sides.items():
                run_file = work / f"run-{procs}-{batch}.json"
                run_file.write_text(json.dumps({**base, "batch_size": batch}))
                res = _run(run_file, work / f"out-{rep}-{procs}-{batch}", procs, env)
                results[name].append(res)
                print(f"repeat {rep + 1}: {name}: {res['epoch_s']:.2f} s/epoch", flush=True)
    mean = {name: sum(r["epoch_s"] for r in rs) / len(rs) for name, rs in results.items()}
    names = list(sides)
    ratio = mean[names[1]] / mean[names[0]]
    print("\nmean epoch time: " + ", ".join(f"{k} {v:.2f} s" for k, v in mean.items()))
    print(f"ratio {names[1]} / {names[0]} (same optimiser steps): {ratio:.2f} (ideal 1/{n} = {1 / n:.2f})")
    summary = {"train": str(train), "processes": n, "batch_size_per_process": b, "epochs": args.epochs,
               "repeats": args.repeats, "runs": results, "mean_epoch_s": mean, "ratio_distributed_vs_one": ratio,
               "load_average_end": os.getloadavg(), "cpus": os.cpu_count(),
               "machine": {"python": platform.python_version(), "platform": platform.platform()}}
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
