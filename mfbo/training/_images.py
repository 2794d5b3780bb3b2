"""Structures read lazily: a dataset file opened without reading its images into memory.

:func:`open_images` gives an :class:`ImageFile`, a sequence of ``ase.Atoms`` that reads an image
only when it is asked for. ASE trajectories (``.traj``) and ASE databases (``.db``, ``.json``
databases too) have random access of their own; extended-XYZ files are indexed once (the byte offset
of every frame, 8 bytes per image) and each frame is parsed on demand; any other ASE-readable format
is read frame by frame through ``ase.io.read(path, index=i)`` (correct, but every access parses from
the start of the file, so convert such data to ``.traj`` or extxyz first). OC20 / fairchem LMDB
datasets (a ``.lmdb`` file, an LMDB directory or a directory of ``.lmdb`` files) are read entry by
entry through :class:`mfbo.training._lmdb.LmdbImages`, which unpickles only data records (no code
from the file runs). ``take(indices)`` gives a
view on a subset (split and fidelity subsets are index arrays, never copies of images). Objects
pickle as the path plus the index, so worker processes reopen the file themselves. Torch-free.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mfbo.errors import DataError

__all__ = ["ImageFile", "open_images", "read_all", "source_key"]


def _format_of(path: Path) -> str:
    from ase.io.formats import filetype

    from mfbo.training._lmdb import is_lmdb_dataset

    if is_lmdb_dataset(path):
        return "lmdb"
    if path.is_dir():
        raise DataError(f"dataset {path} is a directory that holds no LMDB files (*.lmdb or data.mdb); give a "
                        "dataset file (.traj, extxyz, ASE database) or an LMDB dataset")

    try:
        fmt = filetype(str(path), guess=True)
    except Exception as exc:
        raise DataError(f"cannot tell the format of dataset file {path}: {exc}") from None
    if fmt in ("traj",):
        return "traj"
    if fmt in ("db", "json", "postgresql", "mysql"):
        return "db"
    if fmt in ("extxyz", "xyz"):
        return "extxyz"
    return "generic"


def _xyz_offsets(path: Path) -> np.ndarray:
    """Byte offset of every frame of an (extended) XYZ file: a count line, a comment, that many atoms."""
    offsets = []
    with open(path, "rb") as fh:
        line_no = 0
        while True:
            start = fh.tell()
            head = fh.readline()
            line_no += 1
            if not head:
                break
            if not head.strip():
                continue
            try:
                n = int(head.split()[0])
            except ValueError:
                raise DataError(
                    f"dataset file {path}: line {line_no} should hold an atom count (extended XYZ); "
                    "check the file or convert it to .traj"
                ) from None
            offsets.append(start)
            for _ in range(n + 1):
                if not fh.readline():
                    raise DataError(f"dataset file {path}: the frame starting at line {line_no} is cut short")
            line_no += n + 1
    return np.asarray(offsets, dtype=np.int64)


class _Reader:
    """Random access to one file's images; reopened in each process (the handle never pickles)."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = _format_of(path)
        self._handle = None
        self._ids = None
        self._offsets = None
        self._n = None
        self._length()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = None
        return state

    def _open(self):
        if self._handle is None:
            try:
                if self.kind == "traj":
                    from ase.io import Trajectory

                    self._handle = Trajectory(str(self.path), "r")
                elif self.kind == "db":
                    import ase.db

                    self._handle = ase.db.connect(str(self.path))
                elif self.kind == "lmdb":
                    from mfbo.training._lmdb import LmdbImages

                    self._handle = LmdbImages(self.path)
                else:
                    self._handle = True
            except Exception as exc:
                raise DataError(f"cannot read dataset file {self.path} with ASE: {exc}") from None
        return self._handle

    def _length(self) -> int:
        if self._n is None:
            try:
                if self.kind == "traj":
                    self._n = len(self._open())
                elif self.kind == "db":
                    self._ids = np.asarray([row.id for row in self._open().select(include_data=False)], dtype=np.int64)
                    self._n = len(self._ids)
                elif self.kind == "lmdb":
                    self._n = len(self._open())
                elif self.kind == "extxyz":
                    self._offsets = _xyz_offsets(self.path)
                    self._n = len(self._offsets)
                else:
                    from ase.io import iread

                    self._n = sum(1 for _ in iread(str(self.path), index=":"))
            except DataError:
                raise
            except Exception as exc:
                raise DataError(f"cannot read dataset file {self.path} with ASE: {exc}") from None
        return self._n

    def get(self, i: int):
        try:
            if self.kind == "traj":
                return self._open()[int(i)]
            if self.kind == "db":
                return self._open().get_atoms(id=int(self._ids[i]), add_additional_information=False)
            if self.kind == "lmdb":
                return self._open().get(int(i))
            if self.kind == "extxyz":
                from ase.io import read

                with open(self.path, "rb") as fh:
                    fh.seek(int(self._offsets[i]))
                    n = int(fh.readline().split()[0])
                    body = fh.readline()
                    lines = [fh.readline() for _ in range(n)]
                text = (f"{n}\n".encode() + body + b"".join(lines)).decode()
                return read(io.StringIO(text), format="extxyz")
            from ase.io import read

            return read(str(self.path), index=int(i))
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"dataset file {self.path}: cannot read image {i}: {exc}") from None


