"""OC20 / fairchem LMDB datasets, read without trusting their pickles.

OC20's S2EF data and the LMDBs made with fairchem (formerly ocp) hold one pickled
``torch_geometric.data.Data`` per structure under the keys ``b"0"``, ``b"1"``, ... (and usually a pickled
``b"length"``). A dataset is a single ``.lmdb`` file, an LMDB environment directory (``data.mdb``) or a
directory of ``.lmdb`` files (read in name order, one after another, as fairchem does).

Unpickling runs code chosen by whoever wrote the file, so these pickles are read with an unpickler
that builds only plain records and tensors: a ``torch_geometric`` class becomes an inert attribute
record (torch_geometric need not be installed), tensors are rebuilt by torch's weights-only loader,
NumPy arrays and scalars by NumPy's reconstructors; any other global (``os.system``, a module's
function) is refused with a :class:`~mfbo.errors.DataError` naming the file and the entry.

A record becomes an ``ase.Atoms``: ``pos`` (Å), ``atomic_numbers``, ``cell`` (Å; periodic when its
volume is non-zero), ``fixed`` (1 = held fixed: a ``FixAtoms`` constraint), ``tags``, and the labels
``energy`` or ``y`` (eV) and ``forces`` or ``force`` (eV/Å) on a ``SinglePointCalculator``. AMPTorch's own
LMDBs hold its normalised fingerprints and no positions; they are refused with a message saying so
(mfbo computes its own fingerprints from structures).
"""

from __future__ import annotations

import io
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np

from mfbo.errors import DataError

__all__ = ["is_lmdb_dataset", "LmdbImages"]


def is_lmdb_dataset(path) -> bool:
    """``path`` is a ``.lmdb`` file, an LMDB environment directory or a directory of ``.lmdb`` files."""
    path = Path(path)
    if path.is_dir():
        return (path / "data.mdb").is_file() or any(path.glob("*.lmdb"))
    return path.suffix == ".lmdb"


def _lmdb_files(path: Path) -> list[tuple[Path, bool]]:
    """(path, subdir) of each LMDB environment of a dataset, in reading order."""
    if path.is_dir():
        if (path / "data.mdb").is_file():
            return [(path, True)]
        return [(p, p.is_dir()) for p in sorted(path.glob("*.lmdb"))]
    return [(path, False)]


# An LMDB environment may be open once per process: every reader of a file shares it.
_ENVIRONMENTS: dict = {}


def _environment(path: Path, subdir: bool):
    import lmdb

    key = (os.getpid(), str(path.resolve()))
    env = _ENVIRONMENTS.get(key)
    if env is None:
        env = _ENVIRONMENTS[key] = lmdb.open(str(path), subdir=subdir, readonly=True, lock=False, readahead=False,
                                             meminit=False)
    return env


