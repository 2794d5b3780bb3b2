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

from mfbo.errors import ConfigError, DataError, TrainingError
from mfbo.training._data import free_atom_mask, image_energy, image_forces
from mfbo.training._images import ImageFile, source_key

__all__ = ["ShardSet", "build_shards", "shard_directory", "DEFAULT_SHARD_SIZE"]

DEFAULT_SHARD_SIZE = 64
_FORMAT_VERSION = 1


def shard_directory(root, params, images: ImageFile, derivatives: bool) -> Path:
    """Where the shards of ``images``' file for ``params`` live under ``root``."""
    return Path(root) / params.cache_key()[:32] / f"{source_key(images)}-{'jac' if derivatives else 'fp'}"


def _featurize(images, params, derivatives):
    from mfbo.fingerprints import featurize_many

    return featurize_many(images, params, derivatives=derivatives)


def _shard_name(k: int) -> str:
    return f"shard-{k:05d}"


def _write_shard(reader: ImageFile, start: int, stop: int, params, derivatives: bool, require_forces: bool,
                 target: Path) -> int:
    """Featurise file images [start, stop) and write them as shard directory ``target``.

    Returns the number of images written (0 when another process finished the shard first).
    """
    images = [reader.read_file_image(i) for i in range(start, stop)]
    where = f"dataset {reader.path}"
    energies = []
    forces = []
    for k, atoms in enumerate(images):
        if len(atoms) == 0:
            raise DataError(f"{where}: image {start + k} has no atoms")
        energy = image_energy(atoms)
        if energy is None:
            raise DataError(
                f"{where}: image {start + k} has no energy; every training image needs a DFT total energy "
                "(attach a SinglePointCalculator)"
            )
        energies.append(energy)
        f = image_forces(atoms)
        if f is None and require_forces:
            raise DataError(
                f"{where}: image {start + k} has no forces; train with get_forces=False or supply forces on every image"
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
    return stop - start


# Per worker process: what every task of the featurisation shares, set once by the initializer,
# and the dataset reader, opened by the worker itself on its first task and kept for the rest.
_WORKER: dict = {}


def _init_worker(path: str, params, derivatives: bool, require_forces: bool) -> None:
    import torch

    import mfbo.fingerprints  # noqa: F401  (imported before the worker reports ready)

    torch.set_num_threads(1)
    _WORKER.update(path=path, params=params, derivatives=derivatives, require_forces=require_forces, reader=None)


def _worker_ready() -> int:
    """Answered once the worker process has started and imported torch (its pid)."""
    return os.getpid()


def _worker_write(start: int, stop: int, target: str) -> int:
    """A worker's task: shard [start, stop) of the file named at start-up, read with its own reader."""
    if _WORKER["reader"] is None:
        _WORKER["reader"] = ImageFile(Path(_WORKER["path"]))
    return _write_shard(_WORKER["reader"], start, stop, _WORKER["params"], _WORKER["derivatives"],
                        _WORKER["require_forces"], Path(target))


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
        try:
            pid = int(tmp.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if not _pid_alive(pid):
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
) -> ShardSet:
    """Featurise every image of ``images``' file into shards under ``root`` (resuming), and open them.

    Args:
        images: the file (any view of it: the whole file is sharded, views index into it).
        params: GMPParams.
        root: shard store root directory.
        derivatives: also store the Jacobians (needed for forces).
        require_forces: every image must carry forces.
        workers: featurisation processes, this one included: 1 featurises here with torch's thread
            setting; N > 1 featurises here with one torch thread and in N - 1 spawned processes
            (one torch thread each), all taking shards from one queue.
        shard_size: images per shard (a store keeps the shard size it was started with).
        progress: a bar on a terminal, else a plain line on stderr every 10 s.

    Raises:
        DataError: an image lacks an energy (or forces), or cannot be read; names file and image.
        ConfigError: ``workers`` or ``shard_size`` below 1.
    """
    if int(workers) < 1:
        raise ConfigError(f"workers={workers!r} must be at least 1")
    if int(shard_size) < 1:
        raise ConfigError(f"shard_size={shard_size!r} must be at least 1")
    directory = shard_directory(root, params, images, derivatives)
    directory.mkdir(parents=True, exist_ok=True)
    n = images.file_length
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
        }
        tmp = directory / f".manifest-{os.getpid()}"
        tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp, manifest_path)
    _clean_stale(directory)
    bounds = [(s, min(s + shard_size, n)) for s in range(0, n, shard_size)]
    todo = [k for k in range(len(bounds)) if not (directory / _shard_name(k) / "features.npy").is_file()]
    done_images = n - sum(bounds[k][1] - bounds[k][0] for k in todo)
    if progress:
        print(
            f"fingerprints: {len(bounds) - len(todo)} of {len(bounds)} shards of {images.path.name} already on disk"
            + (f"; computing {len(todo)} with {min(workers, len(todo))} process(es)" if todo else ""),
            file=sys.stderr,
            flush=True,
        )
    if todo:
        bar = _Progress(n, done_images, progress)
        try:
            tasks = [(bounds[k][0], bounds[k][1], directory / _shard_name(k)) for k in todo]
            import multiprocessing

            if workers == 1 or len(todo) == 1 or multiprocessing.current_process().daemon:
                # (A daemonic process, such as a Dask worker's, may not start children.)
                for start, stop, target in tasks:
                    _write_shard(images, start, stop, params, derivatives, require_forces, target)
                    bar.update(stop - start)
            else:
                _run_shared(images, params, derivatives, require_forces, tasks, min(workers, len(todo)), bar)
        finally:
            bar.close()
    return ShardSet(directory)


