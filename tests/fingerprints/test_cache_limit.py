"""FingerprintCache size limit: least-recently-used eviction, sharing between processes, bad limits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule

from mfbo.errors import ConfigError
from mfbo.fingerprints import FingerprintCache, GMPParams, featurize_many
from mfbo.fingerprints._store import check_max_gb, evict, is_entry_name, resolve_limit, scan

REPO = Path(__file__).resolve().parents[2]
FP = {"MCSHs": {"0": {"groups": [1], "sigmas": [0.5, 1.0]}, "1": {"groups": [1], "sigmas": [1.0]}}, "cutoff": 5}
PARAMS = GMPParams.from_fp_params(FP)
PARAMS2 = GMPParams.from_fp_params({**FP, "cutoff": 4})


def _waters(n, start=0):
    """n distinct water molecules (the same size, so their entries are the same size)."""
    out = []
    for k in range(start, start + n):
        a = molecule("H2O")
        a.positions[0, 0] += 0.01 * k
        out.append(a)
    return out


def _entries(directory) -> dict[str, tuple[int, int]]:
    """path -> (mtime_ns, size) of every entry."""
    return {p: (m, s) for m, s, p in scan(directory).entries}


def _path(directory, params, atoms):
    return FingerprintCache(directory, max_gb=1).entry_path(atoms, params)


def _wait_for_evictions():
    """Join the background evictions of caches this test cannot reach (built inside a command)."""
    import threading

    for t in threading.enumerate():
        if t.name == "mfbo-cache-evict":
            t.join()


def _set_mtime(path, seconds_ago):
    t = time.time() - seconds_ago
    os.utime(path, (t, t))


def test_eviction_keeps_cache_under_limit_and_removes_least_recently_used_first(tmp_path):
    images = _waters(8)
    FingerprintCache(tmp_path, max_gb=float("inf")).featurize_many(images, PARAMS)
    old = sorted(_entries(tmp_path))
    assert len(old) == 8
    size = _entries(tmp_path)[old[0]][1]
    # Last use: image k was used 1000 - k s ago, then image 2 is read again (the most recent).
    hashes = [_path(tmp_path, PARAMS, a) for a in images]
    for k, p in enumerate(hashes):
        _set_mtime(p, 1000 - k)
    reader = FingerprintCache(tmp_path, max_gb=float("inf"))
    reader.featurize_many([images[2]], PARAMS)
    assert reader.hits == 1
    assert _entries(tmp_path)[str(hashes[2])][0] > _entries(tmp_path)[str(hashes[7])][0]

    # Another parameter set (a new trial) with room for 6.5 entries.
    limit_gb = 6.5 * size / 1e9
    bounded = FingerprintCache(tmp_path, max_gb=limit_gb)
    new_images = _waters(2, start=100)
    got = bounded.featurize_many(new_images, PARAMS2)
    bounded.wait()
    for x, y in zip(got, featurize_many(new_images, PARAMS2)):
        np.testing.assert_array_equal(x.features, y.features)
    left = _entries(tmp_path)
    total = sum(s for _, s in left.values())
    assert total <= limit_gb * 1e9
    assert bounded.evicted == 10 - len(left) > 0
    for a in new_images:  # what this process just wrote is kept
        assert str(_path(tmp_path, PARAMS2, a)) in left
    # The survivors among the old entries are the most recently used ones.
    by_recency = [str(hashes[k]) for k in (2, 7, 6, 5, 4, 3, 1, 0)]
    kept = [p for p in by_recency if p in left]
    assert kept == by_recency[: len(kept)]
    assert 1 <= len(kept) <= 4
    assert str(hashes[0]) not in left and str(hashes[1]) not in left


def test_read_marks_entry_as_recently_used(tmp_path):
    (a,) = _waters(1)
    FingerprintCache(tmp_path).featurize_many([a], PARAMS)
    path = _path(tmp_path, PARAMS, a)
    _set_mtime(path, 5 * 86400)
    before = path.stat().st_mtime
    FingerprintCache(tmp_path).featurize_many([a], PARAMS)
    assert path.stat().st_mtime > before + 4 * 86400


def test_entries_in_use_are_never_evicted(tmp_path):
    images = _waters(6)
    cache = FingerprintCache(tmp_path, max_gb=float("inf"))
    cache.featurize_many(images[:3], PARAMS)
    size = next(iter(_entries(tmp_path).values()))[1]
    small = FingerprintCache(tmp_path, max_gb=1.5 * size / 1e9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small.featurize_many(images, PARAMS)  # same parameter set: all six entries are in use
        small.wait()
    assert len(_entries(tmp_path)) == 6 and small.evicted == 0
    assert any("more than its limit" in str(w.message) for w in caught)
    # Switching to another parameter set releases them.
    small.featurize_many(images[:1], PARAMS2)
    small.wait()
    left = _entries(tmp_path)
    assert len(left) == 1 and str(_path(tmp_path, PARAMS2, images[0])) in left
    # The directory of the released parameter set went with its last entry.
    assert not (tmp_path / PARAMS.cache_key()[:32]).exists()


def test_evict_leaves_shard_stores_and_other_files(tmp_path):
    key = "0" * 32
    shard = tmp_path / "shards" / key / ("a" * 64 + ".npz")  # looks like an entry, lives in a shard store
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"x" * 1000)
    stray = tmp_path / key / "notes.txt"
    stray.parent.mkdir()
    stray.write_bytes(b"y" * 1000)
    entry = tmp_path / key / ("b" * 64 + ".jac.npz")
    entry.write_bytes(b"z" * 1000)
    for p in (shard, stray, entry):
        _set_mtime(p, 10 * 86400)
    result = evict(tmp_path, lambda total: 10.0)
    assert result.removed == 1 and not entry.exists()
    assert shard.exists() and stray.exists()


def test_concurrent_eviction_is_recomputed(tmp_path):
    """A second process keeps emptying the cache while this one featurises through it."""
    images = _waters(4) + [molecule("CH4")]
    direct = featurize_many(images, PARAMS, derivatives=True)
    stop = tmp_path / "stop"
    evictor = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\n"
            "from mfbo.fingerprints._store import clear\n"
            "n = 0\n"
            "while not os.path.exists(sys.argv[2]):\n"
            "    n += clear(sys.argv[1])[0]\n"
            "    time.sleep(0.001)\n"
            "print(n)\n",
            str(tmp_path / "cache"),
            str(stop),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        cache = FingerprintCache(tmp_path / "cache", max_gb=1.0)
        deadline = time.time() + 60
        rounds = 0
        while rounds < 30 or (cache.misses <= len(images) and time.time() < deadline):
            derivatives = rounds % 2 == 0
            got = cache.featurize_many(images, PARAMS, derivatives=derivatives)
            for x, y in zip(got, direct):
                np.testing.assert_array_equal(x.features, y.features)
                if derivatives:
                    np.testing.assert_array_equal(x.dfeatures, y.dfeatures)
            rounds += 1
    finally:
        stop.write_text("")
        out, _ = evictor.communicate(timeout=60)
    assert evictor.returncode == 0
    assert int(out.strip()) > 0  # the other process did remove entries this one had written
    assert cache.misses > len(images)  # ... and this one recomputed them


def test_entry_evicted_by_another_process_after_a_read_is_recomputed(tmp_path):
    images = _waters(3)
    cache = FingerprintCache(tmp_path)
    first = cache.featurize_many(images, PARAMS)
    cache.featurize_many(images, PARAMS)
    assert cache.hits == 3
    r = subprocess.run(
        [sys.executable, "-m", "mfbo.cli", "cache", "clear", "--yes", "--dir", str(tmp_path)],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert not _entries(tmp_path)
    again = cache.featurize_many(images, PARAMS)
    assert cache.misses == 6
    for x, y in zip(again, first):
        np.testing.assert_array_equal(x.features, y.features)
    assert len(_entries(tmp_path)) == 3


def test_limit_sources(tmp_path, monkeypatch):
    import shutil

    monkeypatch.delenv("MFBO_CACHE_MAX_GB", raising=False)
    free = shutil.disk_usage(tmp_path).free
    limit, source = resolve_limit(None, tmp_path / "not-yet", 10**9)
    assert source == "default"
    assert limit == pytest.approx(min(20e9, (10**9 + free) / 2), rel=1e-3)
    monkeypatch.setenv("MFBO_CACHE_MAX_GB", "1.5")
    assert resolve_limit(None, tmp_path, 0) == (1.5e9, "MFBO_CACHE_MAX_GB")
    assert resolve_limit(3, tmp_path, 0) == (3e9, "max_gb")
    monkeypatch.setenv("MFBO_CACHE_MAX_GB", "lots")
    with pytest.raises(ConfigError, match="MFBO_CACHE_MAX_GB"):
        FingerprintCache(tmp_path)


@pytest.mark.parametrize("bad", [0, -1, "abc", True, float("nan"), [1]])
def test_bad_limits_are_rejected_naming_the_key(bad, tmp_path):
    with pytest.raises(ConfigError, match="cache_max_gb must be a positive number"):
        check_max_gb(bad, "cache_max_gb")
    with pytest.raises(ConfigError, match="max_gb"):
        FingerprintCache(tmp_path, max_gb=bad)


def test_objective_option_rejects_bad_limit_and_passes_a_good_one(tmp_path):
    import pickle

    from mfbo.objectives import BuiltinObjective

    with pytest.raises(ConfigError, match="cache_max_gb"):
        BuiltinObjective("train.traj", cache_max_gb=-2)
    objective = pickle.loads(pickle.dumps(BuiltinObjective("train.traj", cache_dir=tmp_path, cache_max_gb="2.5")))
    backing = objective.fingerprint_cache().backing
    assert backing.max_gb == 2.5 and backing.directory == tmp_path


def test_run_file_rejects_bad_limit(tmp_path, capsys):
    from mfbo.cli import main

    run = tmp_path / "run.json"
    run.write_text('{"train": "x.traj", "cache_dir": "c", "cache_max_gb": "big", "output": "out"}')
    assert main(["train", str(run)]) == 2
    err = capsys.readouterr().err
    assert "run.json" in err and "cache_max_gb must be a positive number" in err
    assert not (tmp_path / "out").exists()  # refused before anything is written
    run.write_text('{"train": "x.traj", "cache_max_gb": 2, "output": "out"}')
    assert main(["train", str(run)]) == 2
    assert "cache_max_gb limits the fingerprint cache" in capsys.readouterr().err


def test_entry_names():
    assert is_entry_name("a" * 64 + ".npz") and is_entry_name("0" * 64 + ".jac.npz")
    assert not is_entry_name("params.json") and not is_entry_name(".tmp-x.npz")


def test_run_file_limit_reaches_the_cache(tmp_path, capsys):
    import json

    from ase.io import read, write

    from mfbo.cli import main
    from mfbo.datasets import WATER

    write(tmp_path / "water.traj", read(str(WATER), index=":8"))
    run = {"train": "water.traj", "fp_params": FP, "epochs": 1, "num_nodes": 4, "num_layers": 1,
           "batch_size": 4, "val_fraction": 0.25, "output": "out", "cache_dir": "c", "cache_max_gb": 0.5}
    (tmp_path / "run.json").write_text(json.dumps(run))
    assert main(["train", str(tmp_path / "run.json"), "--no-progress"]) == 0, capsys.readouterr().err
    assert len(_entries(tmp_path / "c")) == 8
    # A limit smaller than one entry: the run's own entries are kept, with a warning.
    run.update(cache_dir="d", cache_max_gb=1e-9)
    (tmp_path / "run.json").write_text(json.dumps(run))
    with pytest.warns(UserWarning, match="more than its limit"):
        assert main(["train", str(tmp_path / "run.json"), "--no-progress"]) == 0
        _wait_for_evictions()
    assert len(_entries(tmp_path / "d")) == 8


def test_background_eviction_failure_reaches_the_caller(tmp_path, monkeypatch):
    import mfbo.fingerprints._cache as cache_module

    def broken(*args, **kwargs):
        raise PermissionError("no access")

    monkeypatch.setattr(cache_module, "evict", broken)
    cache = FingerprintCache(tmp_path, max_gb=1)
    with pytest.warns(UserWarning, match="eviction failed: no access"):
        got = cache.featurize_many(_waters(2), PARAMS)  # the featurisation itself succeeds
        cache.wait()
    assert len(got) == 2 and len(_entries(tmp_path)) == 2
    # A warning turned into an error by the filters is raised in the caller's thread.
    monkeypatch.setattr(cache_module, "evict", evict)
    small = FingerprintCache(tmp_path / "small", max_gb=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small.featurize_many(_waters(1), PARAMS)
        with pytest.raises(UserWarning, match="more than its limit"):
            small.wait()