class _Record:
    """What a ``torch_geometric`` object unpickles to: its pickled state, nothing else."""

    def __init__(self, *args, **kwargs):
        self.state = {}

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]  # (__dict__, __slots__ state)
        self.state = state if isinstance(state, dict) else {}


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` (protocol 0/1 pickles) for records only."""
    if cls is not _Record or base is not object:
        raise pickle.UnpicklingError(f"refused to build {getattr(cls, '__name__', cls)!r}")
    return _Record()


def _load_storage(data: bytes):
    """A pickled torch storage (``torch.storage._load_from_bytes``), read by the weights-only loader."""
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _allowed(module: str, name: str):
    if module.startswith("torch_geometric.") or module == "torch_geometric":
        return _Record
    if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
        import torch._utils

        return torch._utils._rebuild_tensor_v2
    if (module, name) == ("torch.storage", "_load_from_bytes"):
        return _load_storage
    if (module, name) == ("collections", "OrderedDict"):
        return OrderedDict
    if (module, name) == ("copyreg", "_reconstructor"):
        return _reconstructor
    if (module, name) == ("builtins", "object"):
        return object
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
        return getattr(np._core.multiarray if hasattr(np, "_core") else np.core.multiarray, name)
    if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
        return getattr(np, name)
    if module == "numpy.dtypes" and name.endswith("DType"):
        import numpy.dtypes

        return getattr(numpy.dtypes, name)
    return None


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        found = _allowed(module, name)
        if found is None:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return found


def _unpickle(data: bytes):
    return _SafeUnpickler(io.BytesIO(data)).load()


def _fields(obj) -> dict:
    """The attributes of an unpickled Data record (old and new torch_geometric layouts)."""
    fields = obj.state if isinstance(obj, _Record) else obj if isinstance(obj, dict) else {}
    store = fields.get("_store")
    if isinstance(store, _Record):
        fields = store.state.get("_mapping", store.state)
    return fields


def _array(value, dtype=np.float64) -> np.ndarray | None:
    if value is None:
        return None
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def record_to_atoms(fields: dict, where: str):
    """An ``ase.Atoms`` with its DFT labels from a Data record's fields (module docstring)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixAtoms

    if "pos" not in fields:
        if "fingerprint" in fields:
            raise DataError(f"{where} holds AMPTorch fingerprints, not structures (no 'pos'); mfbo computes its own "
                            "fingerprints: train on the structure files this LMDB was made from")
        raise DataError(f"{where} has no 'pos' (atomic positions); fields found: {', '.join(sorted(fields)) or 'none'}")
    pos = _array(fields["pos"]).reshape(-1, 3)
    if "atomic_numbers" not in fields:
        raise DataError(f"{where} has no 'atomic_numbers'")
    numbers = np.rint(_array(fields["atomic_numbers"]).reshape(-1)).astype(np.int64)
    if len(numbers) != len(pos):
        raise DataError(f"{where}: {len(numbers)} atomic numbers for {len(pos)} positions")
    cell = _array(fields.get("cell"))
    cell = np.zeros((3, 3)) if cell is None else cell.reshape(3, 3)
    atoms = Atoms(numbers=numbers, positions=pos, cell=cell, pbc=bool(abs(np.linalg.det(cell)) > 1e-12))
    if fields.get("tags") is not None:
        atoms.set_tags(_array(fields["tags"], np.int64).reshape(-1))
    if fields.get("fixed") is not None:
        fixed = np.flatnonzero(_array(fields["fixed"]).reshape(-1) > 0.5)
        if len(fixed):
            atoms.set_constraint(FixAtoms(indices=fixed))
    energy = next((fields[k] for k in ("energy", "y") if fields.get(k) is not None), None)
    forces = next((fields[k] for k in ("forces", "force") if fields.get(k) is not None), None)
    if energy is not None or forces is not None:
        atoms.calc = SinglePointCalculator(
            atoms,
            energy=None if energy is None else float(_array(energy).reshape(-1)[0]),
            forces=None if forces is None else _array(forces).reshape(-1, 3),
        )
    return atoms


class LmdbImages:
    """Random access to the structures of an LMDB dataset; opened lazily, never pickled open.

    Args:
        path: the dataset (module docstring).

    Raises:
        DataError: ``lmdb`` is not installed, or the dataset cannot be opened or counted.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._envs = None
        self._index = None  # (n, 2) int64: environment, key

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_envs"] = None
        return state

    def _open(self) -> list:
        if self._envs is None:
            try:
                import lmdb
            except ImportError:
                raise DataError(f"dataset {self.path} is an LMDB: install the lmdb package (pip install lmdb, or "
                                "mfbo[lmdb]) to read it") from None
            files = _lmdb_files(self.path)
            if not files:
                raise DataError(f"dataset {self.path} holds no LMDB files")
            try:
                self._envs = [_environment(p, subdir) for p, subdir in files]
            except lmdb.Error as exc:
                raise DataError(f"cannot open LMDB dataset {self.path}: {exc}") from None
        return self._envs

    def _keys(self, env) -> np.ndarray:
        with env.begin() as txn:
            raw = txn.get(b"length")
            if raw is not None:
                try:
                    n = _unpickle(raw)
                except Exception:
                    n = None
                if isinstance(n, (int, np.integer)):
                    return np.arange(int(n), dtype=np.int64)
            keys = []
            for key in txn.cursor().iternext(keys=True, values=False):
                try:
                    keys.append(int(bytes(key).decode("ascii")))
                except (UnicodeDecodeError, ValueError):
                    continue  # metadata entries (scalers, element lists)
        return np.sort(np.asarray(keys, dtype=np.int64))

    def __len__(self) -> int:
        if self._index is None:
            parts = [np.stack([np.full(len(k), e, dtype=np.int64), k], axis=1)
                     for e, k in enumerate(self._keys(env) for env in self._open())]
            self._index = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
        return len(self._index)

    def get(self, i: int):
        """Image ``i`` of the dataset as an ``ase.Atoms`` with its labels."""
        len(self)
        env, key = (int(x) for x in self._index[i])
        where = f"LMDB dataset {self.path}, entry {key}" + (f" of file {env}" if len(self._open()) > 1 else "")
        with self._open()[env].begin() as txn:
            raw = txn.get(str(key).encode("ascii"))
        if raw is None:
            raise DataError(f"{where} is missing (its 'length' entry promises it)")
        try:
            obj = _unpickle(raw)
        except Exception as exc:
            raise DataError(f"{where}: cannot unpickle it safely ({exc}); only torch_geometric Data records of "
                            "tensors and arrays are read") from None
        return record_to_atoms(_fields(obj), where)
