"""OC20 / fairchem LMDB datasets: read lazily, without running code from their pickles."""

import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from ase.io import read

from mfbo.datasets import OC20_TRAIN_POOL
from mfbo.errors import DataError
from mfbo.training import open_images, split_train_val, train
from mfbo.training._data import free_atom_mask, load_images
from tests.training.conftest import needs_fingerprints

lmdb = pytest.importorskip("lmdb")


def _fake_torch_geometric():
    """Stand-ins for torch_geometric's Data (old layout: fields in __dict__) and its 2.x layout (fields in a
    GlobalStorage's _mapping), pickled under the real module names, as fairchem's LMDBs hold them."""
    data_mod = types.ModuleType("torch_geometric.data.data")
    storage_mod = types.ModuleType("torch_geometric.data.storage")

    class Data:  # PyG < 2: attributes in __dict__
        def __init__(self, **fields):
            self.__dict__.update(fields)

    class GlobalStorage:
        def __init__(self, mapping, parent):
            self._mapping = mapping
            self._parent = parent

    class Data2:  # PyG 2.x: attributes in a GlobalStorage
        def __init__(self, **fields):
            self.__dict__["_store"] = GlobalStorage(dict(fields), self)

    Data.__module__ = Data2.__module__ = "torch_geometric.data.data"
    Data.__qualname__ = "Data"
    Data2.__qualname__ = "Data"
    GlobalStorage.__module__ = "torch_geometric.data.storage"
    GlobalStorage.__qualname__ = "GlobalStorage"
    return data_mod, storage_mod, Data, Data2, GlobalStorage


