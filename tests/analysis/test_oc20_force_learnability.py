"""analysis/oc20_force_learnability.py: its force design is the linear energy model's forces; its fit is exact."""

from __future__ import annotations

import numpy as np

from tests.helpers import load_analysis_script


def _script():
    return load_analysis_script("oc20_force_learnability.py")


def test_design_times_weights_is_the_linear_models_free_atom_forces():
    from ase.io import read

    from mfbo.datasets import OC20_TRAIN_POOL
    from mfbo.fingerprints import featurize
    from mfbo.training import TrainConfig
    from mfbo.training._featurize import gmp_params_of

    script = _script()
    images = read(str(OC20_TRAIN_POOL), index=":3")
    params = gmp_params_of(TrainConfig(fp_params={"MCSHs": {"0": {"groups": [1], "sigmas": [0.5, 1.0]},
                                                             "1": {"groups": [1], "sigmas": [0.5, 1.0]}},
                                                   "cutoff": 5.0}))
    X, y = script.force_design(images, params)
    elements = sorted({int(z) for a in images for z in a.numbers})
    rng = np.random.default_rng(0)
    n_features = X.shape[1] // len(elements)
    w = rng.standard_normal((len(elements), n_features))
    expected, labels = [], []
    for atoms in images:
        fp = featurize(atoms, params, derivatives=True)
        dE = w[[elements.index(int(z)) for z in atoms.numbers]]  # dE_j/dG_j of E = sum_j w_Z(j) . G_j
        free = script.free_mask(atoms)
        assert 0 < free.sum() < len(atoms)  # the fixture has fixed atoms, so the mask matters
        expected.append(fp.forces(dE)[free].ravel())
        labels.append(atoms.get_forces(apply_constraint=False)[free].ravel())
    np.testing.assert_allclose(X @ w.ravel(), np.concatenate(expected), rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(y, np.concatenate(labels))


def test_labels_in_the_span_are_fitted_exactly_and_random_columns_are_not():
    script = _script()
    rng = np.random.default_rng(1)
    X = rng.standard_normal((400, 20))
    y = X @ rng.standard_normal(20) * 0.1
    r = script.in_sample_ratio(X, y, cap=10.0)
    assert r["rms_over_zero"] < 1e-10 and r["mae_over_zero"] < 1e-10
    # 20 random columns of 400 rows explain about 20/400 of the variance: sqrt(0.95) = 0.975
    assert 0.9 < r["random_columns_rms_over_zero"] < 1.0
    assert r["rows"] == 400 and r["rows_dropped"] == 0
