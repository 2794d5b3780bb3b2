"""Content-addressed on-disk fingerprint cache with a size limit.

Layout: ``<directory>/<params.cache_key()[:32]>/<structure hash>.npz`` (features) and
``<structure hash>.jac.npz`` (features + Jacobian). The structure hash covers atomic
numbers, positions, cell and pbc (float64 bytes), so the same data is never featurised
twice for the same parameters. Files are written to a temporary name and renamed, so a
crash never leaves a half-written entry; an unreadable entry is recomputed.

The cache is kept under a size limit by evicting the least recently used entries
(:mod:`mfbo.fingerprints._store`): a read sets the entry's mtime to the current time, and
a process that writes scans the directory at its first write and after every 5-10% of the
limit it has written, evicting in a background thread. Several processes may share a
directory: an entry another process evicted is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mfbo.fingerprints._api import Fingerprints, _check_params, featurize_many
from mfbo.fingerprints._params import GMPParams
from mfbo.fingerprints._store import (
    DEFAULT_MAX_GB,
    cache_info,
    check_max_gb,
    clear,
    default_directory,
    evict,
    explicit_limit,
    resolve_limit,
)

__all__ = ["FingerprintCache", "structure_hash"]


def structure_hash(atoms) -> str:
    """SHA-256 over numbers, positions, cell and pbc of an ASE ``Atoms``."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(atoms.get_positions(), dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(atoms.cell.array, dtype=np.float64).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.bool_).tobytes())
    return h.hexdigest()


def _default_mode() -> int:
    """File mode a plain open() would give (mkstemp creates 0600 files)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_savez(path: str | os.PathLike, **arrays) -> int:
    """``np.savez`` to a temporary file in the same directory, then rename (never half-written).

    Returns the size of the file written, in bytes.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
            size = fh.tell()
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
        return size
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# Entries each process is using, per cache root (absolute path): the parameter-set directory it
# used last and the entry files it read or wrote there. Eviction by any FingerprintCache of
# this process leaves them (and that directory) alone; another parameter set replaces them.
_IN_USE: dict[str, tuple[str, set[str]]] = {}


