"""Training on OC20-scale data in bounded memory: peak RSS, featurisation and epoch throughput.

    PYTHONUNBUFFERED=1 python analysis/bench_scale.py --sizes 1000 2000 5000 --out analysis/scale_results/cpu.json
    PYTHONUNBUFFERED=1 python analysis/bench_scale.py --only-featurisation --sizes 1024 --feat-images 1024 \
        --feat-repeats 3 --out analysis/scale_results/featurisation.json
    PYTHONUNBUFFERED=1 python analysis/bench_scale.py --only-subsets --sizes 640 \
        --out analysis/scale_results/subset_featurisation.json

OC20-like data are made from the bundled 569-image OC20 pool: image k is pool image k mod 569 with every
atom displaced by a Gaussian of ``--rattle`` Å (0.02) per component, labels (energy, forces, FixAtoms)
kept. One file of ``max(sizes) / (1 - val_fraction)`` images is written; each size is the training subset
``--data-fraction n / pool`` of it (the nested fidelity subsets), with the same fixed validation set (10%).
Default TrainConfig (forces on, 40 GMP features, float64), one torch thread everywhere; the results stored in
analysis/scale_results/ were measured with AMPTorch's seed fingerprints (20 features), which halve the
fingerprint and Jacobian storage per image.

What it measures, each in a fresh child process (``mfbo train``; peak RSS from ``wait4``):

1. Featurisation throughput of ``--feat-images`` images with Jacobians into shards of
   ``--feat-shard-size`` images: 1 process (the parent, one torch thread) against 2 processes (the
   parent and one spawned worker, one thread each, taking shards from one queue; the worker's
   start-up, about 2 s for importing torch, is included), alternating, ``--feat-repeats`` times.
   Printed: images/s, the speed-up (target >= 1.8x), CPU seconds of all processes, cores busy
   (CPU seconds over wall seconds), the 1-minute load average sampled every second meanwhile, and
   (every 50 ms, from /proc) how often the caller and its worker were both runnable: on a loaded
   machine the load decides the wall time, this fraction shows whether the two had work side by side.
   Then a spawned worker's own cost: seconds until it reports ready, and the CPU seconds of its
   first shards.
2. Stored against recomputed Jacobians: seconds per image to read a batch's Jacobians from the shards
   against recomputing them (``featurize_many`` with derivatives) for the same batch.
3. The whole file featurised into shards once (2 processes), then for each size a 1-epoch
   ``mfbo train --data-fraction f`` with ``data_mode = "stream"``: peak RSS of the child, epoch wall and
   CPU seconds per processed image (an epoch trains on the subset, then predicts the fixed validation
   set: seconds / (n_train + n_val)). Printed: RSS(n) / RSS(smallest) (target <= 1.5x at 5k vs 1k) and
   the per-image epoch time relative to the smallest size (target within +-25 %). The machine's load
   average is recorded beside each measurement: on a shared machine it decides the wall times.
4. Reference: the in-memory path (``data_mode = "memory"``) at the smallest size: its peak RSS and epoch
   time beside the streamed run's.
5. (``--only-subsets``) What a fidelity subset costs to featurise: in this process, one worker, the
   stores a streamed run builds (validation first, then the pool in nested-subset order) for
   fractions 0.1, 0.25, 0.5 and 1 in turn, each resuming the last, against a cold featurisation of
   the whole file in file order (the baseline, measured in the same process): seconds and images
   featurised per step, and the ratio of the cumulative seconds to the baseline's.
6. (``--only-jacobian-epochs``) Stored against recomputed Jacobians over a whole epoch: in this
   process, 1-epoch streamed trainings on the first ``--sizes[-1]`` images of the file (20 % of them
   validation) with ``shard_jacobians = "store"`` and ``"recompute"``, alternating, ``--feat-repeats``
   times after one run of each that builds its store: epoch seconds, their ratio, and the bytes of
   each store.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def make_dataset(path: Path, n: int, rattle: float, seed: int = 0) -> None:
    """Write ``n`` rattled copies of the OC20 pool's images (labels kept) to a .traj file."""
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import Trajectory, read

    from mfbo.datasets import OC20_TRAIN_POOL

    pool = read(str(OC20_TRAIN_POOL), index=":")
    rng = np.random.default_rng(seed)
    with Trajectory(str(path), "w") as traj:
        for k in range(n):
            src = pool[k % len(pool)]
            atoms = src.copy()
            atoms.positions = atoms.positions + rng.normal(0.0, rattle, size=atoms.positions.shape)
            atoms.calc = SinglePointCalculator(
                atoms, energy=src.get_potential_energy(apply_constraint=False), forces=src.get_forces(apply_constraint=False)
            )
            traj.write(atoms)


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_train(workdir: Path, run: dict, tag: str, fraction: float) -> dict:
    """``mfbo train`` for 1 epoch in a child process: its record, peak RSS (bytes) and wall seconds."""
    import tomli_w

    run_file = workdir / f"{tag}.toml"
    run = {**run, "output": str(workdir / tag)}
    run_file.write_text(tomli_w.dumps(run))
    t0 = time.perf_counter()
    log_out, log_err = workdir / f"{tag}.out", workdir / f"{tag}.err"
    with open(log_out, "w") as fo, open(log_err, "w") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mfbo.cli", "train", str(run_file), "--epochs", "1",
             "--data-fraction", repr(fraction)],
            cwd=workdir, env=_child_env(), stdout=fo, stderr=fe,
        )
        # wait4 gives this child's own peak RSS (Linux: kilobytes), not the largest of all children so far.
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = log_out.read_text(), log_err.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"mfbo train ({tag}) failed:\n{out}\n{err}")
    record = json.loads((workdir / tag / "record.json").read_text())
    return {"record": record, "peak_rss_bytes": usage.ru_maxrss * 1024, "wall_s": wall}


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the worker processes)."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class _Sampler:
    """Calls ``_sample()`` every ``every`` seconds in a thread while the ``with`` block runs; the
    subclasses say what a sample is."""

    def __init__(self, every: float):
        import threading

        self.samples: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _sample(self):
        raise NotImplementedError

    def _run(self, every: float) -> None:
        while True:
            self.samples.append(self._sample())
            if self._stop.wait(every):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class _LoadSampler(_Sampler):
    """The 1-minute load average, read from /proc/loadavg every ``every`` seconds."""

    def __init__(self, every: float = 1.0):
        super().__init__(every)

    def _sample(self) -> float:
        return os.getloadavg()[0]

    def summary(self) -> dict:
        return {"mean": float(np.mean(self.samples)), "max": float(np.max(self.samples)), "n": len(self.samples)}


