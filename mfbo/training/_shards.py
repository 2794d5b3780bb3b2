"""Fingerprints, Jacobians and labels of a dataset file, on disk in shards.

:func:`build_shards` featurises a file's images in shards of ``shard_size`` consecutive images, in
the calling process and, when asked, in spawned worker processes beside it (each worker opens the
file itself; a task is a shard's first and last image), and writes each shard as a directory of
``.npy`` arrays:

* per image: ``atom_offsets`` (n+1), ``pair_offsets`` (n+1, with a Jacobian), ``energies`` (eV),
  ``cells`` (n, 3, 3; Å), ``pbc`` (n, 3);
* per atom: ``numbers``, ``features`` (A, F), ``forces`` (A, 3; eV/Å, FixAtoms not applied; absent
  when the file has none), ``free`` (atoms not fixed by FixAtoms), ``positions`` (A, 3; Å);
* per Jacobian pair (image-local atom indices): ``pair_i``, ``pair_j`` (int32) and ``dfeatures``
  (P, F, 3; feature units per Å).

A shard is written under a temporary name and renamed when complete, so a killed featurisation
leaves complete shards and nothing half-written; the next call computes only the missing ones. The
store lives in ``ROOT/<fingerprint parameters key>/<file key>-jac`` (``-fp`` without Jacobians),
where the file key covers the file's path, size and modification time.

A store may lay the file out in another ``order`` (a permutation of its images, kept as
``order.npy``; the directory name then carries the order's digest) and hold only the shards that
some images ``needed`` fall in. The trainer orders a pool file as the images a run needs first:
the validation images, then the training pool in its nested-subset order, so a run on a fraction
of the data featurises that fraction (and the validation set) and a larger fraction adds only the
shards beyond it.

:class:`ShardSet` opens a finished store: labels (a few tens of bytes per atom) are held in memory;
features and Jacobians stay on disk and are read per batch with ``pread`` into fresh buffers, so the
process's resident memory does not grow with the dataset (memory maps would count every page an
epoch touches as resident).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mfbo._orphan import exit_when_orphaned
from mfbo.errors import ConfigError, DataError, TrainingError
from mfbo.training._data import free_atom_mask, image_energy, image_forces
from mfbo.training._images import ImageFile, source_key

__all__ = ["ShardSet", "build_shards", "shard_directory", "bound_shard_root", "DEFAULT_SHARD_SIZE"]

DEFAULT_SHARD_SIZE = 64
_FORMAT_VERSION = 1


def order_key(order) -> str:
    """Short digest of an image order (the part of a store's directory name that names it)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(order, dtype=np.int64).tobytes()).hexdigest()[:12]


def shard_directory(root, params, images: ImageFile, derivatives: bool, order=None) -> Path:
    """Where the shards of ``images``' file for ``params`` (laid out in ``order``) live under ``root``."""
    kind = "jac" if derivatives else "fp"
    name = f"{source_key(images)}-{kind}" if order is None else f"{source_key(images)}-{kind}-o{order_key(order)}"
    return Path(root) / params.cache_key()[:32] / name


def _featurize(images, params, derivatives):
    from mfbo.fingerprints import featurize_many

    return featurize_many(images, params, derivatives=derivatives)


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _write_shard(reader: ImageFile, ids, params, derivatives: bool, require_forces: bool, target: Path) -> int:
    """Featurise the file images ``ids`` (in that order) and write them as shard directory ``target``.

    Returns the number of images written (0 when another process finished the shard first).
    """
    ids = [int(i) for i in ids]
    images = [reader.read_file_image(i) for i in ids]
    where = f"dataset {reader.path}"
    energies = []
    forces = []
    for i, atoms in zip(ids, images):
        if len(atoms) == 0:
            raise DataError(f"{where}: image {i} has no atoms")
        energy = image_energy(atoms)
        if energy is None:
            raise DataError(
                f"{where}: image {i} has no energy; every training image needs a DFT total energy "
                "(attach a SinglePointCalculator)"
            )
        energies.append(energy)
        f = image_forces(atoms)
        if f is None and require_forces:
            raise DataError(
                f"{where}: image {i} has no forces; train with get_forces=False or supply forces on every image"
            )
        forces.append(f)
    fps = _featurize(images, params, derivatives)
    natoms = np.array([len(a) for a in images], dtype=np.int64)
    arrays = {
        "atom_offsets": np.concatenate([[0], np.cumsum(natoms)]).astype(np.int64),
        "energies": np.asarray(energies, dtype=np.float64),
        "cells": np.stack([np.asarray(a.cell.array, dtype=np.float64) for a in images]),
        "pbc": np.stack([np.asarray(a.pbc, dtype=bool) for a in images]),
        "numbers": np.concatenate([a.numbers for a in images]).astype(np.int64),
        "positions": np.concatenate([a.get_positions() for a in images]).astype(np.float64),
        "free": np.concatenate([free_atom_mask(a) for a in images]),
        "features": np.concatenate([np.asarray(fp.features, dtype=np.float64) for fp in fps]),
    }
    if all(f is not None for f in forces):
        arrays["forces"] = np.concatenate(forces).astype(np.float64)
    if derivatives:
        npairs = np.array([len(fp.pair_i) for fp in fps], dtype=np.int64)
        arrays["pair_offsets"] = np.concatenate([[0], np.cumsum(npairs)]).astype(np.int64)
        arrays["pair_i"] = np.concatenate([fp.pair_i for fp in fps]).astype(np.int32)
        arrays["pair_j"] = np.concatenate([fp.pair_j for fp in fps]).astype(np.int32)
        arrays["dfeatures"] = np.concatenate([np.asarray(fp.dfeatures, dtype=np.float64) for fp in fps])
    del fps
    tmp = target.parent / f".tmp-{target.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name, value in arrays.items():
            with open(tmp / f"{name}.npy", "wb") as fh:
                np.save(fh, value)
                fh.flush()
                os.fsync(fh.fileno())
        try:
            os.rename(tmp, target)
        except OSError:
            if (target / "features.npy").is_file():  # another process wrote it first
                shutil.rmtree(tmp, ignore_errors=True)
                return 0
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(ids)


# Per worker process: what every task of the featurisation shares, set once by the initializer,
# and the dataset reader, opened by the worker itself on its first task and kept for the rest.
_WORKER: dict = {}


def _init_worker(path: str, params, derivatives: bool, require_forces: bool) -> None:
    import torch

    import mfbo.fingerprints  # noqa: F401  (imported before the worker reports ready)

    # an orphaned worker (its trial killed by a launcher or the user) would wait for shards for ever
    exit_when_orphaned()
    torch.set_num_threads(1)
    _WORKER.update(path=path, params=params, derivatives=derivatives, require_forces=require_forces, reader=None)


def _worker_ready() -> int:
    """Answered once the worker process has started and imported torch (its pid)."""
    return os.getpid()


def _worker_write(ids, target: str) -> int:
    """A worker's task: the shard of file images ``ids`` of the file named at start-up, read with its own reader."""
    if _WORKER["reader"] is None:
        _WORKER["reader"] = ImageFile(Path(_WORKER["path"]))
    return _write_shard(_WORKER["reader"], ids, _WORKER["params"], _WORKER["derivatives"],
                        _WORKER["require_forces"], Path(target))


# The stores this process marked as in use (its current run's); see mark_in_use.
_MARKED: list[Path] = []


def mark_in_use(directories) -> None:
    """Mark the stores ``directories`` as used now by this process (``.in-use-<pid>``, and their
    ``last-used`` time), and unmark the ones it marked before: a store a live process is reading
    is never removed by :func:`bound_shard_root`, and a process protects only its current run's."""
    directories = [Path(d) for d in directories]
    for old in _MARKED:
        if old not in directories:
            (old / f".in-use-{os.getpid()}").unlink(missing_ok=True)
    _MARKED[:] = directories
    for d in directories:
        (d / f".in-use-{os.getpid()}").touch()
        (d / "last-used").touch()


def _pid_in_name(name: str) -> int | None:
    """The process id a marker or temporary name ends with (``...-<pid>``), or None."""
    try:
        return int(name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return None


def _in_use(directory: Path) -> bool:
    for marker in directory.glob(".in-use-*"):
        pid = _pid_in_name(marker.name)
        if pid is None:
            continue
        if pid == os.getpid() and directory in _MARKED:
            return True
        if pid != os.getpid() and _pid_alive(pid):
            return True
    return False


def bound_shard_root(root, max_gb=None) -> dict:
    """Keep the shard stores under ``root`` within a size limit, removing least recently used ones.

    The limit is the fingerprint cache's (``max_gb`` GB; default ``$MFBO_CACHE_MAX_GB``, else
    min(20 GB, half of the stores' size plus the free disk space)). Over it, whole stores of other
    parameter sets or orders are removed, least recently used first (``last-used``), until 90 % of
    the limit is left; a store marked in use by a live process (:func:`mark_in_use`) never is. A
    removed store is featurised again if a later run needs it.

    Returns:
        ``{"bytes": total before, "limit": bytes, "removed": [directories], "freed": bytes}``.
    """
    from mfbo.fingerprints._store import resolve_limit, tree_bytes

    root = Path(root)
    stores = [p.parent for p in root.glob("*/*/manifest.json")]
    sizes = {d: tree_bytes(d) for d in stores}
    total = sum(sizes.values())
    limit = resolve_limit(max_gb, root, total)[0]
    out = {"bytes": total, "limit": limit, "removed": [], "freed": 0}
    if total <= limit:
        return out

    def last_used(d: Path) -> float:
        for name in ("last-used", "manifest.json"):
            try:
                return (d / name).stat().st_mtime
            except OSError:
                continue
        return 0.0

    for d in sorted(stores, key=last_used):
        if total <= 0.9 * limit:
            break
        if _in_use(d):
            continue
        shutil.rmtree(d, ignore_errors=True)
        total -= sizes[d]
        out["removed"].append(str(d))
        out["freed"] += sizes[d]
        try:
            d.parent.rmdir()  # the parameter set's directory, once empty
        except OSError:
            pass
    if out["removed"]:
        print(f"fingerprints: removed {len(out['removed'])} least recently used shard store(s) "
              f"({out['freed'] / 1e9:.1f} GB) to keep {root} under {limit / 1e9:.1f} GB", file=sys.stderr, flush=True)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clean_stale(directory: Path) -> None:
    """Remove temporary shard directories of processes that no longer run (a killed featurisation)."""
    for tmp in directory.glob(".tmp-shard-*"):
        pid = _pid_in_name(tmp.name)
        if pid is not None and not _pid_alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)


class _Progress:
    """A tqdm bar on a terminal, otherwise a plain line every ``every`` seconds (readable in batch logs)."""

    def __init__(self, total: int, done: int, enabled: bool, every: float = 10.0):
        self.total, self.done, self.enabled, self.every = total, done, enabled, every
        self.start_done = done
        self.t0 = self.last = time.monotonic()
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc="fingerprints", unit="img", leave=False)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if self.enabled and (now - self.last >= self.every or self.done >= self.total):
            self.last = now
            rate = (self.done - self.start_done) / max(now - self.t0, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("nan")
            print(
                f"fingerprints: {self.done}/{self.total} images, {rate:.1f} img/s, about {left:.0f} s left",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def build_shards(
    images: ImageFile,
    params,
    root,
    *,
    derivatives: bool,
    require_forces: bool = False,
    workers: int = 1,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = False,
    order=None,
    needed=None,
) -> ShardSet:
    """Featurise the images of ``images``' file into shards under ``root`` (resuming), and open them.

    Args:
        images: the file (any view of it: the file is sharded, views index into it).
        params: GMPParams.
        root: shard store root directory.
        derivatives: also store the Jacobians (needed for forces).
        require_forces: every image must carry forces.
        workers: featurisation processes, this one included: 1 featurises here with torch's thread
            setting; N > 1 featurises here with one torch thread and in N - 1 spawned processes
            (one torch thread each), all taking shards from one queue.
        shard_size: images per shard (a store keeps the shard size it was started with).
        progress: a bar on a terminal, else a plain line on stderr every 10 s.
        order: ``(n,)`` permutation of the file's image indices: shard k holds images
            ``order[k * shard_size:(k + 1) * shard_size]`` (default: file order).
        needed: file image indices that must be featurised; only the shards holding them are
            computed (default: every image).

    Raises:
        DataError: an image lacks an energy (or forces), or cannot be read; names file and image.
        ConfigError: ``workers`` or ``shard_size`` below 1.
    """
    if int(workers) < 1:
        raise ConfigError(f"workers={workers!r} must be at least 1")
    if int(shard_size) < 1:
        raise ConfigError(f"shard_size={shard_size!r} must be at least 1")
    n = images.file_length
    if order is not None:
        order = np.asarray(order, dtype=np.int64)
        if order.shape != (n,) or not np.array_equal(np.sort(order), np.arange(n)):
            raise ConfigError(f"order must be a permutation of the {n} images of {images.path}")
        if np.array_equal(order, np.arange(n)):
            order = None  # file order: the plain store
    directory = shard_directory(root, params, images, derivatives, order)
    directory.mkdir(parents=True, exist_ok=True)
    manifest_path = directory / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        shard_size = int(manifest["shard_size"])
    else:
        manifest = {
            "version": _FORMAT_VERSION,
            "source": str(images.path.resolve()),
            "n_images": n,
            "shard_size": int(shard_size),
            "derivatives": bool(derivatives),
            "n_features": int(params.n_features),
            "params_key": params.cache_key(),
            "fp_scheme": params.fp_scheme,
            "fp_params": params.to_fp_params(),
            "ordered": order is not None,
        }
        if order is not None:
            tmp_order = directory / f".order-{os.getpid()}.npy"
            np.save(tmp_order, order)
            os.replace(tmp_order, directory / "order.npy")
        tmp = directory / f".manifest-{os.getpid()}"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, manifest_path)
    _clean_stale(directory)
    layout = order if order is not None else np.arange(n, dtype=np.int64)
    bounds = [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    if needed is None:
        wanted = range(len(bounds))
    else:
        position = np.empty(n, dtype=np.int64)
        position[layout] = np.arange(n)
        needed = np.asarray(needed, dtype=np.int64).reshape(-1)
        if needed.size and (needed.min() < 0 or needed.max() >= n):
            raise ConfigError(f"needed images lie outside the {n} images of {images.path}")
        wanted = sorted(set((position[needed] // shard_size).tolist()))
    todo = [k for k in wanted if not (directory / _shard_name(k) / "features.npy").is_file()]
    total = sum(bounds[k][1] - bounds[k][0] for k in wanted)
    done_images = total - sum(bounds[k][1] - bounds[k][0] for k in todo)
    if progress:
        print(
            f"fingerprints: {len(wanted) - len(todo)} of "
            + (f"the {len(wanted)} needed shards (of {len(bounds)})" if len(wanted) < len(bounds) else f"{len(bounds)} shards")
            + f" of {images.path.name} already on disk"
            + (f"; computing {len(todo)} with {min(workers, len(todo))} process(es)" if todo else ""),
            file=sys.stderr,
            flush=True,
        )
    if todo:
        bar = _Progress(total, done_images, progress)
        try:
            tasks = [(layout[bounds[k][0]:bounds[k][1]].tolist(), directory / _shard_name(k)) for k in todo]
            import multiprocessing

            if workers == 1 or len(todo) == 1 or multiprocessing.current_process().daemon:
                # (A daemonic process, such as a Dask worker's, may not start children.)
                for ids, target in tasks:
                    _write_shard(images, ids, params, derivatives, require_forces, target)
                    bar.update(len(ids))
            else:
                _run_shared(images, params, derivatives, require_forces, tasks, min(workers, len(todo)), bar)
        finally:
            bar.close()
    return ShardSet(directory, needed=list(wanted))


def _run_shared(images: ImageFile, params, derivatives: bool, require_forces: bool, tasks, workers: int,
                bar: _Progress) -> None:
    """Write the shards ``tasks`` ((file image ids, target) each) in this process and ``workers - 1``
    spawned ones, all taking the next shard from one queue when they finish their last.

    This process starts featurising at once, with one torch thread (restored afterwards); each
    spawned worker takes shards only once it has started (importing torch: 1-2 s of wall time on a
    2-core machine), so no shard waits on a starting process, and a file featurised before the
    workers are up never uses them.
    One thread per worker hands it a shard at a time and waits for it.
    """
    import multiprocessing
    import threading
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    import torch

    queue = deque(tasks)
    lock = threading.Condition()
    state = {"stop": False, "in_flight": 0, "ready": 0}
    errors: list[BaseException] = []  # of shards
    start_errors: list[BaseException] = []  # of workers that could not start

    def take():
        with lock:
            if state["stop"] or not queue:
                return None
            state["in_flight"] += 1
            return queue.popleft()

    def finish(task, exc=None):
        with lock:
            state["in_flight"] -= 1
            if exc is None:
                bar.update(len(task[0]))
            else:
                errors.append(exc)
                state["stop"] = True
            lock.notify_all()

    def feed(pool, ready) -> None:
        try:
            ready.result()
        except BaseException as exc:  # the worker could not start
            with lock:
                start_errors.append(exc)
                state["stop"] = True
                lock.notify_all()
            return
        with lock:
            state["ready"] += 1
        while (task := take()) is not None:
            try:
                pool.submit(_worker_write, task[0], str(task[1])).result()
            except BaseException as exc:
                finish(task, exc)
                return
            finish(task)

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers - 1, mp_context=ctx, initializer=_init_worker,
                               initargs=(str(images.path), params, bool(derivatives), bool(require_forces)))
    waited = True
    try:
        # Started from this thread, so a script that cannot spawn fails here before featurising.
        readies = [pool.submit(_worker_ready) for _ in range(workers - 1)]
        feeders = [threading.Thread(target=feed, args=(pool, r), daemon=True) for r in readies]
        for t in feeders:
            t.start()
        try:
            while (task := take()) is not None:
                try:
                    _write_shard(images, task[0], params, derivatives, require_forces, task[1])
                except BaseException as exc:
                    finish(task, exc)
                    raise
                finish(task)
        finally:
            with lock:
                state["stop"] = True
                # Shards handed to workers are finished (a shard is never left half-done by us);
                # workers still starting are not waited for.
                while state["in_flight"] > 0:
                    lock.wait()
                waited = state["ready"] == len(feeders)
    finally:
        pool.shutdown(wait=waited, cancel_futures=True)
        torch.set_num_threads(threads_before)
    if start_errors and not errors and queue:
        errors = start_errors  # shards are left: the worker is needed (once all are done, it is not)
    if errors:
        exc = errors[0]
        if isinstance(exc, BrokenProcessPool):
            raise TrainingError(
                "a featurisation worker process died or could not start; when train() is called from a "
                "script, put the call under `if __name__ == \"__main__\":` (worker processes re-import the "
                "script), or featurise in this process with featurize_workers = 1"
            ) from None
        raise exc


def _npy_layout(path: Path) -> tuple[int, np.dtype, tuple]:
    """(data offset in bytes, dtype, shape) of a C-ordered ``.npy`` file."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        if fortran:
            raise DataError(f"shard array {path} is Fortran-ordered; delete the shard store to rebuild it")
        return fh.tell(), dtype, shape


@dataclass
class _Shard:
    path: Path
    start: int  # position of its first image in the store's order
    atom_offsets: np.ndarray
    pair_offsets: np.ndarray | None
    layouts: dict


class ShardSet:
    """A shard store, opened for reading (every shard on disk, or the ones ``needed``).

    Args:
        directory: the store.
        needed: indices of the shards that must be on disk (default: all; a missing one raises
            :class:`DataError`). Shards on disk beyond them are opened too; images in shards that are
            not on disk have no labels here and raise :class:`DataError` when read.

    Attributes:
        directory: the store.
        n_images: images of the file.
        n_features: fingerprint length F.
        has_jacobian: Jacobians are stored.
        built: (n,) bool, images whose shard is on disk.
        energies: (n,) eV (NaN where not built); natoms: (n,) atoms per image (0 where not built);
            atom_start: (n+1,) global atom offsets in file order.
        numbers: (A,) int64; free: (A,) bool; forces: (A, 3) eV/Å or None (labels of the built
            images' atoms, in file order).
    """

    def __init__(self, directory, needed=None):
        self.directory = Path(directory)
        try:
            manifest = json.loads((self.directory / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"shard store {self.directory} has no readable manifest.json ({exc}); delete it") from None
        self.manifest = manifest
        n = self.n_images = int(manifest["n_images"])
        self.n_features = int(manifest["n_features"])
        self.has_jacobian = bool(manifest["derivatives"])
        size = self.shard_size = int(manifest["shard_size"])
        if manifest.get("ordered"):
            try:
                layout = np.load(self.directory / "order.npy")
            except (OSError, ValueError) as exc:
                raise DataError(f"shard store {self.directory} has no readable order.npy ({exc}); delete it") from None
        else:
            layout = np.arange(n, dtype=np.int64)
        n_shards = -(-n // size)
        required = range(n_shards) if needed is None else needed
        for k in required:
            if not (self.directory / _shard_name(k) / "features.npy").is_file():
                raise DataError(f"shard store {self.directory} lacks {_shard_name(k)}; featurise again to complete it")
        self.shards: dict[int, _Shard] = {}
        self.position = np.full(n, -1, dtype=np.int64)
        self.natoms = np.zeros(n, dtype=np.int64)
        self.energies = np.full(n, np.nan)
        parts = []
        for k in range(n_shards):
            path = self.directory / _shard_name(k)
            if not (path / "features.npy").is_file():
                continue
            start = k * size

            def load(name, path=path):
                return np.load(path / f"{name}.npy")

            layouts = {name: _npy_layout(path / f"{name}.npy") for name in ("features", "positions", "pair_i", "pair_j",
                                                                            "dfeatures")
                       if (path / f"{name}.npy").is_file()}
            shard = _Shard(path, start, load("atom_offsets"), load("pair_offsets") if self.has_jacobian else None,
                           layouts)
            self.shards[k] = shard
            ids = layout[start:min(start + size, n)]
            self.position[ids] = np.arange(start, start + len(ids))
            self.natoms[ids] = np.diff(shard.atom_offsets)
            self.energies[ids] = load("energies")
            forces = load("forces") if (path / "forces.npy").is_file() else None
            parts.append((ids, load("numbers"), load("free"), forces))
        self.built = self.position >= 0
        self.atom_start = np.concatenate([[0], np.cumsum(self.natoms)]).astype(np.int64)
        # Labels in file order: each shard's atoms go to their images' places.
        total = int(self.atom_start[-1])
        self.numbers = np.zeros(total, dtype=np.int64)
        self.free = np.zeros(total, dtype=bool)
        have_forces = bool(parts) and all(f is not None for *_, f in parts)
        self.forces = np.zeros((total, 3)) if have_forces else None
        for ids, numbers, free, forces in parts:
            dest = self.atom_ids(ids)
            self.numbers[dest] = numbers
            self.free[dest] = free
            if self.forces is not None:
                self.forces[dest] = forces

    def _locate(self, g: int) -> tuple[_Shard, int]:
        """The shard holding file image ``g`` and its index within that shard."""
        p = int(self.position[g])
        if p < 0:
            raise DataError(f"image {g} is not featurised in shard store {self.directory}; build_shards(..., "
                            "needed=...) must include it")
        shard = self.shards[p // self.shard_size]
        return shard, p - shard.start

    def _require_built(self, ids) -> np.ndarray:
        """``ids`` as int64; raises :class:`DataError` naming the first image not featurised here."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and not self.built[ids].all():
            self._locate(int(ids[~self.built[ids]][0]))
        return ids

    def _rows(self, shard: _Shard, name: str, r0: int, r1: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows [r0, r1) of one of a shard's arrays, read into ``out`` (or a new array)."""
        offset, dtype, shape = shard.layouts[name]
        if out is None:
            out = np.empty((r1 - r0, *shape[1:]), dtype=dtype)
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        fd = os.open(shard.path / f"{name}.npy", os.O_RDONLY)
        try:
            got = os.preadv(fd, [memoryview(out).cast("B")], offset + r0 * row)
        finally:
            os.close(fd)
        if got != out.nbytes:
            raise DataError(f"shard array {shard.path / name}.npy is truncated; delete {self.directory} to rebuild it")
        return out

    def recomputed_jacobians_of(self, ids, params, device="cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                           np.ndarray]:
        """Like :meth:`jacobians_of`, computed from the stored structures with ``params`` (GMPParams) on
        ``device`` instead of read: a store without Jacobians takes about 1/150 of the disk at 40 features."""
        from mfbo.fingerprints import featurize_many

        fps = featurize_many(self.structures_of(ids), params, derivatives=True, device=device)
        offsets, atom_shift = self._pair_layout(ids, [len(fp.pair_i) for fp in fps])
        if not len(fps):
            return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, self.n_features, 3)), offsets)
        pair_i = np.concatenate([fp.pair_i for fp in fps]).astype(np.int64) + atom_shift
        pair_j = np.concatenate([fp.pair_j for fp in fps]).astype(np.int64) + atom_shift
        dfeatures = np.concatenate([np.asarray(fp.dfeatures, dtype=np.float64) for fp in fps])
        return pair_i, pair_j, dfeatures, offsets

    def jacobians_of(self, ids) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The Jacobians of the images ``ids`` as one block, read straight into place.

        Returns:
            ``pair_i``, ``pair_j`` (int64, P; atom indices into the concatenated atoms of ``ids``),
            ``dfeatures`` (P, F, 3) and ``pair_offsets`` (n_ids + 1; image k owns pairs
            ``pair_offsets[k]:pair_offsets[k + 1]``).
        """
        if not self.has_jacobian:
            raise DataError(f"shard store {self.directory} holds no Jacobians")
        spans = []
        for g in ids:
            shard, local = self._locate(int(g))
            spans.append((shard, int(shard.pair_offsets[local]), int(shard.pair_offsets[local + 1])))
        offsets, atom_shift = self._pair_layout(ids, [b - a for _, a, b in spans])
        total = int(offsets[-1])
        pair_i = np.empty(total, dtype=np.int32)
        pair_j = np.empty(total, dtype=np.int32)
        dfeatures = np.empty((total, self.n_features, 3), dtype=np.float64)
        for k, (shard, a, b) in enumerate(spans):
            p0, p1 = offsets[k], offsets[k + 1]
            self._rows(shard, "pair_i", a, b, pair_i[p0:p1])
            self._rows(shard, "pair_j", a, b, pair_j[p0:p1])
            self._rows(shard, "dfeatures", a, b, dfeatures[p0:p1])
        return pair_i + atom_shift, pair_j + atom_shift, dfeatures, offsets

    def _pair_layout(self, ids, counts) -> tuple[np.ndarray, np.ndarray]:
        """For a block of the pairs of images ``ids`` (``counts[k]`` pairs of image k, in order): the
        pair offsets (n_ids + 1) and, per pair, the index of its image's first atom among the
        concatenated atoms of ``ids`` (what turns image-local atom indices into block ones)."""
        counts = np.asarray(counts, dtype=np.int64)
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        first_atom = np.concatenate([[0], np.cumsum(self.natoms[np.asarray(ids, dtype=np.int64)])[:-1]])
        return offsets, np.repeat(first_atom, counts)

    def structures_of(self, ids) -> list:
        """The stored structures of the images ``ids`` as ASE ``Atoms`` (numbers, positions in Å,
        cell, pbc; no labels), for recomputing what the store does not hold."""
        from ase import Atoms

        out = []
        for g in self._require_built(ids):
            shard, local = self._locate(int(g))
            a0, a1 = int(shard.atom_offsets[local]), int(shard.atom_offsets[local + 1])
            cell = np.load(shard.path / "cells.npy", mmap_mode="r")[local]
            pbc = np.load(shard.path / "pbc.npy", mmap_mode="r")[local]
            start = int(self.atom_start[g])
            out.append(Atoms(numbers=self.numbers[start:start + a1 - a0], positions=self._rows(shard, "positions", a0, a1),
                             cell=np.array(cell), pbc=np.array(pbc)))
        return out

    def image_numbers(self, ids) -> list[np.ndarray]:
        """Atomic numbers of each image in ``ids``."""
        return [self.numbers[self.atom_start[g] : self.atom_start[g + 1]] for g in ids]

    def atom_ids(self, ids) -> np.ndarray:
        """Global atom indices of the images ``ids``, in order."""
        if len(ids) == 0:
            return np.zeros(0, dtype=np.int64)
        ids = self._require_built(ids)
        return np.concatenate([np.arange(self.atom_start[g], self.atom_start[g + 1]) for g in ids])

    def features_of(self, ids) -> np.ndarray:
        """(A_ids, F) float64 fingerprints of the images ``ids``."""
        return np.concatenate([self._image_rows(g, "features") for g in ids]) if len(ids) else np.zeros((0, self.n_features))

    def _image_rows(self, g: int, name: str) -> np.ndarray:
        shard, local = self._locate(int(g))
        offsets = shard.atom_offsets if name == "features" else shard.pair_offsets
        return self._rows(shard, name, int(offsets[local]), int(offsets[local + 1]))

    def jacobian_of(self, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pair_i, pair_j, dfeatures) of image ``g`` (image-local atom indices; int64, int64, float64)."""
        if not self.has_jacobian:
            raise DataError(f"shard store {self.directory} holds no Jacobians")
        return (
            self._image_rows(g, "pair_i").astype(np.int64),
            self._image_rows(g, "pair_j").astype(np.int64),
            self._image_rows(g, "dfeatures"),
        )

    def shard_ranges(self, ids) -> list[np.ndarray]:
        """``ids`` grouped by shard (each group in the store's order): for reading a subset shard by shard."""
        ids = self._require_built(ids)
        pos = self.position[ids]
        ids, pos = ids[np.argsort(pos, kind="stable")], np.sort(pos)
        cuts = np.flatnonzero(np.diff(pos // self.shard_size)) + 1
        return [g for g in np.split(ids, cuts) if len(g)]
