import numpy as np

from mfbo.training import FeatureScaler, TargetScaler


def test_feature_scaler_per_element_minmax_and_fallback():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 4)) * [1, 10, 100, 0]
    z = np.array([1] * 20 + [8] * 30)
    s = FeatureScaler.fit(x, z, "normalize", (0.0, 1.0), per_element=True)
    rows = s.row_of_z[z]
    y = x * s.mul[rows] + s.add[rows]
    for el in (1, 8):
        m = z == el
        np.testing.assert_allclose(y[m][:, :3].min(0), 0, atol=1e-12)
        np.testing.assert_allclose(y[m][:, :3].max(0), 1, atol=1e-12)
    assert np.all(s.mul[:, 3] == 1.0)  # constant column keeps scale 1 (AMPTorch)
    assert s.row_of_z[6] == s.mul.shape[0] - 1  # unseen element -> statistics over all atoms
    st = FeatureScaler.fit(x, z, "standardize", per_element=False)
    y = x * st.mul[st.row_of_z[z]] + st.add[st.row_of_z[z]]
    np.testing.assert_allclose(y[:, :3].mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(y[:, :3].std(0), 1, atol=1e-12)


def test_target_scaler_per_element_recovers_references():
    rng = np.random.default_rng(1)
    refs = {1: -3.5, 8: -7.25, 29: -4.0}
    numbers, energies = [], []
    for _ in range(30):
        z = rng.choice([1, 8, 29], size=rng.integers(3, 12))
        numbers.append(z)
        energies.append(sum(refs[int(v)] for v in z) + 0.01 * rng.normal() * len(z))
    t = TargetScaler.fit(np.array(energies), numbers, "per_element")
    for el, ref in refs.items():
        assert abs(t.ref[el] - ref) < 0.02
    assert t.per_atom_loss and 0 < t.scale < 0.05
    a = TargetScaler.fit(np.array(energies), numbers, "amptorch")
    assert np.isclose(a.offset, np.mean(energies)) and np.isclose(a.scale, np.std(energies, ddof=1))
    assert not a.per_atom_loss and np.all(a.ref == 0)


def test_feature_scaler_fitted_in_chunks_equals_one_fit():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(300, 5)) * [1.0, 10.0, 0.1, 3.0, 1e-9] + [0.0, 5.0, -2.0, 1.0, 7.0]
    numbers = rng.choice([1, 8, 29], size=300)
    pieces = [(features[a:b], numbers[a:b]) for a, b in ((0, 7), (7, 150), (150, 151), (151, 300))]
    for kind in ("normalize", "standardize", "none"):
        for per_element in (True, False):
            whole = FeatureScaler.fit(features, numbers, kind, (-1.0, 1.0), per_element)
            chunked = FeatureScaler.fit_chunks(iter(pieces), np.unique(numbers), 5, kind, (-1.0, 1.0), per_element)
            assert np.array_equal(whole.row_of_z, chunked.row_of_z)
            exact = kind != "standardize"  # min/max are exact; merged moments agree to rounding
            np.testing.assert_allclose(chunked.mul, whole.mul, rtol=0 if exact else 1e-12)
            np.testing.assert_allclose(chunked.add, whole.add, rtol=0 if exact else 1e-12, atol=0 if exact else 1e-12)
