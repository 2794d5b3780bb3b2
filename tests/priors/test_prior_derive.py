"""Derived priors are physically sensible on the bundled water and OC20 data."""

import math
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

from mfbo.errors import DataError
from mfbo.priors import derive_gmp_prior, gmp_fp_params, load_prior_file
from mfbo.priors._derive import structure_stats

DATA = Path(__file__).resolve().parents[2] / "mfbo" / "datasets"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def water():
    return derive_gmp_prior(DATA / "water_2d.traj", max_images=150, seed=0)


@pytest.fixture(scope="module")
def oc20():
    return derive_gmp_prior(DATA / "train_pool.traj", max_images=120, seed=0)


def check_sensible(d):
    s = d.stats
    lo, hi = d.ranges["sigma_min"]
    # narrowest probe: a fraction of the shortest observed bonds
    assert 0.05 * s.d_short <= lo < hi <= 0.6 * s.d_short
    lo2, hi2 = d.ranges["sigma_max"]
    r1, r2, r3 = s.shells
    assert r1 < r2 < r3
    # widest probe: reaches between the 2nd and the 3rd shell
    assert 0.3 * r2 <= lo2 < hi2 <= r3
    assert hi < hi2
    clo, chi = d.ranges["cutoff"]
    assert clo > r1 and clo > r2  # cutoff above the first (and second) shell
    assert clo >= 3 * lo2 - 1e-9  # compatible with cutoff >= 3 sigma_max
    assert math.exp(-chi ** 2 / (2 * hi2 ** 2)) <= 1.5e-3  # beyond this the widest probe is negligible
    spec = d.spec
    draws = spec.prior.sample(100, seed=1)
    assert spec.prior.feasible(draws).all()
    for cfg in draws[:10]:
        scheme, fp = gmp_fp_params(cfg)
        assert fp["cutoff"] == cfg["cutoff"]
    return s


def test_water(water):
    s = check_sensible(water)
    assert s.elements == ["H", "O"] and s.n_images == 150 and s.n_images_total == 400
    oh = np.concatenate([s.pair_nn["H-O"], s.pair_nn["O-H"]])
    assert 0.9 < np.median(oh) < 1.05  # O-H bond ~0.97 Å
    assert 0.6 < s.d_short < 0.97
    assert water.ranges["cutoff"][1] < 8.0  # stays below the periodic images of the 10 Å box


def test_oc20(oc20):
    s = check_sensible(oc20)
    assert len(s.elements) > 30
    assert 0.9 < s.d_short < 1.3  # X-H bonds of adsorbates
    assert 2.3 < s.shells[0] < 2.9  # metal-metal nearest neighbours
    assert 0.97 < np.percentile(s.pair_nn["C-H"], 50) < 1.2


def test_comments_carry_the_reasoning_and_round_trip(water, tmp_path):
    text = water.to_toml()
    assert "d_short" in text and "Coordination shells" in text and "# " in text and "O-H" in text or "H-O" in text
    path = water.write(tmp_path / "w.toml")
    assert load_prior_file(path).to_dict() == water.spec.to_dict()
    png = water.plot(tmp_path / "w.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_subsample_is_seeded_and_errors_are_clear(tmp_path):
    a = structure_stats(DATA / "water_2d.traj", max_images=20, seed=3)
    b = structure_stats(DATA / "water_2d.traj", max_images=20, seed=3)
    c = structure_stats(DATA / "water_2d.traj", max_images=20, seed=4)
    assert np.array_equal(a.nn, b.nn) and not np.array_equal(a.nn, c.nn)
    with pytest.raises(DataError, match="no such file"):
        structure_stats(tmp_path / "none.traj")
    (tmp_path / "junk.traj").write_text("not a trajectory")
    with pytest.raises(DataError, match="junk.traj"):
        structure_stats(tmp_path / "junk.traj")
    with pytest.raises(DataError, match="no two atoms"):
        structure_stats([Atoms("H", positions=[[0, 0, 0]])])


def test_non_periodic_structures():
    mol = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]], pbc=False)
    s = structure_stats([mol] * 3)
    assert s.d_short == pytest.approx(0.96, abs=0.01)


def test_shipped_gmp_physics_is_what_derive_gives():
    shipped = load_prior_file(REPO / "priors" / "gmp_physics.toml")
    d = derive_gmp_prior(DATA / "train_pool.traj", name="gmp_physics")  # the defaults the file was made with
    assert shipped.to_dict() == d.spec.to_dict()
