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


def test_fidelity_subsets_featurise_only_their_images_once(oc20_file, small_config, tmp_path, monkeypatch):
    import mfbo.training._shards as shards

    view = open_images(oc20_file)
    train_view, val_view = split_train_val(view, 0.25, seed=small_config.seed)
    calls = []
    real = shards._featurize
    monkeypatch.setattr(shards, "_featurize", lambda *a: calls.append(len(a[0])) or real(*a))
    seen = {}
    real_over = shards.ShardSet.__init__

    def spy(self, directory, needed=None):
        real_over(self, directory, needed)
        seen.setdefault("dirs", set()).add(str(directory))

    monkeypatch.setattr(shards.ShardSet, "__init__", spy)
    featurised = []
    for fraction in (0.25, 0.5, 1.0):
        result = train(small_config, train_view, val_view, data_fraction=fraction, epochs=1, data=_stream(tmp_path))
        k = len(nested_subset_indices(len(train_view), fraction, small_config.seed))
        assert result.n_train == k
        featurised.append(sum(calls))
        # the store holds validation first, then the pool in nested-subset order, in shards of 5:
        # a run computes the shards up to its last needed image and nothing beyond
        assert featurised[-1] == min(len(view), -(-(len(val_view) + k) // 5) * 5)
    assert featurised[0] < len(view) and featurised[-1] == len(view)  # every image once in all
    assert len(seen["dirs"]) == 1
    # A store featurised whole in file order beforehand is read as it is: nothing is computed again.
    other = tmp_path / "plain"
    shards.build_shards(view, gmp_params_of(small_config), other, derivatives=True, require_forces=True,
                        shard_size=5)
    before = sum(calls)
    train(small_config, train_view, val_view, data_fraction=0.25, epochs=1, data=_stream(tmp_path, shard_dir=str(other)))
    assert sum(calls) == before


def test_an_ordered_partial_store_reads_what_it_holds_and_refuses_the_rest(oc20_file, small_config, tmp_path):
    from mfbo.errors import DataError
    from mfbo.fingerprints import featurize_many
    from mfbo.training._shards import build_shards

    view = open_images(oc20_file)
    params = gmp_params_of(small_config)
    order = np.random.default_rng(0).permutation(len(view))
    store = build_shards(view, params, tmp_path, derivatives=True, require_forces=True, shard_size=4, order=order,
                         needed=order[[0, 5]])
    assert sorted(store.shards) == [0, 1] and store.built.sum() == 8
    direct = featurize_many([view[int(g)] for g in order[:8]], params, derivatives=True)
    for k, g in enumerate(order[:8]):
        np.testing.assert_allclose(store.features_of([g]), direct[k].features, rtol=1e-12, atol=1e-14)
        pi, pj, df = store.jacobian_of(int(g))
        assert np.array_equal(pi, direct[k].pair_i) and np.array_equal(pj, direct[k].pair_j)
        np.testing.assert_allclose(df, direct[k].dfeatures, rtol=1e-12, atol=1e-14)
        assert store.energies[g] == pytest.approx(view[int(g)].get_potential_energy())
        assert np.array_equal(store.numbers[store.atom_ids([g])], view[int(g)].numbers)
    # groups follow the store's order, and an image it does not hold is named
    groups = store.shard_ranges(order[[6, 1, 2]])
    assert [list(g) for g in groups] == [[order[1], order[2]], [order[6]]]
    with pytest.raises(DataError, match=f"image {order[9]} is not featurised"):
        store.features_of([order[9]])
    with pytest.raises(DataError, match="not featurised"):
        store.atom_ids(order[[1, 9]])


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


def test_recomputed_jacobians_give_the_stored_curve_from_a_store_without_them(oc20_file, small_config, tmp_path):
    from mfbo.training._shards import ShardSet

    view = open_images(oc20_file)
    train_view, val_view = split_train_val(view, 0.25, seed=small_config.seed)
    stored = train(small_config, train_view, val_view, data_fraction=0.75,
                   data=_stream(tmp_path / "a", jacobians="store"))
    recomputed = train(small_config, train_view, val_view, data_fraction=0.75,
                       data=_stream(tmp_path / "b", jacobians="recompute"))
    assert (stored.extra["jacobians"], recomputed.extra["jacobians"]) == ("store", "recompute")
    for a, b in zip(stored.curve, recomputed.curve, strict=True):
        for key in ("train_energy_mae", "train_force_mae_free", "val_energy_mae", "val_force_mae", "train_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-9), key
    (with_jac,) = (tmp_path / "a" / "shards").glob("*/*/manifest.json")
    (without,) = (tmp_path / "b" / "shards").glob("*/*/manifest.json")
    assert ShardSet(with_jac.parent, needed=()).has_jacobian and not ShardSet(without.parent, needed=()).has_jacobian
    size = {d: sum(f.stat().st_size for f in d.parent.rglob("*.npy")) for d in (with_jac, without)}
    assert size[without] < size[with_jac] / 20


def test_auto_jacobians_are_recomputed_when_their_store_would_pass_the_size_limit(oc20_file, small_config, tmp_path,
                                                                                  capsys):
    from mfbo.training._source import resolve_jacobian_mode

    params = gmp_params_of(small_config)
    pool, val = split_train_val(open_images(oc20_file), 0.25, seed=0)
    # 24 OC20 images with Jacobians take tens of MB.
    assert resolve_jacobian_mode(DataOptions(max_gb=10.0), [pool, val], params, tmp_path, say=True) == "store"
    assert capsys.readouterr().err == ""
    assert resolve_jacobian_mode(DataOptions(max_gb=0.001), [pool, val], params, tmp_path, say=True) == "recompute"
    said = capsys.readouterr().err
    assert "shards of 24 images would take about" in said and "recomputed per batch" in said
    # The limit it names stores them.
    limit = float(said.split("shard_max_gb = ")[1].split()[0])
    assert resolve_jacobian_mode(DataOptions(max_gb=limit), [pool, val], params, tmp_path) == "store"
    assert resolve_jacobian_mode(DataOptions(max_gb=10.0, jacobians="recompute"), [pool, val], params,
                                 tmp_path) == "recompute"
    with pytest.raises(ConfigError, match="shard_jacobians='disk'"):
        DataOptions(jacobians="disk")