def _pickled(cls_name: str, fields: dict) -> bytes:
    data_mod, storage_mod, data_cls, data2_cls, storage_cls = _fake_torch_geometric()
    saved = {k: sys.modules.get(k) for k in ("torch_geometric", "torch_geometric.data", "torch_geometric.data.data",
                                             "torch_geometric.data.storage")}
    sys.modules.update({"torch_geometric": types.ModuleType("torch_geometric"),
                        "torch_geometric.data": types.ModuleType("torch_geometric.data"),
                        "torch_geometric.data.data": data_mod, "torch_geometric.data.storage": storage_mod})
    data_mod.Data = data_cls if cls_name == "old" else data2_cls
    storage_mod.GlobalStorage = storage_cls
    try:
        return pickle.dumps(data_mod.Data(**fields), protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _fields_of(atoms) -> dict:
    fixed = ~free_atom_mask(atoms)
    return {
        "pos": torch.tensor(atoms.positions, dtype=torch.float32),
        "cell": torch.tensor(np.asarray(atoms.cell), dtype=torch.float32).view(1, 3, 3),
        "atomic_numbers": torch.tensor(atoms.numbers, dtype=torch.float32),
        "natoms": len(atoms),
        "tags": torch.tensor(atoms.get_tags(), dtype=torch.int64),
        "fixed": torch.tensor(fixed, dtype=torch.float32),
        "y": float(atoms.get_potential_energy()),
        "force": torch.tensor(atoms.get_forces(apply_constraint=False), dtype=torch.float32),
        "sid": 1234,
    }


def _write_lmdb(path, records: list[bytes], length: bool = True):
    env = lmdb.open(str(path), subdir=False, map_size=1 << 30, meminit=False)
    with env.begin(write=True) as txn:
        for i, raw in enumerate(records):
            txn.put(str(i).encode("ascii"), raw)
        if length:
            txn.put(b"length", pickle.dumps(len(records), protocol=-1))
    env.sync()
    env.close()


@pytest.fixture(scope="module")
def pool_images():
    return read(str(OC20_TRAIN_POOL), index=":12")


@pytest.mark.parametrize("layout", ["old", "new"])
def test_an_oc20_lmdb_reads_as_its_structures_and_labels(tmp_path, pool_images, layout):
    path = tmp_path / "data.lmdb"
    _write_lmdb(path, [_pickled(layout, _fields_of(a)) for a in pool_images], length=(layout == "old"))
    view = open_images(path)
    assert len(view) == len(pool_images)
    for want, got in zip(pool_images, view, strict=True):
        assert (got.numbers == want.numbers).all()
        assert got.positions == pytest.approx(want.positions, abs=1e-4)  # float32 in the file
        assert np.asarray(got.cell) == pytest.approx(np.asarray(want.cell), abs=1e-4)
        assert got.pbc.all() and (got.get_tags() == want.get_tags()).all()
        assert (free_atom_mask(got) == free_atom_mask(want)).all()
        assert got.get_potential_energy() == pytest.approx(want.get_potential_energy(), rel=1e-12)
        assert got.get_forces(apply_constraint=False) == pytest.approx(want.get_forces(apply_constraint=False),
                                                                       abs=1e-5)
    # Views pickle (worker processes reopen the file) and subsets read the right entries.
    sub = pickle.loads(pickle.dumps(view.take([5, 2])))
    assert (sub[0].numbers == pool_images[5].numbers).all() and (sub[1].numbers == pool_images[2].numbers).all()
    assert len(load_images(path, require_forces=True)) == len(pool_images)


def test_a_directory_of_lmdb_files_reads_in_name_order(tmp_path, pool_images):
    folder = tmp_path / "s2ef"
    folder.mkdir()
    _write_lmdb(folder / "data.0000.lmdb", [_pickled("new", _fields_of(a)) for a in pool_images[:5]])
    _write_lmdb(folder / "data.0001.lmdb", [_pickled("new", _fields_of(a)) for a in pool_images[5:]])
    view = open_images(folder)
    assert len(view) == len(pool_images)
    assert [len(a) for a in view] == [len(a) for a in pool_images]


class _Boom:
    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_pickle_that_would_run_code_is_refused_and_not_run(tmp_path, pool_images):
    target = tmp_path / "ran"
    boom = _Boom()
    boom.target = target
    path = tmp_path / "evil.lmdb"
    _write_lmdb(path, [_pickled("new", _fields_of(pool_images[0])), pickle.dumps({"pos": boom})])
    view = open_images(path)
    assert len(view[0]) == len(pool_images[0])
    with pytest.raises(DataError, match=r"evil\.lmdb, entry 1: cannot unpickle it safely.*refused to load"):
        view[1]
    assert not target.exists()


def test_amptorch_fingerprint_lmdbs_are_refused_with_what_to_do(tmp_path):
    path = tmp_path / "amptorch.lmdb"
    _write_lmdb(path, [_pickled("old", {"fingerprint": torch.zeros(3, 4), "energy": 1.0, "natoms": 3})])
    with pytest.raises(DataError, match="AMPTorch fingerprints, not structures.*train on the structure files"):
        open_images(path)[0]


def test_a_directory_without_lmdb_files_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty is a directory that holds no LMDB files"):
        open_images(tmp_path / "empty")


@needs_fingerprints
def test_training_streams_from_an_lmdb(tmp_path, pool_images, small_config):
    path = tmp_path / "pool.lmdb"
    _write_lmdb(path, [_pickled("new", _fields_of(a)) for a in pool_images])
    train_view, val_view = split_train_val(open_images(path), 0.25, seed=0)
    data = {"mode": "stream", "shard_dir": str(tmp_path / "shards"), "workers": 1, "shard_size": 4}
    result = train(small_config, train_view, val_view, data=data)
    assert result.extra["data_mode"] == "stream" and result.n_train == 9 and result.n_val == 3
    assert np.isfinite(result.curve[-1]["val_force_mae"])


def test_the_shard_key_of_an_lmdb_directory_follows_its_files_not_its_locks(tmp_path, pool_images):
    from mfbo.training._images import source_key

    folder = tmp_path / "s2ef"
    folder.mkdir()
    _write_lmdb(folder / "data.0000.lmdb", [_pickled("new", _fields_of(a)) for a in pool_images[:5]])
    _write_lmdb(folder / "data.0001.lmdb", [_pickled("new", _fields_of(a)) for a in pool_images[5:]])
    key = source_key(open_images(folder))
    list(open_images(folder))
    (folder / "data.0000.lmdb-lock").write_bytes(b"\0" * 64)
    assert source_key(open_images(folder)) == key
    _write_lmdb(folder / "data.0002.lmdb", [_pickled("new", _fields_of(a)) for a in pool_images[:2]])
    assert source_key(open_images(folder)) != key and len(open_images(folder)) == len(pool_images) + 2


def test_studies_and_derived_priors_read_an_lmdb_directory(tmp_path, pool_images):
    from mfbo.priors import derive_gmp_prior
    from mfbo.study._config import load_study_file
    from mfbo.study._setup import load_split

    folder = tmp_path / "s2ef"
    folder.mkdir()
    _write_lmdb(folder / "data.0000.lmdb", [_pickled("new", _fields_of(a)) for a in pool_images])
    study = tmp_path / "study.toml"
    study.write_text('[objective]\nbackend = "builtin"\n[data]\ntrain = "s2ef"\nval_fraction = 0.25\n'
                     '[fidelity]\nepochs = [1, 10]\ndata_fraction = [0.5, 1.0]\n[budget]\nffe = 2\n')
    split = load_split(load_study_file(study))
    assert len(split["train"]) + len(split["val"]) == len(pool_images)
    assert sorted(len(a) for a in split["train"] + split["val"]) == sorted(len(a) for a in pool_images)
    from mfbo.priors._derive import structure_stats

    assert structure_stats(folder).n_images_total == len(pool_images)
    assert derive_gmp_prior(folder).stats.n_images == len(pool_images)


def test_mfbo_fingerprint_reads_an_lmdb_and_its_index(tmp_path, pool_images):
    import json
    import subprocess

    from mfbo.fingerprints import GMPParams, featurize

    path = tmp_path / "data.lmdb"
    _write_lmdb(path, [_pickled("new", _fields_of(a)) for a in pool_images[:4]])
    spec = {"fp_scheme": "gmpordernorm", "MCSHs": {"orders": [0, 1], "sigmas": [0.5, 1.0]}, "cutoff": 5}
    (tmp_path / "params.json").write_text(json.dumps(spec))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "mfbo.cli", "fingerprint", *args, "--params", "params.json"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})

    r = cli("data.lmdb", "--index", "1:3", "--out", "fp.npz")
    assert r.returncode == 0, r.stderr
    out = np.load(tmp_path / "fp.npz")
    assert sorted(out.files) == ["0", "1"]
    params = GMPParams.from_fp_params(spec, "gmpordernorm")
    for k, atoms in enumerate(pool_images[1:3]):
        # the LMDB holds float32 positions, so the features agree to float32 precision of the geometry
        np.testing.assert_allclose(out[str(k)], featurize(atoms, params).features, rtol=1e-4, atol=1e-6)
    bad = cli("data.lmdb", "--index", "9", "--out", "bad.npz")
    assert bad.returncode != 0 and "out of range" in bad.stderr and "4 images" in bad.stderr
    assert not (tmp_path / "bad.npz").exists()