class FingerprintCache:
    """Featurise through an on-disk cache keyed by (parameters, structure), kept under a size limit.

    Args:
        directory: cache root; default ``$MFBO_CACHE_DIR`` or ``~/.cache/mfbo/fingerprints``.
        device: torch device used for cache misses.
        max_gb: size limit in GB (10^9 bytes; ``math.inf``: no limit); default
            ``$MFBO_CACHE_MAX_GB``, else min(20 GB, half of (cache size + free disk space)).
            When a write takes the cache over the limit, the least recently used entries are
            removed until 90% of it is left, in a background thread (see :meth:`wait`); entries
            this process read or wrote for the parameter set it used last are never removed.

    Attributes:
        hits, misses: images served from the cache / computed.
        evicted: entries this object removed to respect the limit.

    Raises:
        ConfigError: ``max_gb`` or ``$MFBO_CACHE_MAX_GB`` is not a positive number.
    """

    # Rescan after writing this fraction of the limit (at least; at most twice it).
    _RESCAN_FRACTION = 0.05

    def __init__(self, directory: str | os.PathLike | None = None, *, device="cpu", max_gb=None):
        self.directory = Path(directory) if directory is not None else default_directory()
        self.device = device
        self.max_gb = check_max_gb(max_gb)
        # Reads (and checks) $MFBO_CACHE_MAX_GB now rather than at the first write.
        explicit_gb, _ = explicit_limit(self.max_gb)
        self._unbounded = explicit_gb is not None and math.isinf(explicit_gb)
        self.hits = 0
        self.misses = 0
        self.evicted = 0
        self._root = str(self.directory.absolute())
        self._written = 0  # bytes written since the last scan
        self._budget: float | None = None  # bytes to write before the next scan (None: at the first write)
        self._worker: threading.Thread | None = None  # the eviction running in the background
        self._error: Exception | None = None  # what that eviction raised
        self._warned = False

    def limit_bytes(self, cache_bytes: int = 0) -> float:
        """The size limit in bytes (inf: none) for a cache currently holding ``cache_bytes``."""
        return resolve_limit(self.max_gb, self.directory, cache_bytes)[0]

    def info(self) -> dict:
        """Entries, size and limit of this cache (see :func:`mfbo.fingerprints._store.cache_info`)."""
        return cache_info(self.directory, self.max_gb)

    def clear(self, older_than_days: float | None = None) -> tuple[int, int]:
        """Remove all entries (or those unused for ``older_than_days`` days); (entries, bytes) removed."""
        return clear(self.directory, older_than_days)

    # ------------------------------------------------------------------ bookkeeping
    def _use(self, key: str, name: str) -> None:
        current = _IN_USE.get(self._root)
        if current is None or current[0] != key:
            current = (key, set())
            _IN_USE[self._root] = current
        current[1].add(name)

    def _wrote(self, nbytes: int) -> None:
        """Count a write; start a scan + eviction in a background thread once enough has been written."""
        self._written += nbytes
        self._collect(wait=False)
        if self._worker is not None or self._unbounded:
            return
        if self._budget is not None and self._written <= self._budget:
            return
        self._written = 0
        # Non-daemon: a process that ends right after featurising still finishes the eviction.
        self._worker = threading.Thread(target=self._run_eviction, name="mfbo-cache-evict", daemon=False)
        self._worker.start()

    def _in_use(self, key: str, name: str | None) -> bool:
        """Whether this process uses entry ``key/name`` (``name`` None: directory ``key``) now."""
        current = _IN_USE.get(self._root)
        return current is not None and current[0] == key and (name is None or name in current[1])

    def _run_eviction(self) -> None:
        """Thread body of a background eviction; an exception is handed to :meth:`_collect`."""
        try:
            self._account(evict(self.directory, self.limit_bytes, self._in_use))
        except Exception as exc:
            self._budget = self._RESCAN_FRACTION * DEFAULT_MAX_GB * 1e9
            self._error = exc

    def _collect(self, wait: bool) -> None:
        """Forget a finished background eviction (``wait``: wait for a running one first).

        A failed eviction becomes a warning here, in the caller's thread (it must not fail the
        featurisation); a warning the filters turned into an error is raised as such.
        """
        worker = self._worker
        if worker is not None and (wait or not worker.is_alive()):
            worker.join()
            self._worker = None
            error, self._error = self._error, None
            if isinstance(error, Warning):
                raise error
            if error is not None:
                warnings.warn(f"fingerprint cache {self.directory}: eviction failed: {error}", stacklevel=3)

    def wait(self) -> None:
        """Wait until the eviction started by the last writes (if any) has finished.

        :meth:`featurize_many` returns while an eviction it started may still be removing
        entries in a background thread, so that the removal overlaps with what the caller does
        next (training); the interpreter waits for it at exit. Writes made while it ran that
        exceed the rescan budget are checked here too, so the limit holds on return (up to
        other processes' writes).
        """
        self._collect(wait=True)
        if not self._unbounded and self._budget is not None and self._written > self._budget:
            self.enforce_limit()

    def _account(self, result):
        self.evicted += result.removed
        limit = result.limit_bytes if result.ran else self.limit_bytes(0)
        step = self._RESCAN_FRACTION * limit
        if not result.ran:  # another process is evicting
            self._budget = step
            return result
        self._budget = min(max(limit - result.total_bytes, step), 2 * step)
        if result.total_bytes > limit and not self._warned:
            self._warned = True
            warnings.warn(
                f"fingerprint cache {self.directory} holds {result.total_bytes / 1e9:.3g} GB after eviction, "
                f"more than its limit of {limit / 1e9:.3g} GB: the rest is in use (by this process, or read by "
                "another during the eviction) and is kept; raise the limit (cache_max_gb, --cache-max-gb or "
                "MFBO_CACHE_MAX_GB) if this repeats",
                stacklevel=2,
            )
        return result

    def enforce_limit(self):
        """Scan the directory now and evict least recently used entries if it is over the limit.

        Returns the :class:`mfbo.fingerprints._store.EvictResult` (``ran`` False when another
        process was evicting). :meth:`featurize_many` does this by itself (see :meth:`wait`).
        """
        self._collect(wait=True)
        self._written = 0
        return self._account(evict(self.directory, self.limit_bytes, self._in_use))

    def _param_dir(self, params: GMPParams) -> Path:
        d = self.directory / params.cache_key()[:32]
        meta = {"fp_scheme": params.fp_scheme, **params.to_fp_params(), "cache_key": params.cache_key()}
        for attempt in range(5):
            if d.is_dir():
                return d
            try:
                d.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
                with os.fdopen(fd, "w") as fh:
                    json.dump(meta, fh, indent=1)
                os.chmod(tmp, _default_mode())
                os.replace(tmp, d / "params.json")
                return d
            except FileNotFoundError:
                # Another process (mfbo cache clear, an eviction) removed the new directory: make it again.
                if attempt == 4:
                    raise

    def entry_path(self, atoms, params: GMPParams, *, derivatives: bool = False) -> Path:
        """Where the entry of ``atoms`` (values, or values + Jacobian) for ``params`` is stored."""
        suffix = ".jac.npz" if derivatives else ".npz"
        return self.directory / params.cache_key()[:32] / f"{structure_hash(atoms)}{suffix}"

    def _store(self, params: GMPParams, name: str, **arrays) -> None:
        """Write one entry; recreate the parameter-set directory if another process removed it."""
        self._use(params.cache_key()[:32], name)  # before it exists: an eviction running now skips it
        # A concurrent clear() can remove the directory again between its creation and the write, more
        # than once in a row; as many tries as _param_dir gives its own creation.
        for attempt in range(5):
            try:
                size = atomic_savez(self._param_dir(params) / name, **arrays)
                break
            except FileNotFoundError:
                if attempt == 4:
                    raise
        self._wrote(size)

    @staticmethod
    def _load(path: Path, derivatives: bool) -> Fingerprints | None:
        try:
            with np.load(path) as z:
                if derivatives:
                    fp = Fingerprints(z["features"], z["pair_i"], z["pair_j"], z["dfeatures"])
                else:
                    fp = Fingerprints(z["features"])
        except FileNotFoundError:  # never written, or evicted by another process: recomputed
            return None
        except Exception as exc:  # a damaged entry is recomputed, never trusted
            warnings.warn(f"ignoring unreadable fingerprint cache entry {path}: {exc}", stacklevel=3)
            return None
        try:
            os.utime(path)  # last use = now, for least-recently-used eviction
        except OSError:  # evicted meanwhile, or a read-only cache
            pass
        return fp

    def featurize_many(
        self,
        images: Sequence,
        params: GMPParams,
        *,
        derivatives: bool = False,
        progress: bool = False,
    ) -> list[Fingerprints]:
        """Like :func:`mfbo.fingerprints.featurize_many`, reading and filling the cache.

        A request for values is served from a Jacobian entry too; a request for derivatives
        recomputes (and stores) when only values are cached.
        """
        params = _check_params(params)
        images = list(images)
        pdir = self._param_dir(params)
        hashes = [structure_hash(a) for a in images]
        results: list[Fingerprints | None] = [None] * len(images)
        todo = []
        key = pdir.name
        for k, h in enumerate(hashes):
            name = f"{h}.jac.npz"
            fp = self._load(pdir / name, derivatives)
            if fp is None and not derivatives:
                name = f"{h}.npz"
                fp = self._load(pdir / name, False)
            if fp is None:
                todo.append(k)
            else:
                self._use(key, name)
                results[k] = fp
        self.hits += len(images) - len(todo)
        self.misses += len(todo)
        if todo:
            # Duplicate structures inside one request are computed once.
            first: dict[str, int] = {}
            unique = []
            for k in todo:
                if hashes[k] not in first:
                    first[hashes[k]] = k
                    unique.append(k)
            computed = featurize_many(
                [images[k] for k in unique],
                params,
                derivatives=derivatives,
                progress=progress,
                device=self.device,
            )
            by_hash = {}
            for k, fp in zip(unique, computed):
                h = hashes[k]
                by_hash[h] = fp
                if derivatives:
                    self._store(
                        params,
                        f"{h}.jac.npz",
                        features=fp.features,
                        pair_i=fp.pair_i,
                        pair_j=fp.pair_j,
                        dfeatures=fp.dfeatures,
                    )
                else:
                    self._store(params, f"{h}.npz", features=fp.features)
            for k in todo:
                results[k] = by_hash[hashes[k]]
        return results  # type: ignore[return-value]