class _RunnableSampler(_Sampler):
    """Every ``every`` seconds, whether this process's main thread and each of its spawned worker
    processes are runnable (state R: running or waiting for a CPU), read from /proc (Linux)."""

    def __init__(self, every: float = 0.05):
        super().__init__(every)

    @staticmethod
    def _state(stat_path: str) -> str | None:
        try:
            text = Path(stat_path).read_text()
        except OSError:
            return None
        return text[text.rindex(")") + 2]

    def _sample(self) -> tuple[bool, list[bool]]:
        me = os.getpid()
        workers = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
                if int(text[text.rindex(")") + 2 :].split()[1]) != me:
                    continue
                if b"spawn_main" not in Path(f"/proc/{entry}/cmdline").read_bytes():
                    continue  # the resource tracker
            except (OSError, ValueError):
                continue
            workers.append(text[text.rindex(")") + 2] == "R")
        return self._state(f"/proc/{me}/task/{me}/stat") == "R", workers

    def summary(self) -> dict:
        n = max(len(self.samples), 1)
        with_worker = [(m, w) for m, w in self.samples if w]
        return {
            "samples": len(self.samples),
            "caller_runnable": sum(m for m, _ in self.samples) / n,
            "worker_alive": len(with_worker) / n,
            "both_runnable": sum(1 for m, w in with_worker if m and any(w)) / n,
        }


