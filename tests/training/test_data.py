import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.io import write

from mfbo.errors import ConfigError, DataError
from mfbo.training import free_atom_mask, load_images, nested_subset, split_train_val
from mfbo.training._data import subset_size


def _image(i, energy=True, forces=True):
    a = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7 + 0.01 * i]])
    kw = {}
    if energy:
        kw["energy"] = -1.0 - i
    if forces:
        kw["forces"] = np.zeros((2, 3))
    if kw:
        a.calc = SinglePointCalculator(a, **kw)
    return a


def test_reads_any_ase_format(tmp_path):
    images = [_image(i) for i in range(4)]
    for name in ("d.traj", "d.extxyz", "d.db"):
        write(tmp_path / name, images)
        got = load_images(tmp_path / name, require_forces=True)
        assert len(got) == 4 and np.isclose(got[3].get_potential_energy(), -4.0)


def test_missing_energy_names_file_and_first_bad_index(tmp_path):
    images = [_image(0), _image(1), _image(2, energy=False, forces=False), _image(3, energy=False, forces=False)]
    path = tmp_path / "bad.traj"
    write(path, images)
    with pytest.raises(DataError, match=r"bad\.traj.*image 2 has no energy"):
        load_images(path)


def test_missing_forces_only_when_required():
    images = [_image(0), _image(1, forces=False)]
    assert len(load_images(images)) == 2
    with pytest.raises(DataError, match="image 1 has no forces"):
        load_images(images, require_forces=True)


def test_unreadable_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_images(tmp_path / "nope.traj")
    junk = tmp_path / "junk.traj"
    junk.write_bytes(b"not a trajectory at all")
    with pytest.raises(DataError, match="junk.traj"):
        load_images(junk)
    with pytest.raises(DataError, match="no images"):
        load_images([])


def test_fixed_atoms_mask():
    a = _image(0)
    a.set_constraint(FixAtoms(indices=[1]))
    assert free_atom_mask(a).tolist() == [True, False]


def test_split_is_seeded_and_disjoint():
    pool = list(range(569))
    tr, va = split_train_val(pool, 0.1, seed=1)
    assert len(va) == 57 and len(tr) == 512 and not set(tr) & set(va)
    assert split_train_val(pool, 0.1, seed=1) == (tr, va)
    assert split_train_val(pool, 0.1, seed=2)[1] != va
    with pytest.raises(ConfigError):
        split_train_val(pool, 1.5, seed=1)


def test_nested_subsets():
    pool = list(range(100))
    fractions = [0.01, 0.05, 0.1, 0.33, 0.5, 0.9, 1.0]
    subsets = [nested_subset(pool, f, seed=3) for f in fractions]
    for f, s in zip(fractions, subsets):
        assert len(s) == subset_size(100, f) == max(1, int(np.ceil(f * 100 - 1e-9)))
        assert len(set(s)) == len(s)
    for small, large in zip(subsets, subsets[1:]):
        assert large[: len(small)] == small
    assert sorted(subsets[-1]) == pool
    assert nested_subset(pool, 0.5, seed=4) != subsets[4]
    assert subset_size(10, 0.3) == 3
    with pytest.raises(ConfigError, match="data_fraction"):
        nested_subset(pool, 0.0, seed=1)
