"""The trainer's data sources: streamed from shards against packed in memory."""

import numpy as np
import pytest
from ase.io import read, write

from mfbo.datasets import OC20_TRAIN_POOL
from mfbo.errors import ConfigError
from mfbo.training import nested_subset_indices, open_images, split_train_val, train
from mfbo.training._featurize import gmp_params_of
from mfbo.training._source import DataOptions, resolve_data_mode
from tests.training.conftest import needs_fingerprints

pytestmark = needs_fingerprints


@pytest.fixture(scope="module")
def oc20_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("oc20") / "pool.traj"
    write(path, read(str(OC20_TRAIN_POOL), index=":24"))
    return path


def _stream(tmp_path, **kw):
    return {"mode": "stream", "shard_dir": str(tmp_path / "shards"), "workers": 1, "shard_size": 5, **kw}


def test_streamed_training_gives_the_in_memory_curve(oc20_file, small_config, tmp_path):
    view = open_images(oc20_file)
    train_view, val_view = split_train_val(view, 0.25, seed=small_config.seed)
    eager_train, eager_val = list(train_view), list(val_view)
    memory = train(small_config, eager_train, eager_val, data_fraction=0.75, data="memory")
    streamed = train(small_config, train_view, val_view, data_fraction=0.75, data=_stream(tmp_path))
    assert memory.extra["data_mode"] == "memory" and streamed.extra["data_mode"] == "stream"
    assert streamed.n_train == memory.n_train == 14 and streamed.n_val == memory.n_val == 6
    for kind in ("linear_fit", "mean_energy", "zero_forces"):
        assert streamed.extra["val_baselines"][kind] == pytest.approx(memory.extra["val_baselines"][kind], rel=1e-12)
    for a, b in zip(memory.curve, streamed.curve, strict=True):
        for key in ("train_energy_mae", "train_force_mae_free", "val_energy_mae", "val_force_mae", "train_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-9), key
    assert memory.curve[0]["val_energy_mae"] != memory.curve[-1]["val_energy_mae"]  # it trained
    np.testing.assert_allclose(memory.model.feature_scaler.mul, streamed.model.feature_scaler.mul, rtol=1e-12)
    test = read(str(OC20_TRAIN_POOL), index="30:33")
    a, b = memory.model.predict(test), streamed.model.predict(test)
    np.testing.assert_allclose(a["energy"], b["energy"], rtol=1e-9)
    np.testing.assert_allclose(np.concatenate(a["forces"]), np.concatenate(b["forces"]), rtol=1e-9, atol=1e-12)


def test_fidelity_subsets_index_the_same_shards(oc20_file, small_config, tmp_path, monkeypatch):
    import mfbo.training._shards as shards

    view = open_images(oc20_file)
    train_view, val_view = split_train_val(view, 0.25, seed=small_config.seed)
    calls = []
    real = shards._featurize
    monkeypatch.setattr(shards, "_featurize", lambda *a: calls.append(len(a[0])) or real(*a))
    seen = {}
    real_over = shards.ShardSet.__init__

    def spy(self, directory):
        real_over(self, directory)
        seen.setdefault("dirs", set()).add(str(directory))

    monkeypatch.setattr(shards.ShardSet, "__init__", spy)
    for fraction in (0.25, 0.5, 1.0):
        result = train(small_config, train_view, val_view, data_fraction=fraction, epochs=1, data=_stream(tmp_path))
        assert result.n_train == len(nested_subset_indices(len(train_view), fraction, small_config.seed))
    assert sum(calls) == 24  # the whole file once, every fidelity afterwards reads it
    assert len(seen["dirs"]) == 1


def test_auto_mode_streams_files_above_the_memory_limit(oc20_file, small_config):
    params = gmp_params_of(small_config)
    view = open_images(oc20_file)
    pool, val = split_train_val(view, 0.25, seed=0)
    assert resolve_data_mode(DataOptions(), pool, val, params, True) == "memory"
    assert resolve_data_mode(DataOptions(memory_limit_gb=1e-4), pool, val, params, True) == "stream"
    lists = (list(pool), list(val))
    assert resolve_data_mode(DataOptions(memory_limit_gb=1e-4), *lists, params, True) == "memory"
    assert resolve_data_mode(DataOptions(mode="memory", memory_limit_gb=1e-4), pool, val, params, True) == "memory"
    with pytest.raises(ConfigError, match="data_mode='stream' reads images from dataset files"):
        resolve_data_mode(DataOptions(mode="stream"), *lists, params, True)
    with pytest.raises(ConfigError, match="data_mode='fast'"):
        DataOptions.of("fast")
    with pytest.raises(ConfigError, match="unknown data option"):
        DataOptions.of({"worker": 2})