def featurisation_speed(path: Path, n_images: int, workdir: Path, repeats: int = 1, shard_size: int = 32) -> dict:
    """Images/s into shards with 1 process against 2 (this one and a spawned worker), the first
    ``n_images`` of ``path``, each measured ``repeats`` times, alternating."""
    import torch
    from ase.io import Trajectory, read

    from mfbo.training import TrainConfig, open_images
    from mfbo.training._featurize import gmp_params_of
    from mfbo.training._shards import build_shards

    sub = workdir / "feat.traj"
    with Trajectory(str(sub), "w") as traj:
        for atoms in read(str(path), index=f":{n_images}"):
            traj.write(atoms)
    params = gmp_params_of(TrainConfig())
    images = open_images(sub)
    out: dict = {"n_images": n_images, "shard_size": shard_size, "repeats": repeats,
                 "load_average_before": os.getloadavg(), "workers_1": [], "workers_2": []}
    torch.set_num_threads(1)
    for r in range(repeats):
        for workers in (1, 2):
            target = workdir / f"feat-shards-{workers}"
            if target.exists():
                shutil.rmtree(target)  # measure a cold featurisation, not a resumed one
            with _LoadSampler() as load, _RunnableSampler() as runnable:
                t0 = time.perf_counter()
                cpu0 = _cpu_seconds()
                build_shards(images, params, target, derivatives=True, require_forces=True,
                             workers=workers, shard_size=shard_size)
                dt = time.perf_counter() - t0
                cpu = _cpu_seconds() - cpu0
            row = {"seconds": dt, "images_per_s": n_images / dt, "cpu_seconds": cpu,
                   # CPU seconds of all processes over wall seconds: 1 = one core busy throughout.
                   "cores_busy": cpu / dt, "load_average_1min": load.summary(),
                   # Fractions of the run: whether the processes had work (a CPU or not), not whether
                   # they got a CPU; on a loaded machine "runnable" includes waiting for one.
                   "runnable": runnable.summary()}
            out[f"workers_{workers}"].append(row)
            print(f"featurisation, {workers} process(es), repeat {r + 1}: {n_images} images in {dt:.1f} s = "
                  f"{n_images / dt:.1f} img/s, {cpu:.1f} CPU s (this process and its worker), {cpu / dt:.2f} cores "
                  f"busy; 1-min load average {load.summary()['mean']:.2f} (max {load.summary()['max']:.2f})"
                  + (f"; both processes runnable {row['runnable']['both_runnable']:.0%} of the run"
                     if workers > 1 else ""), flush=True)
    speedups = [b["images_per_s"] / a["images_per_s"] for a, b in zip(out["workers_1"], out["workers_2"])]
    cpu_ratio = [a["cpu_seconds"] / b["cpu_seconds"] for a, b in zip(out["workers_1"], out["workers_2"])]
    out["speedup_2_vs_1"] = speedups
    out["speedup_2_vs_1_median"] = float(np.median(speedups))
    # The work (CPU seconds) of one process over that of two: 1 means the second process adds no work.
    out["cpu_efficiency_2_vs_1"] = cpu_ratio
    out["cpu_efficiency_2_vs_1_median"] = float(np.median(cpu_ratio))
    out["load_average_after"] = os.getloadavg()
    print(f"  2 processes / 1 process: {out['speedup_2_vs_1_median']:.2f}x wall, median of "
          f"{', '.join(f'{x:.2f}' for x in speedups)} (target >= 1.8x); CPU seconds 1 / 2 processes "
          f"{out['cpu_efficiency_2_vs_1_median']:.2f} (2 idle cores would give at most about "
          f"{2 * out['cpu_efficiency_2_vs_1_median']:.2f}x)", flush=True)
    return out


