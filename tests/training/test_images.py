"""Lazy reading (open_images) against eager reading (load_images)."""

import numpy as np
import pytest
from ase.io import read, write

from mfbo.datasets import OC20_TRAIN_POOL
from mfbo.errors import DataError
from mfbo.training import free_atom_mask, load_images, nested_subset, open_images, split_train_val
from mfbo.training._data import image_energy, image_forces


@pytest.fixture(scope="module")
def oc20_ten():
    images = read(str(OC20_TRAIN_POOL), index=":10")
    for a in images:
        a.info.clear()  # extxyz refuses info keys that repeat the calculator's results
    return images


def _same(a, b):
    assert np.array_equal(a.numbers, b.numbers)
    assert np.allclose(a.positions, b.positions, rtol=0, atol=1e-12)
    assert np.allclose(a.cell.array, b.cell.array, rtol=0, atol=1e-12)
    assert np.array_equal(a.pbc, b.pbc)
    assert image_energy(a) == pytest.approx(image_energy(b), rel=1e-14)
    assert np.allclose(image_forces(a), image_forces(b), rtol=1e-14, atol=0)


@pytest.mark.parametrize("name", ["d.traj", "d.extxyz", "d.db"])
def test_lazy_reading_equals_eager_reading(tmp_path, oc20_ten, name):
    write(tmp_path / name, oc20_ten)
    eager = load_images(tmp_path / name, require_forces=True)
    lazy = open_images(tmp_path / name)
    assert len(lazy) == len(eager) == 10 and lazy.file_length == 10
    for k in (7, 0, 9, 3):  # out of order: random access
        _same(lazy[k], eager[k])
    assert [len(a) for a in lazy] == [len(a) for a in eager]
    if name != "d.extxyz":  # FixAtoms survives .traj and ASE databases
        assert all(np.array_equal(free_atom_mask(a), free_atom_mask(b)) for a, b in zip(lazy, eager))


def test_views_split_and_subset_without_reading(tmp_path, oc20_ten, monkeypatch):
    write(tmp_path / "d.traj", oc20_ten)
    lazy = open_images(tmp_path / "d.traj")
    reads = []
    real_get = type(lazy._reader).get
    monkeypatch.setattr(type(lazy._reader), "get", lambda self, i: reads.append(i) or real_get(self, i))
    train, val = split_train_val(lazy, 0.2, seed=3)
    sub = nested_subset(train, 0.5, seed=3)
    assert reads == []
    eager_train, eager_val = split_train_val(oc20_ten, 0.2, seed=3)
    eager_sub = nested_subset(eager_train, 0.5, seed=3)
    assert len(val) == len(eager_val) == 2 and len(sub) == len(eager_sub) == 4
    for a, b in zip(list(sub) + list(val), eager_sub + eager_val):
        _same(a, b)
    assert set(sub.indices) <= set(train.indices) and not set(train.indices) & set(val.indices)


def test_open_images_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="nothing.traj does not exist"):
        open_images(tmp_path / "nothing.traj")
    (tmp_path / "bad.xyz").write_text("2\ncomment\nH 0 0 0\n")
    with pytest.raises(DataError, match=r"bad\.xyz.*cut short"):
        open_images(tmp_path / "bad.xyz")