def _run_shared(images: ImageFile, params, derivatives: bool, require_forces: bool, tasks, workers: int,
                bar: _Progress) -> None:
    """Write the shards ``tasks`` ((start, stop, target) each) in this process and ``workers - 1``
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
                bar.update(task[1] - task[0])
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
                pool.submit(_worker_write, task[0], task[1], str(task[2])).result()
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
                    _write_shard(images, task[0], task[1], params, derivatives, require_forces, task[2])
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
    start: int
    atom_offsets: np.ndarray
    pair_offsets: np.ndarray | None
    layouts: dict


class ShardSet:
    """A finished shard store, opened for reading.

    Attributes:
        directory: the store.
        n_images: images of the file.
        n_features: fingerprint length F.
        has_jacobian: Jacobians are stored.
        energies: (n,) eV; natoms: (n,) atoms per image; atom_start: (n+1,) global atom offsets.
        numbers: (A,) int64; free: (A,) bool; forces: (A, 3) eV/Å or None (labels of all atoms).
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        try:
            manifest = json.loads((self.directory / "manifest.json").read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"shard store {self.directory} has no readable manifest.json ({exc}); delete it") from None
        self.manifest = manifest
        self.n_images = int(manifest["n_images"])
        self.n_features = int(manifest["n_features"])
        self.has_jacobian = bool(manifest["derivatives"])
        size = int(manifest["shard_size"])
        self.shards: list[_Shard] = []
        energies, numbers, free, forces = [], [], [], []
        for k, start in enumerate(range(0, self.n_images, size)):
            path = self.directory / _shard_name(k)
            if not (path / "features.npy").is_file():
                raise DataError(f"shard store {self.directory} lacks {path.name}; featurise again to complete it")

            def load(name, path=path):
                return np.load(path / f"{name}.npy")

            layouts = {name: _npy_layout(path / f"{name}.npy") for name in ("features", "pair_i", "pair_j", "dfeatures")
                       if (path / f"{name}.npy").is_file()}
            self.shards.append(
                _Shard(path, start, load("atom_offsets"), load("pair_offsets") if self.has_jacobian else None, layouts)
            )
            energies.append(load("energies"))
            numbers.append(load("numbers"))
            free.append(load("free"))
            forces.append(load("forces") if (path / "forces.npy").is_file() else None)
        self.shard_size = size
        self.energies = np.concatenate(energies)
        self.numbers = np.concatenate(numbers)
        self.free = np.concatenate(free)
        self.forces = None if any(f is None for f in forces) else np.concatenate(forces)
        self.natoms = np.concatenate([np.diff(s.atom_offsets) for s in self.shards])
        self.atom_start = np.concatenate([[0], np.cumsum(self.natoms)]).astype(np.int64)

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
            shard = self.shards[g // self.shard_size]
            local = g - shard.start
            spans.append((shard, int(shard.pair_offsets[local]), int(shard.pair_offsets[local + 1])))
        counts = np.array([b - a for _, a, b in spans], dtype=np.int64)
        offsets = np.zeros(len(spans) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        total = int(offsets[-1])
        pair_i = np.empty(total, dtype=np.int32)
        pair_j = np.empty(total, dtype=np.int32)
        dfeatures = np.empty((total, self.n_features, 3), dtype=np.float64)
        for k, (shard, a, b) in enumerate(spans):
            p0, p1 = offsets[k], offsets[k + 1]
            self._rows(shard, "pair_i", a, b, pair_i[p0:p1])
            self._rows(shard, "pair_j", a, b, pair_j[p0:p1])
            self._rows(shard, "dfeatures", a, b, dfeatures[p0:p1])
        atom_shift = np.repeat(np.concatenate([[0], np.cumsum(self.natoms[np.asarray(ids, dtype=np.int64)])[:-1]]), counts)
        return pair_i + atom_shift, pair_j + atom_shift, dfeatures, offsets

    def image_numbers(self, ids) -> list[np.ndarray]:
        """Atomic numbers of each image in ``ids``."""
        return [self.numbers[self.atom_start[g] : self.atom_start[g + 1]] for g in ids]

    def atom_ids(self, ids) -> np.ndarray:
        """Global atom indices of the images ``ids``, in order."""
        if len(ids) == 0:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.arange(self.atom_start[g], self.atom_start[g + 1]) for g in ids])

    def features_of(self, ids) -> np.ndarray:
        """(A_ids, F) float64 fingerprints of the images ``ids``."""
        return np.concatenate([self._image_rows(g, "features") for g in ids]) if len(ids) else np.zeros((0, self.n_features))

    def _image_rows(self, g: int, name: str) -> np.ndarray:
        shard = self.shards[g // self.shard_size]
        local = g - shard.start
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
        """``ids`` grouped by shard (each group in increasing order): for reading a subset shard by shard."""
        ids = np.sort(np.asarray(ids, dtype=np.int64))
        cuts = np.searchsorted(ids, [s.start for s in self.shards[1:]])
        return [g for g in np.split(ids, cuts) if len(g)]