def jacobian_epochs(path: Path, n_images: int, workdir: Path, repeats: int = 1) -> dict:
    """Epoch seconds of streamed trainings with stored against recomputed Jacobians (item 6)."""
    import torch

    from mfbo.training import TrainConfig, open_images, split_train_val, train

    torch.set_num_threads(1)
    view = open_images(path).take(np.arange(n_images))
    pool, val = split_train_val(view, 0.2, seed=0)
    config = TrainConfig(epochs=1)
    modes = ("store", "recompute")
    stores = {mode: workdir / f"jacobian-epochs-{mode}" for mode in modes}

    def epoch(mode: str) -> float:
        data = {"mode": "stream", "shard_dir": str(stores[mode]), "workers": 1, "jacobians": mode}
        result = train(config, pool, val, data=data, progress=False)
        if result.extra["jacobians"] != mode:
            raise SystemExit(f"asked for shard_jacobians={mode!r}, the run used {result.extra['jacobians']!r}")
        return result.curve[0]["epoch_time"]

    for mode in modes:  # builds each store; not timed
        epoch(mode)
    seconds: dict = {mode: [] for mode in modes}
    for _ in range(repeats):
        for mode in modes:
            seconds[mode].append(epoch(mode))
    med = {mode: float(np.median(v)) for mode, v in seconds.items()}
    out = {"n_images": n_images, "n_train": len(pool), "n_val": len(val), "epoch_s": seconds,
           "recompute_over_store": med["recompute"] / med["store"],
           "store_bytes": {mode: _bytes_under(d) for mode, d in stores.items()}}
    print(f"1 epoch on {len(pool)} + {len(val)} images: stored Jacobians {med['store']:.2f} s, recomputed "
          f"{med['recompute']:.2f} s ({out['recompute_over_store']:.1f}x); shards {out['store_bytes']['store'] / 1e6:.0f} MB "
          f"against {out['store_bytes']['recompute'] / 1e6:.1f} MB "
          f"({out['store_bytes']['store'] / out['store_bytes']['recompute']:.0f}x)", flush=True)
    return out


def subset_featurisation(path: Path, n_images: int, workdir: Path, shard_size: int = 32, seed: int = 1) -> dict:
    """Seconds to featurise the nested fidelity subsets of the first ``n_images`` of ``path`` in the
    order a streamed run needs them, against the whole file at once (see the module docstring, 5)."""
    import torch
    from ase.io import Trajectory, read

    from mfbo.training import TrainConfig, nested_subset_indices, open_images, split_train_val
    from mfbo.training._featurize import gmp_params_of
    from mfbo.training._shards import build_shards
    from mfbo.training._source import needed_first_order

    sub = workdir / "subsets.traj"
    with Trajectory(str(sub), "w") as traj:
        for atoms in read(str(path), index=f":{n_images}"):
            traj.write(atoms)
    torch.set_num_threads(1)
    params = gmp_params_of(TrainConfig())
    images = open_images(sub)
    pool, val = split_train_val(images, 0.1, seed)
    order = needed_first_order(np.concatenate([val.indices, pool.indices[nested_subset_indices(len(pool), 1.0, seed)]]),
                               images.file_length)
    out: dict = {"n_images": n_images, "n_val": len(val), "n_pool": len(pool), "shard_size": shard_size,
                 "load_average_before": os.getloadavg()}
    for target in (workdir / "subset-whole", workdir / "subset-ordered"):
        if target.exists():
            shutil.rmtree(target)
    t0 = time.perf_counter()
    build_shards(images, params, workdir / "subset-whole", derivatives=True, require_forces=True, shard_size=shard_size)
    whole = time.perf_counter() - t0
    out["whole_file_s"] = whole
    print(f"whole file in file order: {n_images} images in {whole:.1f} s (the baseline)", flush=True)
    steps, total = [], 0.0
    for fraction in (0.1, 0.25, 0.5, 1.0):
        ids = pool.indices[nested_subset_indices(len(pool), fraction, seed)]
        t0 = time.perf_counter()
        store = build_shards(images, params, workdir / "subset-ordered", derivatives=True, require_forces=True,
                             shard_size=shard_size, order=order, needed=np.concatenate([val.indices, ids]))
        dt = time.perf_counter() - t0
        total += dt
        row = {"fraction": fraction, "n_train": len(ids), "images_on_disk": int(store.built.sum()), "seconds": dt,
               "cumulative_s": total, "cumulative_over_whole": total / whole}
        steps.append(row)
        print(f"fraction {fraction:<4}: {len(ids):>4} training + {len(val)} validation images needed, "
              f"{row['images_on_disk']:>4} on disk, {dt:5.1f} s (cumulative {total:.1f} s = "
              f"{total / whole:.2f}x the whole file)", flush=True)
    out["steps"] = steps
    out["load_average_after"] = os.getloadavg()
    return out


