"""Shared fixtures of the training tests: small water and OC20 sets, fast configurations."""

from __future__ import annotations

import pytest

from mfbo.datasets import OC20_TRAIN_POOL, WATER


def _fingerprints_ready() -> bool:
    try:
        from mfbo.fingerprints import FingerprintCache, GMPParams, featurize  # noqa: F401
    except ImportError:
        return False
    return True


needs_fingerprints = pytest.mark.skipif(
    not _fingerprints_ready(), reason="mfbo.fingerprints (featurize/GMPParams) is not available"
)

# A small GMP set keeps the tests fast: 3 sigmas x orders 0-1 = 6 features, cutoff 5 A.
SMALL_FP = {
    "MCSHs": {
        "0": {"groups": [1], "sigmas": [0.3, 0.8, 1.5]},
        "1": {"groups": [1], "sigmas": [0.3, 0.8, 1.5]},
    },
    "cutoff": 5.0,
}


@pytest.fixture(scope="session")
def water():
    from ase.io import read

    return read(str(WATER), index=":40")


@pytest.fixture(scope="session")
def oc20_small():
    from ase.io import read

    return read(str(OC20_TRAIN_POOL), index=":8")


@pytest.fixture
def small_config():
    from mfbo.training import TrainConfig

    # A plain run: constant learning rate, last epoch's weights, so tests can compare epoch by epoch.
    return TrainConfig(
        fp_params=SMALL_FP, num_layers=2, num_nodes=8, batch_size=4, epochs=3, lr=1e-2,
        scheduler="none", warmup_epochs=0, keep_best=False,
    )
