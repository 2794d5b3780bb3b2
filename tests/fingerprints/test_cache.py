"""FingerprintCache: content addressing, reuse, damaged entries."""

from __future__ import annotations

import numpy as np
from ase.build import molecule

from mfbo.fingerprints import FingerprintCache, GMPParams, featurize_many

PARAMS = GMPParams.from_fp_params(
    {
        "MCSHs": {"0": {"groups": [1], "sigmas": [0.5, 1.0]}, "2": {"groups": [1, 2], "sigmas": [1.0]}},
        "cutoff": 5,
    }
)


def _images():
    a = molecule("H2O")
    b = molecule("CH4")
    c = molecule("H2O")
    c.positions[0] += 0.05
    return [a, b, c, a.copy()]


def test_cache_reuses_and_matches_direct(tmp_path):
    imgs = _images()
    cache = FingerprintCache(tmp_path)
    first = cache.featurize_many(imgs, PARAMS)
    assert cache.misses == 4 and cache.hits == 0
    entries = list(tmp_path.rglob("*.npz"))
    assert len(entries) == 3  # the duplicate structure is stored once
    direct = featurize_many(imgs, PARAMS)
    for x, y in zip(first, direct):
        np.testing.assert_array_equal(x.features, y.features)
    again = FingerprintCache(tmp_path).featurize_many(imgs, PARAMS)
    for x, y in zip(again, direct):
        np.testing.assert_array_equal(x.features, y.features)
        assert x.features.dtype == np.float64
    c2 = FingerprintCache(tmp_path)
    c2.featurize_many(imgs, PARAMS)
    assert c2.hits == 4 and c2.misses == 0


def test_derivative_entries_serve_value_requests(tmp_path):
    imgs = _images()[:2]
    cache = FingerprintCache(tmp_path)
    with_d = cache.featurize_many(imgs, PARAMS, derivatives=True)
    assert all(fp.has_derivatives for fp in with_d)
    values = cache.featurize_many(imgs, PARAMS)
    assert cache.hits == 2
    for x, y in zip(values, with_d):
        np.testing.assert_array_equal(x.features, y.features)
    # values-only entries do not satisfy a derivative request
    other = FingerprintCache(tmp_path / "b")
    other.featurize_many(imgs, PARAMS)
    got = other.featurize_many(imgs, PARAMS, derivatives=True)
    assert other.misses == 4 and all(fp.has_derivatives for fp in got)


def test_key_depends_on_params_and_structure(tmp_path):
    imgs = _images()[:1]
    cache = FingerprintCache(tmp_path)
    cache.featurize_many(imgs, PARAMS)
    other = GMPParams.from_fp_params({**PARAMS.to_fp_params(), "cutoff": 4})
    cache.featurize_many(imgs, other)
    moved = imgs[0].copy()
    moved.positions[1, 2] += 1e-9
    cache.featurize_many([moved], PARAMS)
    assert cache.misses == 3 and cache.hits == 0


def test_damaged_entry_is_recomputed(tmp_path):
    import warnings

    imgs = _images()[:1]
    cache = FingerprintCache(tmp_path)
    ref = cache.featurize_many(imgs, PARAMS)[0].features
    (entry,) = [p for p in tmp_path.rglob("*.npz")]
    entry.write_bytes(b"truncated")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        got = FingerprintCache(tmp_path).featurize_many(imgs, PARAMS)[0].features
    np.testing.assert_array_equal(got, ref)
    assert np.load(entry)["features"].shape == ref.shape


def test_default_directory_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MFBO_CACHE_DIR", str(tmp_path / "env"))
    assert FingerprintCache().directory == tmp_path / "env"