def _cpu_now() -> float:
    """User + system CPU seconds of the calling process (run in a worker)."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def worker_startup(path: Path, workdir: Path, shards: int = 6, shard_size: int = 32) -> dict:
    """What a spawned featurisation worker costs: wall and CPU seconds until it reports ready, then
    the CPU seconds of each of its first ``shards`` shards (the first one pays the lazy set-up)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from mfbo.training import TrainConfig
    from mfbo.training._featurize import gmp_params_of
    from mfbo.training._shards import _init_worker, _worker_ready, _worker_write

    target = workdir / "startup-shards"
    if target.exists():
        shutil.rmtree(target)
    target.mkdir()
    params = gmp_params_of(TrainConfig())
    t0 = time.perf_counter()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(str(path), params, True, True)) as pool:
        pool.submit(_worker_ready).result()
        ready_s = time.perf_counter() - t0
        ready_cpu = pool.submit(_cpu_now).result()
        per_shard = []
        for k in range(shards):
            c0 = pool.submit(_cpu_now).result()
            pool.submit(_worker_write, list(range(k * shard_size, (k + 1) * shard_size)),
                        str(target / f"shard-{k:05d}")).result()
            per_shard.append(pool.submit(_cpu_now).result() - c0)
    later = float(np.median(per_shard[1:]))
    out = {"ready_wall_s": ready_s, "ready_cpu_s": ready_cpu, "shard_cpu_s": per_shard, "shard_size": shard_size,
           "first_shard_extra_cpu_s": per_shard[0] - later, "load_average": os.getloadavg()}
    print(f"a spawned worker: ready after {ready_s:.2f} s wall, {ready_cpu:.2f} CPU s; shards of {shard_size} "
          f"images: {', '.join(f'{c:.2f}' for c in per_shard)} CPU s (first one {per_shard[0] - later:.2f} s above "
          f"the median of the rest)", flush=True)
    return out


def jacobian_read_vs_recompute(path: Path, store_dir: Path, batches: int = 8, batch: int = 16) -> dict:
    """Seconds per image: read a batch's Jacobians from shards against recomputing them."""
    import torch

    from mfbo.fingerprints import featurize_many
    from mfbo.training import TrainConfig, open_images
    from mfbo.training._featurize import gmp_params_of
    from mfbo.training._shards import ShardSet

    torch.set_num_threads(1)
    store = ShardSet(store_dir)
    images = open_images(path)
    params = gmp_params_of(TrainConfig())
    rng = np.random.default_rng(1)
    ids = [rng.choice(np.flatnonzero(store.built), size=batch, replace=False) for _ in range(batches)]
    t0 = time.perf_counter()
    for group in ids:
        store.features_of(group)
        for g in group:
            store.jacobian_of(int(g))
    read_s = (time.perf_counter() - t0) / (batches * batch)
    atoms = [[images.read_file_image(int(g)) for g in group] for group in ids]
    t0 = time.perf_counter()
    for group in atoms:
        featurize_many(group, params, derivatives=True)
    recompute_s = (time.perf_counter() - t0) / (batches * batch)
    print(f"Jacobians per image: read from shards {read_s * 1e3:.2f} ms, recomputed {recompute_s * 1e3:.1f} ms "
          f"({recompute_s / read_s:.0f}x the read)", flush=True)
    return {"read_s_per_image": read_s, "recompute_s_per_image": recompute_s, "recompute_over_read": recompute_s / read_s}


def _finish(report: dict, out, tmp) -> int:
    """Write ``report`` to ``out`` (when given), remove the temporary work directory, return 0."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1))
        print(f"wrote {out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


def _bytes_under(directory: Path) -> int:
    """Bytes of the files under ``directory`` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in Path(directory).rglob("*") if f.is_file())


