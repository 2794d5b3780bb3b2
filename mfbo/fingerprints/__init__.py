"""GMP fingerprints that reproduce AMPTorch (schemes ``gmp`` and ``gmpordernorm``).

Gaussian-multipole (GMP) fingerprints: for every atom, the overlap of probe Gaussians
(width sigma, Å) times Maxwell-Cartesian spherical harmonics (orders 0-4) with the
valence densities of its neighbours within a hard cutoff, in closed form (Gaussian product
theorem + polynomial moments), vectorised in torch float64 on CPU or CUDA.

    >>> from mfbo.fingerprints import GMPParams, featurize
    >>> params = GMPParams.from_fp_params({"MCSHs": {"0": {"groups": [1], "sigmas": [0.5, 1.0]}},
    ...                                    "cutoff": 6.0})
    >>> fp = featurize(atoms, params, derivatives=True)   # fp.features: (n_atoms, 2)

See ``docs/fingerprints.md``.
"""

from mfbo._lazy import lazy_exports

# Names are imported on first use: the engine needs torch, and `import mfbo.fingerprints`
# (done by the `mfbo` CLI for every command) must stay light.
_LAZY = {
    "Fingerprints": "mfbo.fingerprints._api",
    "featurize": "mfbo.fingerprints._api",
    "featurize_many": "mfbo.fingerprints._api",
    "featurize_torch": "mfbo.fingerprints._api",
    "FingerprintCache": "mfbo.fingerprints._cache",
    "structure_hash": "mfbo.fingerprints._cache",
    "SCHEMES": "mfbo.fingerprints._params",
    "GMPParams": "mfbo.fingerprints._params",
    "ValenceDensity": "mfbo.fingerprints._valence",
    "read_valence_density": "mfbo.fingerprints._valence",
    "bundled_valence_dir": "mfbo.fingerprints._valence",
}


__all__ = [
    "GMPParams",
    "SCHEMES",
    "Fingerprints",
    "featurize",
    "featurize_many",
    "featurize_torch",
    "FingerprintCache",
    "structure_hash",
    "ValenceDensity",
    "read_valence_density",
    "bundled_valence_dir",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__, globals())
