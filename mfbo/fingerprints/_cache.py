"""Content-addressed on-disk fingerprint cache.

Layout: ``<directory>/<params.cache_key()[:32]>/<structure hash>.npz`` (features) and
``<structure hash>.jac.npz`` (features + Jacobian). The structure hash covers atomic
numbers, positions, cell and pbc (float64 bytes), so the same data is never featurised
twice for the same parameters. Files are written to a temporary name and renamed, so a
crash never leaves a half-written entry; an unreadable entry is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mfbo.fingerprints._api import Fingerprints, _check_params, featurize_many
from mfbo.fingerprints._params import GMPParams

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


def atomic_savez(path: str | os.PathLike, **arrays) -> None:
    """``np.savez`` to a temporary file in the same directory, then rename (never half-written)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **arrays)
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class FingerprintCache:
    """Featurise through an on-disk cache keyed by (parameters, structure).

    Args:
        directory: cache root; default ``$MFBO_CACHE_DIR`` or ``~/.cache/mfbo/fingerprints``.
        device: torch device used for cache misses.
    """

    def __init__(self, directory: str | os.PathLike | None = None, *, device="cpu"):
        if directory is None:
            directory = os.environ.get("MFBO_CACHE_DIR") or Path.home() / ".cache" / "mfbo" / "fingerprints"
        self.directory = Path(directory)
        self.device = device
        self.hits = 0
        self.misses = 0

    def _param_dir(self, params: GMPParams) -> Path:
        d = self.directory / params.cache_key()[:32]
        if not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
            meta = {"fp_scheme": params.fp_scheme, **params.to_fp_params(), "cache_key": params.cache_key()}
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
            with os.fdopen(fd, "w") as fh:
                json.dump(meta, fh, indent=1)
            os.chmod(tmp, _default_mode())
            os.replace(tmp, d / "params.json")
        return d

    @staticmethod
    def _load(path: Path, derivatives: bool) -> Fingerprints | None:
        try:
            with np.load(path) as z:
                if derivatives:
                    return Fingerprints(z["features"], z["pair_i"], z["pair_j"], z["dfeatures"])
                return Fingerprints(z["features"])
        except FileNotFoundError:
            return None
        except Exception as exc:  # a damaged entry is recomputed, never trusted
            warnings.warn(f"ignoring unreadable fingerprint cache entry {path}: {exc}", stacklevel=3)
            return None

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
        for k, h in enumerate(hashes):
            fp = self._load(pdir / f"{h}.jac.npz", derivatives)
            if fp is None and not derivatives:
                fp = self._load(pdir / f"{h}.npz", False)
            if fp is None:
                todo.append(k)
            else:
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
                    atomic_savez(
                        pdir / f"{h}.jac.npz",
                        features=fp.features,
                        pair_i=fp.pair_i,
                        pair_j=fp.pair_j,
                        dfeatures=fp.dfeatures,
                    )
                else:
                    atomic_savez(pdir / f"{h}.npz", features=fp.features)
            for k in todo:
                results[k] = by_hash[hashes[k]]
        return results  # type: ignore[return-value]