def _print_ratios(runs: list[dict], memory: dict | None) -> None:
    print("\nratios against the smallest streamed run (targets: RSS 5k/1k <= 1.5x, per-image epoch time within 25 %)")
    print("(per image: epoch seconds over the training + validation images an epoch processes)")
    print(f"{'n_train':>8} {'RSS MB':>8} {'RSS ratio':>9} {'ms/img':>7} {'wall ratio':>10} {'CPU ratio':>9}")
    for row in runs:
        print(f"{row['n_train']:>8} {row['peak_rss_bytes'] / 1e6:>8.0f} {row['rss_ratio']:>9.2f} "
              f"{row['epoch_s_per_processed_image'] * 1e3:>7.2f} {row['epoch_per_processed_image_ratio']:>10.2f} "
              f"{row['epoch_cpu_per_processed_image_ratio']:>9.2f}")
    if memory is not None:
        print(f"in-memory path at n={memory['n_train']}: peak RSS {memory['peak_rss_bytes'] / 1e6:.0f} MB "
              f"(streamed / in-memory {memory['stream_over_memory_rss']:.2f}x), epoch CPU {memory['epoch_cpu_s']:.1f} s "
              f"(streamed / in-memory {memory['stream_over_memory_epoch_cpu']:.2f}x)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000], help="training-subset sizes")
    ap.add_argument("--feat-images", type=int, default=384, help="images for the 1 vs 2 process featurisation")
    ap.add_argument("--rattle", type=float, default=0.02, help="Gaussian displacement per component (Å)")
    ap.add_argument("--workdir", default=None, help="data and shards (default: a temporary directory, removed)")
    ap.add_argument("--out", default=None, help="write every number to this JSON file")
    ap.add_argument("--feat-repeats", type=int, default=1, help="repeats of the 1 vs 2 process featurisation")
    ap.add_argument("--feat-shard-size", type=int, default=32, help="images per shard in the 1 vs 2 process run")
    ap.add_argument("--only-featurisation", action="store_true", help="measure 1 vs 2 processes only")
    ap.add_argument("--jacobians", choices=("store", "recompute"), default="store",
                    help="streamed runs store the force Jacobians in the shards, or store fingerprints only and "
                         "recompute each batch's Jacobians (shard_jacobians)")
    ap.add_argument("--featurise-in-runs", action="store_true",
                    help="skip the whole-file featurisation run: each size's run featurises the images it adds "
                         "(its featurisation seconds are recorded), which saves one epoch at the largest size")
    ap.add_argument("--no-memory-reference", action="store_true",
                    help="skip the in-memory run at the smallest size (it holds every Jacobian of the training and "
                         "validation images in memory)")
    ap.add_argument("--only-jacobian-epochs", action="store_true",
                    help="epoch time with stored against recomputed Jacobians only (first --sizes[-1] images)")
    ap.add_argument("--only-subsets", action="store_true",
                    help="measure the featurisation of nested fidelity subsets only (first --sizes[-1] images)")
    args = ap.parse_args(argv)
    import torch

    sizes = sorted(args.sizes)
    val_fraction = 0.1
    n_file = int(np.ceil(sizes[-1] / (1 - val_fraction))) + 1
    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-scale-")
        workdir = Path(tmp.name)
    else:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "load_average_at_start": os.getloadavg(),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                    "platform": platform.platform()},
        "sizes": sizes, "file_images": n_file, "rattle_A": args.rattle, "val_fraction": val_fraction,
        "jacobians": args.jacobians,
    }
    data = workdir / "oc20_like.traj"
    if not data.is_file():
        t0 = time.perf_counter()
        make_dataset(data, n_file, args.rattle)
        print(f"wrote {n_file} rattled OC20 images to {data} in {time.perf_counter() - t0:.0f} s", flush=True)

    if args.only_jacobian_epochs:
        report["jacobian_epochs"] = jacobian_epochs(data, sizes[-1], workdir, args.feat_repeats)
        return _finish(report, args.out, tmp)
    if args.only_subsets:
        report["subset_featurisation"] = subset_featurisation(data, sizes[-1], workdir, args.feat_shard_size)
        return _finish(report, args.out, tmp)
    report["featurisation"] = featurisation_speed(data, args.feat_images, workdir, args.feat_repeats,
                                                  args.feat_shard_size)
    report["worker_startup"] = worker_startup(workdir / "feat.traj", workdir, shard_size=args.feat_shard_size)
    if args.only_featurisation:
        return _finish(report, args.out, tmp)

    shard_dir = workdir / "shards"
    run = {"train": str(data), "val_fraction": val_fraction, "data_mode": "stream", "shard_dir": str(shard_dir),
           "featurize_workers": 2, "num_threads": 1, "shard_jacobians": args.jacobians}
    if not args.featurise_in_runs:
        t0 = time.perf_counter()
        # A streamed run featurises the images it needs: the largest size's run covers every size's.
        cold = run_train(workdir, run, "featurise", sizes[-1] / (n_file - round(val_fraction * n_file)))
        report["featurise_whole_file"] = {"seconds_incl_training": time.perf_counter() - t0,
                                          "peak_rss_bytes": cold["peak_rss_bytes"],
                                          "featurize_s": cold["record"]["timings"]["featurize"]}
        report["featurise_whole_file"]["store_bytes"] = _bytes_under(shard_dir)
        print(f"featurised {n_file} images into shards (2 processes) in {cold['record']['timings']['featurize']:.0f} "
              f"s; peak RSS of that run {cold['peak_rss_bytes'] / 1e6:.0f} MB; shards "
              f"{report['featurise_whole_file']['store_bytes'] / 1e9:.2f} GB on disk", flush=True)
    store_dirs = [p for p in shard_dir.glob("*/*-jac*") if p.is_dir()]
    if store_dirs:
        report["jacobian"] = jacobian_read_vs_recompute(data, store_dirs[0])

    n_pool = n_file - round(val_fraction * n_file)
    runs = []
    for n in sizes:
        res = run_train(workdir, run, f"stream-{n}", n / n_pool)
        rec = res["record"]
        epoch = rec["curve"][0]
        row = {"n_train": rec["n_train"], "n_val": rec["n_val"], "peak_rss_bytes": res["peak_rss_bytes"],
               "epoch_s": epoch["epoch_time"], "epoch_cpu_s": epoch["epoch_cpu_time"],
               "epoch_s_per_image": epoch["epoch_time"] / rec["n_train"],
               "epoch_cpu_s_per_image": epoch["epoch_cpu_time"] / rec["n_train"],
               # An epoch trains on n_train images and then predicts the n_val validation images.
               "epoch_s_per_processed_image": epoch["epoch_time"] / (rec["n_train"] + rec["n_val"]),
               "epoch_cpu_s_per_processed_image": epoch["epoch_cpu_time"] / (rec["n_train"] + rec["n_val"]),
               "load_average": os.getloadavg(),
               "setup_s": rec["timings"]["setup"], "featurize_s": rec["timings"].get("featurize"),
               "wall_s": res["wall_s"], "store_bytes_after": _bytes_under(shard_dir)}
        runs.append(row)
        print(f"stream n={row['n_train']}: peak RSS {row['peak_rss_bytes'] / 1e6:.0f} MB, epoch {row['epoch_s']:.1f} s "
              f"({row['epoch_s_per_image'] * 1e3:.2f} ms/img wall, {row['epoch_cpu_s_per_image'] * 1e3:.2f} ms/img CPU); "
              f"featurised {row['featurize_s'] or 0:.0f} s; shards {row['store_bytes_after'] / 1e9:.2f} GB", flush=True)
    base = runs[0]
    for row in runs:
        row["rss_ratio"] = row["peak_rss_bytes"] / base["peak_rss_bytes"]
        row["epoch_per_image_ratio"] = row["epoch_s_per_image"] / base["epoch_s_per_image"]
        row["epoch_cpu_per_image_ratio"] = row["epoch_cpu_s_per_image"] / base["epoch_cpu_s_per_image"]
        row["epoch_per_processed_image_ratio"] = (
            row["epoch_s_per_processed_image"] / base["epoch_s_per_processed_image"]
        )
        row["epoch_cpu_per_processed_image_ratio"] = (
            row["epoch_cpu_s_per_processed_image"] / base["epoch_cpu_s_per_processed_image"]
        )
    report["stream"] = runs

    if args.no_memory_reference:
        _print_ratios(runs, None)
        return _finish(report, args.out, tmp)
    mem = run_train(workdir, {**run, "data_mode": "memory"}, f"memory-{sizes[0]}", sizes[0] / n_pool)
    epoch = mem["record"]["curve"][0]
    report["memory_reference"] = {
        "n_train": mem["record"]["n_train"], "peak_rss_bytes": mem["peak_rss_bytes"], "epoch_s": epoch["epoch_time"],
        "epoch_cpu_s": epoch["epoch_cpu_time"], "setup_s": mem["record"]["timings"]["setup"],
        "stream_over_memory_rss": base["peak_rss_bytes"] / mem["peak_rss_bytes"],
        "stream_over_memory_epoch_cpu": base["epoch_cpu_s"] / epoch["epoch_cpu_time"],
    }

    _print_ratios(runs, report["memory_reference"])
    return _finish(report, args.out, tmp)


if __name__ == "__main__":
    raise SystemExit(main())