class ImageFile(Sequence):
    """A dataset file's images (or a subset of them), read on demand.

    Attributes:
        path: the file.
        indices: int64 positions in the file of this view's images, in order.
    """

    def __init__(self, path, *, _reader: _Reader | None = None, _indices=None):
        self.path = Path(path)
        self._reader = _reader if _reader is not None else _Reader(self.path)
        n = self._reader._length()
        self.indices = np.arange(n, dtype=np.int64) if _indices is None else np.asarray(_indices, dtype=np.int64)

    @property
    def file_length(self) -> int:
        """Number of images in the whole file."""
        return self._reader._length()

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return self.take(np.arange(len(self))[item])
        return self._reader.get(int(self.indices[item]))

    def __iter__(self):
        for i in self.indices:
            yield self._reader.get(int(i))

    def take(self, positions) -> ImageFile:
        """A view on this view's images at ``positions`` (in that order)."""
        return ImageFile(self.path, _reader=self._reader, _indices=self.indices[np.asarray(positions, dtype=np.int64)])

    def whole_file(self) -> ImageFile:
        """A view on every image of this view's file (same reader: the file is not reopened)."""
        return ImageFile(self.path, _reader=self._reader)

    def read_file_image(self, i: int):
        """Image ``i`` of the whole file (not of this view)."""
        return self._reader.get(int(i))

    def __repr__(self) -> str:
        return f"ImageFile({str(self.path)!r}, {len(self)} of {self.file_length} images)"


def open_images(path) -> ImageFile:
    """Open a dataset file lazily (nothing but its frame index is read).

    Args:
        path: an ASE-readable file: ``.traj``, extended XYZ, an ASE database, or any other format
            ASE reads (slow random access, see the module docstring); or an OC20 / fairchem LMDB
            dataset (a ``.lmdb`` file or a directory of them; needs the ``lmdb`` package).

    Raises:
        DataError: the file does not exist, cannot be read, or holds no images.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"dataset file {path} does not exist")
    images = ImageFile(path)
    if images.file_length == 0:
        raise DataError(f"dataset {path} holds no images")
    return images


def read_all(path) -> list:
    """Every image of a dataset as ``ase.Atoms``: an LMDB dataset read entry by entry (safely, see
    the module docstring), anything else by ``ase.io.read(path, index=":")``.

    Raises:
        DataError: an LMDB that cannot be read. ASE's own errors pass through for the caller to
            name its field.
    """
    from mfbo.training._lmdb import is_lmdb_dataset

    path = Path(path)
    if is_lmdb_dataset(path):
        return list(open_images(path))
    from ase import Atoms
    from ase.io import read

    images = read(str(path), index=":")
    return [images] if isinstance(images, Atoms) else list(images)


def _is_lock_file(path: Path) -> bool:
    """An LMDB lock file: rewritten by readers, so not part of a dataset's content."""
    return path.name == "lock.mdb" or path.name.endswith("-lock")


def source_key(images: ImageFile) -> str:
    """Identity of a dataset's content for the shard store: path, size and modification time (ns)
    (of every file inside, for a directory)."""
    path = images.path
    files = sorted(p for p in path.rglob("*") if p.is_file() and not _is_lock_file(p)) if path.is_dir() \
        else [path]
    h = hashlib.sha256()
    h.update(str(path.resolve()).encode())
    for f in files:
        stat = os.stat(f)
        name = "" if f == path else f"{f.relative_to(path)}:"
        h.update(f"{name}{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:24]
