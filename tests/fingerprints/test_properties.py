"""Physical invariances (hypothesis), derivatives vs finite differences, boundary cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from mfbo.fingerprints import GMPParams, featurize, featurize_many, featurize_torch

SIG = [0.4, 1.0]
ALL_GROUPS = {str(o): {"groups": list(range(1, max(o, 1) + 1)), "sigmas": SIG} for o in range(5)}
GMP_ALL = GMPParams.from_fp_params({"MCSHs": ALL_GROUPS, "cutoff": 3.5}, "gmp")
GMP_01 = GMPParams.from_fp_params(
    {"MCSHs": {"0": {"groups": [1], "sigmas": SIG}, "1": {"groups": [1], "sigmas": SIG}}, "cutoff": 3.5}
)
# Sigma lists differ per order and are unsorted: feature columns are not a (group, sigma) grid.
GMP_MIXED = GMPParams.from_fp_params(
    {
        "MCSHs": {
            "0": {"groups": [1], "sigmas": [1.0, 0.4]},
            "1": {"groups": [1], "sigmas": [0.4]},
            "2": {"groups": [2, 1], "sigmas": [0.7, 0.4]},
            "3": {"groups": [3], "sigmas": [1.0]},
        },
        "cutoff": 3.5,
    },
    "gmp",
)
ON_SOLID = GMPParams.from_fp_params(
    {"MCSHs": {"orders": [0, 1, 2, 3, 4], "sigmas": SIG}, "cutoff": 3.5, "solid_harmonics": True},
    "gmpordernorm",
)
ON_SURF = GMPParams.from_fp_params(
    {"MCSHs": {"orders": [0, 1, 2, 3, 4], "sigmas": SIG}, "cutoff": 3.5, "solid_harmonics": False},
    "gmpordernorm",
)
ROTATION_INVARIANT = [GMP_01, ON_SOLID, ON_SURF]
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def structures(draw, periodic=None):
    n = draw(st.integers(2, 5))
    symbols = draw(st.lists(st.sampled_from(["H", "C", "O", "Cu"]), min_size=n, max_size=n))
    kind = periodic if periodic is not None else draw(st.sampled_from(["molecule", "bulk", "slab"]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if kind == "molecule":
        cell, pbc = np.zeros((3, 3)), [False] * 3
    else:
        # triclinic cell, sometimes smaller than the cutoff (many images)
        cell = np.diag(rng.uniform(2.5, 5.0, 3)) + rng.uniform(-0.8, 0.8, (3, 3)) * (1 - np.eye(3))
        pbc = [True, True, kind == "bulk"]
    box = np.diag(cell) if kind != "molecule" else np.full(3, 3.0)
    pos = rng.uniform(0, 1, (n, 3)) * np.where(box > 0, box, 3.0)
    return Atoms(symbols, positions=pos, cell=cell, pbc=pbc)


def _feats(atoms, params):
    return featurize(atoms, params).features


@SETTINGS
@given(structures(), st.integers(0, 2**31 - 1))
def test_rotation_invariance(atoms, seed):
    R = Rotation.random(random_state=seed).as_matrix()
    rot = atoms.copy()
    rot.positions = atoms.positions @ R.T
    rot.cell = atoms.cell.array @ R.T
    for params in ROTATION_INVARIANT:
        np.testing.assert_allclose(_feats(rot, params), _feats(atoms, params), rtol=1e-9, atol=1e-11)


@SETTINGS
@given(structures())
def test_cyclic_axis_permutation_invariance_all_gmp_groups(atoms):
    # GMP group norms are invariant under the cubic rotations that permute x -> y -> z.
    perm = atoms.copy()
    perm.positions = atoms.positions[:, [2, 0, 1]]
    perm.cell = atoms.cell.array[:, [2, 0, 1]]
    np.testing.assert_allclose(_feats(perm, GMP_ALL), _feats(atoms, GMP_ALL), rtol=1e-9, atol=1e-11)


@SETTINGS
@given(structures(), st.lists(st.floats(-20, 20), min_size=3, max_size=3), st.booleans())
def test_translation_invariance_with_and_without_wrapping(atoms, shift, wrap):
    moved = atoms.copy()
    moved.positions = atoms.positions + np.array(shift)
    if wrap and atoms.pbc.all():
        moved.wrap()
    for params in (GMP_ALL, ON_SURF):
        np.testing.assert_allclose(_feats(moved, params), _feats(atoms, params), rtol=1e-9, atol=1e-11)


@SETTINGS
@given(structures(), st.randoms(use_true_random=False))
def test_permutation_equivariance(atoms, rnd):
    order = list(range(len(atoms)))
    rnd.shuffle(order)
    perm = atoms[order]
    a = featurize(atoms, GMP_ALL, derivatives=True)
    b = featurize(perm, GMP_ALL, derivatives=True)
    np.testing.assert_allclose(b.features, a.features[order], rtol=1e-10, atol=1e-12)
    inv = np.argsort(order)
    blocks_a = {(i, j): d for i, j, d in zip(a.pair_i, a.pair_j, a.dfeatures)}
    for i, j, d in zip(b.pair_i, b.pair_j, b.dfeatures):
        np.testing.assert_allclose(d, blocks_a[(order[i], order[j])], rtol=1e-9, atol=1e-11)
    assert len(b.pair_i) == len(a.pair_i) and inv.shape == (len(atoms),)


@SETTINGS
@given(structures(periodic="bulk"), st.sampled_from([(2, 1, 1), (1, 2, 2), (2, 2, 1)]))
def test_supercell_replication(atoms, reps):
    big = atoms.repeat(reps)
    f = _feats(atoms, GMP_ALL)
    fb = _feats(big, GMP_ALL)
    np.testing.assert_allclose(fb, np.tile(f, (int(np.prod(reps)), 1)), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    "params", [GMP_ALL, GMP_MIXED, ON_SOLID, ON_SURF], ids=["gmp", "gmp_mixed", "on_solid", "on_surf"]
)
@pytest.mark.parametrize("kind", ["molecule", "slab", "bulk"])
def test_autograd_and_jacobian_vs_central_differences(params, kind):
    atoms = _fixed_structure(kind)
    pos = torch.tensor(atoms.positions, requires_grad=True)
    feats = featurize_torch(atoms, params, pos)
    np.testing.assert_allclose(feats.detach().numpy(), _feats(atoms, params), rtol=1e-12, atol=1e-14)
    rng = np.random.default_rng(0)
    weights = torch.tensor(rng.normal(size=feats.shape))
    (grad,) = torch.autograd.grad((feats * weights).sum(), pos)
    h = 1e-5
    fd = np.zeros(atoms.positions.shape)
    for a in range(len(atoms)):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, k] += h
            minus.positions[a, k] -= h
            diff = _feats(plus, params) - _feats(minus, params)
            fd[a, k] = (diff * weights.numpy()).sum() / (2 * h)
    np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-5, atol=1e-6 * np.abs(fd).max())
    # The pair-list Jacobian gives the same gradient.
    fp = featurize(atoms, params, derivatives=True)
    np.testing.assert_allclose(fp.features, feats.detach().numpy(), rtol=1e-12, atol=1e-14)
    jac_grad = -fp.forces(weights.numpy())
    np.testing.assert_allclose(jac_grad, grad.numpy(), rtol=1e-9, atol=1e-10 * np.abs(fd).max())


def _fixed_structure(kind):
    rng = np.random.default_rng(3)
    pos = rng.uniform(0, 3.0, (5, 3))
    cell = np.array([[3.2, 0.3, 0.0], [-0.4, 3.5, 0.2], [0.1, 0.2, 4.0]])
    pbc = {"molecule": False, "slab": [True, True, False], "bulk": True}[kind]
    return Atoms(
        "CuOHCOH",
        positions=np.vstack([pos, [[1.0, 1.0, 1.0]]]),
        cell=cell if kind != "molecule" else None,
        pbc=pbc,
    )


def test_second_derivatives_flow_for_force_training():
    atoms = _fixed_structure("bulk")
    pos = torch.tensor(atoms.positions, requires_grad=True)
    energy = featurize_torch(atoms, GMP_ALL, pos).tanh().sum()
    (g,) = torch.autograd.grad(energy, pos, create_graph=True)
    (gg,) = torch.autograd.grad((g * g).sum(), pos)
    assert torch.isfinite(gg).all() and gg.abs().sum() > 0


def test_atoms_on_cell_boundaries_see_all_neighbours():
    # An atom at fractional 1 - 1e-9 (ASE wraps it to ~0) must equal the same atom at 0.
    cell = np.array([[4.0, 0, 0], [1.0, 4.5, 0], [0, 0, 20.0]])
    frac = np.array([[0.0, 0.0, 0.3], [0.5, 0.5, 0.35], [0.25, 0.75, 0.4]])
    a = Atoms("CuCuO", scaled_positions=frac, cell=cell, pbc=[True, True, False])
    edge = frac.copy()
    edge[0, :2] = [1 - 1e-9, -1e-9]
    b = Atoms("CuCuO", scaled_positions=edge, cell=cell, pbc=[True, True, False])
    np.testing.assert_allclose(_feats(b, GMP_ALL), _feats(a, GMP_ALL), rtol=1e-6, atol=1e-8)


def test_cutoff_is_a_strict_inequality():
    params = GMPParams.from_fp_params({"MCSHs": {"0": {"groups": [1], "sigmas": [3.0]}}, "cutoff": 2.0})
    lone = _feats(Atoms("H", positions=[[0, 0, 0]]), params)
    inside = _feats(Atoms("H2", positions=[[0, 0, 0], [1.999999, 0, 0]]), params)
    at = _feats(Atoms("H2", positions=[[0, 0, 0], [2.0, 0, 0]]), params)
    assert inside[0, 0] > lone[0, 0] * 1.01
    np.testing.assert_allclose(at[0], lone[0], rtol=1e-14)


def test_batched_equals_single_and_cuda_if_available():
    imgs = [_fixed_structure(k) for k in ("molecule", "slab", "bulk")]
    many = featurize_many(imgs, ON_SOLID, derivatives=True)
    for a, fp in zip(imgs, many):
        one = featurize(a, ON_SOLID, derivatives=True)
        np.testing.assert_allclose(fp.features, one.features, rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(fp.pair_i, one.pair_i)
        np.testing.assert_allclose(fp.dfeatures, one.dfeatures, rtol=1e-12, atol=1e-14)
    if torch.cuda.is_available():
        gpu = featurize_many(imgs, ON_SOLID, derivatives=True, device="cuda")
        for fp, g in zip(many, gpu):
            np.testing.assert_allclose(g.features, fp.features, rtol=1e-11, atol=1e-13)
            np.testing.assert_allclose(g.dfeatures, fp.dfeatures, rtol=1e-10, atol=1e-12)


def test_threaded_batches_equal_one_thread(monkeypatch):
    """With several torch threads, batches run in worker threads: same results, same order."""
    from mfbo.fingerprints import _api

    imgs = [_fixed_structure(k) for k in ("molecule", "slab", "bulk", "slab", "molecule")]
    # Small batch limits: one image per batch, so the workers really share the work.
    monkeypatch.setattr(_api, "_VALUE_ELEMENTS", 1)
    monkeypatch.setattr(_api, "_JAC_ELEMENTS", 1)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = featurize_many(imgs, ON_SOLID, derivatives=True)
        torch.set_num_threads(2)
        two = featurize_many(imgs, ON_SOLID, derivatives=True)
        values = featurize_many(imgs, ON_SOLID)
        assert torch.get_num_threads() == 2  # the workers' single-thread setting does not leak
    finally:
        torch.set_num_threads(threads)
    for a, b, v in zip(one, two, values):
        np.testing.assert_array_equal(a.features, b.features)
        np.testing.assert_allclose(v.features, a.features, rtol=1e-13)  # another matmul shape
        np.testing.assert_array_equal(a.pair_j, b.pair_j)
        np.testing.assert_array_equal(a.dfeatures, b.dfeatures)


def test_non_periodic_axis_needs_no_cell_vector():
    slab = _fixed_structure("slab")
    flat = slab.copy()
    flat.cell[2] = [0.0, 0.0, 0.0]
    np.testing.assert_allclose(_feats(flat, GMP_ALL), _feats(slab, GMP_ALL), rtol=1e-12, atol=1e-14)
    # and a molecule in a large non-periodic box equals the same molecule without a cell
    mol = _fixed_structure("molecule")
    boxed = mol.copy()
    boxed.cell = [30.0, 30.0, 30.0]
    np.testing.assert_allclose(_feats(boxed, ON_SURF), _feats(mol, ON_SURF), rtol=1e-12, atol=1e-14)
