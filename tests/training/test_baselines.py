"""The trivial baselines on hand-made images whose answers are worked out by hand.

Training images follow E = n_H x (-1 eV) + n_O x (-5 eV) exactly; the evaluated images deviate from
that by known amounts and carry known forces, one atom fixed by FixAtoms.
"""

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms

from mfbo.training import baseline_metrics, ratios_to_baselines, unseen_elements
from mfbo.training._baselines import LabelSet, fit_element_energies


def _image(symbols, energy, forces=None, fixed=()):
    atoms = Atoms(symbols, cell=[20, 20, 20])
    atoms.positions[:, 0] = 1.5 * np.arange(len(atoms))
    if fixed:
        atoms.set_constraint(FixAtoms(indices=list(fixed)))
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


TRAIN = [_image("H2", -2.0), _image("O2", -10.0), _image("H2O", -7.0)]
MEAN_PER_ATOM = -19.0 / 7.0  # total energy / total atoms of TRAIN (eV/atom)
F_WATER = [[1.0, 0.0, 0.0], [0.0, -2.0, 0.0], [0.0, 0.0, 3.0]]
F_OH = [[0.5, 0.5, 0.5], [-0.5, -0.5, -0.5]]
EVALUATE = [
    _image("H2O", -7.3, F_WATER, fixed=[2]),  # linear fit -7 eV: 0.3 eV off
    _image("OH", -5.8, F_OH),  # linear fit -6 eV: 0.2 eV off
]


def test_exact_linear_energies_are_recovered():
    fit = fit_element_energies([a.get_potential_energy() for a in TRAIN], [a.numbers for a in TRAIN])
    assert fit.ref[1] == pytest.approx(-1.0, abs=1e-12) and fit.ref[8] == pytest.approx(-5.0, abs=1e-12)
    assert sorted(fit.elements.tolist()) == [1, 8]
    assert fit.rms_residual_per_atom == pytest.approx(0.0, abs=1e-12)
    assert fit.mean_per_atom == pytest.approx(MEAN_PER_ATOM)
    assert fit.ref[6] == pytest.approx(MEAN_PER_ATOM)  # an element absent from the fit: the mean per atom
    assert fit.predict([np.array([1, 8, 8]), np.array([6])]).tolist() == pytest.approx([-11.0, MEAN_PER_ATOM])


def test_inconsistent_and_collinear_compositions():
    # Two H2 images at -2 and -4 eV: H = -1.5 eV, each image 1 eV (0.5 eV/atom) off.
    fit = fit_element_energies([-2.0, -4.0], [np.array([1, 1]), np.array([1, 1])])
    assert fit.ref[1] == pytest.approx(-1.5)
    assert fit.rms_residual_per_atom == pytest.approx(0.5)
    # Only H2O: the split between H and O is the minimum-norm one (2a + b = -8, a = 2b), the energies exact.
    fit = fit_element_energies([-7.0, -8.0, -9.0], [np.array([1, 1, 8])] * 3)
    assert fit.ref[1] == pytest.approx(-16.0 / 5.0) and fit.ref[8] == pytest.approx(-8.0 / 5.0)
    assert fit.predict([np.array([8, 1, 1])]) == pytest.approx([-8.0])
    assert fit.rms_residual_per_atom == pytest.approx(np.sqrt(2.0 / 3.0) / 3.0)


def test_baseline_metrics_by_hand():
    base = baseline_metrics(TRAIN, EVALUATE)
    assert base["n_images"] == 2
    assert base["linear_fit"]["energy_mae"] == pytest.approx((0.3 + 0.2) / 2)
    assert base["linear_fit"]["energy_mae_per_atom"] == pytest.approx((0.3 / 3 + 0.2 / 2) / 2)
    e_water, e_oh = abs(-7.3 - 3 * MEAN_PER_ATOM), abs(-5.8 - 2 * MEAN_PER_ATOM)
    assert base["mean_energy"]["energy_mae"] == pytest.approx((e_water + e_oh) / 2)
    assert base["mean_energy"]["energy_mae_per_atom"] == pytest.approx((e_water / 3 + e_oh / 2) / 2)
    # |F| summed: water 6 eV/Å over 9 components, OH 3 over 6; free atoms: water's first two (3 over 6).
    assert base["zero_forces"]["force_mae"] == pytest.approx((6.0 + 3.0) / 15)
    assert base["zero_forces"]["force_mae_free"] == pytest.approx((3.0 + 3.0) / 12)
    assert baseline_metrics(LabelSet.of(TRAIN), LabelSet.of(EVALUATE)) == base
    # Without force labels there is no zero-force baseline, and the energies are unchanged.
    no_forces = baseline_metrics(TRAIN, [_image("H2O", -7.3), _image("OH", -5.8)])
    assert no_forces["zero_forces"] == {"force_mae": None, "force_mae_free": None}
    assert no_forces["linear_fit"] == base["linear_fit"]


def test_ratios_to_baselines():
    base = baseline_metrics(TRAIN, EVALUATE)
    metrics = {"energy_mae_per_atom": 0.05, "force_mae": 0.3, "force_mae_free": None}
    ratios = ratios_to_baselines(metrics, base)
    assert ratios["energy_vs_linear_fit"] == pytest.approx(0.5)
    assert ratios["energy_vs_mean"] == pytest.approx(0.05 / base["mean_energy"]["energy_mae_per_atom"])
    assert ratios["force_vs_zero"] == pytest.approx(0.5)
    assert ratios["force_free_vs_zero"] is None  # no model value
    exact = baseline_metrics(TRAIN, TRAIN)  # the linear fit is exact on its own images: no ratio
    assert exact["linear_fit"]["energy_mae_per_atom"] < 1e-12
    assert ratios_to_baselines(metrics, exact)["energy_vs_linear_fit"] is None
    # Forces of a perfectly symmetric cell are zero up to rounding: no force ratio either.
    still = [_image("H2O", -7.3, np.full((3, 3), 1e-16)), _image("OH", -5.8, np.full((2, 3), -1e-16))]
    assert ratios_to_baselines(metrics, baseline_metrics(TRAIN, still))["force_vs_zero"] is None


def test_unseen_elements_names_only_what_training_lacks():
    assert unseen_elements(TRAIN, EVALUATE) == []
    others = [_image("CuH", -3.0), _image("NiO", -6.0), _image("H2", -2.0)]
    assert set(unseen_elements(TRAIN, others)) == {"Cu", "Ni"}
    assert unseen_elements(others, TRAIN) == []
    assert unseen_elements(TRAIN[:1], TRAIN) == ["O"]
