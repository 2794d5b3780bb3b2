"""The ASE calculator refuses a structure holding an element its model never saw."""

import numpy as np
import pytest

from mfbo.errors import DataError
from tests.training.conftest import SMALL_FP, needs_fingerprints

pytestmark = needs_fingerprints


@pytest.fixture(scope="module")
def water_model(tmp_path_factory):
    from ase.io import read

    from mfbo.datasets import WATER
    from mfbo.training import TrainConfig, train

    water = read(str(WATER), index=":10")
    config = TrainConfig(fp_params=SMALL_FP, num_layers=1, num_nodes=4, activation="tanh", batchnorm=False,
                         batch_size=4, epochs=1, lr=1e-2, scheduler="none", warmup_epochs=0)
    result = train(config, water[:8], water[8:])
    return result.model.save(tmp_path_factory.mktemp("model") / "water.npz"), water[9]


def _with_copper(atoms):
    out = atoms.copy()
    out.symbols[0] = "Cu"
    return out


def test_unseen_element_is_refused_in_one_line(water_model):
    from mfbo.training import MfboCalculator

    path, molecule = water_model
    atoms = _with_copper(molecule)
    atoms.calc = MfboCalculator(path)  # a saved model remembers its elements
    with pytest.raises(DataError) as info:
        atoms.get_potential_energy()
    message = str(info.value)
    assert "\n" not in message
    assert "Cu" in message and "trained on H, O" in message and "allow_unseen_elements=True" in message
    with pytest.raises(DataError, match="Cu"):
        atoms.get_forces()


def test_allow_unseen_elements_predicts_and_seen_elements_are_never_refused(water_model):
    from mfbo.training import MfboCalculator

    path, molecule = water_model
    atoms = _with_copper(molecule)
    atoms.calc = MfboCalculator(path, allow_unseen_elements=True)
    assert np.isfinite(atoms.get_potential_energy()) and np.all(np.isfinite(atoms.get_forces()))
    plain = molecule.copy()
    plain.calc = MfboCalculator(path)
    assert np.isfinite(plain.get_potential_energy())
