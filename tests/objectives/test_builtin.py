"""BuiltinObjective: the contract, pickling, and fingerprints computed once per parameter set."""

import pickle

import pytest

from mfbo.errors import ObjectiveError, TrainingDiverged
from tests.training.conftest import SMALL_FP, needs_fingerprints

pytestmark = needs_fingerprints


@pytest.fixture(scope="module")
def water_file(tmp_path_factory):
    from ase.io import read, write

    from mfbo.datasets import WATER

    d = tmp_path_factory.mktemp("data")
    images = read(str(WATER), index=":40")
    write(d / "train.traj", images[:16])
    write(d / "val.traj", images[30:34])
    return d


def _objective(water_file, tmp_path, **kw):
    from mfbo.objectives import get_objective
    from mfbo.training import TrainConfig

    base = TrainConfig(fp_params=SMALL_FP, num_layers=2, num_nodes=8, batch_size=4, epochs=4, lr=1e-2)
    return get_objective("builtin", train=water_file / "train.traj", val=water_file / "val.traj",
                         base_config=base, cache_dir=tmp_path / "cache", **kw)


def test_evaluate_contract(water_file, tmp_path):
    from mfbo.objectives import RECORD_KEYS, check_evaluation

    obj = _objective(water_file, tmp_path)
    out = check_evaluation(obj.evaluate({"lr": 5e-3, "num_nodes": 6}, 0.5, 3), 3)
    assert len(out["curve"]) == 3 and len(out["records"]) == 3
    assert out["curve"] == [r["val_energy_mae_per_atom"] for r in out["records"]]
    assert set(RECORD_KEYS) <= set(out["records"][0])
    assert out["cost"] > 0 and out["metadata"]["n_train"] == 8 and out["metadata"]["n_val"] == 4
    assert out["metadata"]["train_config"]["num_nodes"] == 6
    weighted = _objective(water_file, tmp_path, metric={"val_energy_mae": 1.0, "val_force_mae": 0.5})
    res = weighted.evaluate({}, 0.25, 2)
    rec = res["records"][-1]
    assert res["curve"][-1] == pytest.approx(rec["val_energy_mae"] + 0.5 * rec["val_force_mae"])


def test_network_changes_never_featurise_again(water_file, tmp_path):
    obj = _objective(water_file, tmp_path)
    obj.evaluate({"num_nodes": 4}, 1.0, 1)
    first = obj.fingerprint_cache().backing
    assert first.misses == 20  # 16 training + 4 validation images, featurised once
    worker = pickle.loads(pickle.dumps(obj))  # what a worker process receives
    assert worker._loaded is None and worker._cache is None
    worker.evaluate({"num_nodes": 12, "lr": 1e-3, "batch_size": 8, "activation": "silu"}, 0.5, 1)
    worker.evaluate({"num_layers": 1}, 1.0, 1)
    assert worker.fingerprint_cache().backing.misses == 0
    worker.evaluate({"cutoff": 4.0}, 1.0, 1)  # a fingerprint parameter does featurise
    assert worker.fingerprint_cache().backing.misses == 20


def test_divergence_and_missing_force_metric(water_file, tmp_path):
    obj = _objective(water_file, tmp_path)
    with pytest.raises(TrainingDiverged):
        obj.evaluate({"lr": 1e8, "batch_size": 2}, 1.0, 30)
    energy_only = _objective(water_file, tmp_path, metric="val_force_mae")
    energy_only.base_config["get_forces"] = False
    with pytest.raises(ObjectiveError, match="val_force_mae"):
        energy_only.evaluate({}, 0.5, 1)


def test_data_options_stream_files_and_keep_small_data_in_memory(water_file, tmp_path):
    """"auto" keeps small data in memory; "stream" reads the shards under <cache_dir>/shards and
    gives the in-memory curve; a bad option or streamed lists of Atoms fail with one line."""
    from ase.io import read

    from mfbo.errors import ConfigError

    params = {"lr": 5e-3, "num_nodes": 6}
    memory = _objective(water_file, tmp_path).evaluate(params, 0.5, 2)
    auto = _objective(water_file, tmp_path, data="auto").evaluate(params, 0.5, 2)
    streamed = pickle.loads(pickle.dumps(_objective(water_file, tmp_path, data={"mode": "stream", "workers": 1})))
    stream = streamed.evaluate(params, 0.5, 2)
    assert memory["metadata"]["data_mode"] == auto["metadata"]["data_mode"] == "memory"
    assert stream["metadata"]["data_mode"] == "stream"
    assert stream["curve"] == pytest.approx(memory["curve"], rel=1e-9)
    assert list((tmp_path / "cache" / "shards").glob("*/*/shard-*"))
    with pytest.raises(ConfigError, match="data_mode='disk' must be one of"):
        _objective(water_file, tmp_path, data="disk")
    from mfbo.objectives import get_objective

    images = read(str(water_file / "train.traj"), index=":")
    obj = get_objective("builtin", train=images[:12], val=images[12:], data="stream")
    with pytest.raises(ConfigError, match="train must be a file path"):
        obj.evaluate(params, 0.5, 1)


def test_processes_train_each_trial_data_parallel_under_torchrun(water_file, tmp_path, monkeypatch):
    from mfbo.errors import ConfigError

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", ":".join(filter(None, [str(__import__("pathlib").Path.cwd()),
                                                             __import__("os").environ.get("PYTHONPATH")])))
    one = _objective(water_file, tmp_path).fit({"batch_size": 8}, 1.0, 3, test=False)
    obj = _objective(water_file, tmp_path, processes=2)
    assert obj.describe()["processes"] == 2
    two = obj.fit({"batch_size": 4}, 1.0, 3, test=False)  # 2 processes x 4 = the steps of one at 8
    assert two.extra["epochs"] == 3 and two.n_train == 16
    for a, b in zip(one.curve, two.curve):
        assert b["val_energy_mae_per_atom"] == pytest.approx(a["val_energy_mae_per_atom"], rel=1e-8)
    out = pickle.loads(pickle.dumps(obj)).evaluate({"batch_size": 4}, 0.5, 2)  # what a study worker runs
    assert len(out["curve"]) == 2 and out["metadata"]["n_train"] == 8
    with pytest.raises(TrainingDiverged):  # rank 0's exception reaches the caller as itself
        obj.evaluate({"lr": 1e8, "batch_size": 2}, 1.0, 30)
    with pytest.raises(ConfigError, match="processes"):
        _objective(water_file, tmp_path, processes=0)
    with pytest.raises(ConfigError, match="on_epoch"):
        obj.fit({}, 1.0, 1, on_epoch=print)
