"""`mfbo cache info|clear` and `mfbo fingerprint --cache-max-gb` through the real CLI in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ase.build import molecule
from ase.io import write

from mfbo.fingerprints import FingerprintCache, GMPParams

REPO = Path(__file__).resolve().parents[2]
FP = {"MCSHs": {"0": {"groups": [1], "sigmas": [0.5, 1.0]}}, "cutoff": 5}


def _mfbo(*args, cwd, env=None):
    return subprocess.run(
        [sys.executable, "-m", "mfbo.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})},
    )


@pytest.fixture
def filled(tmp_path):
    """A cache with 3 entries (one last used 10 days ago) and a shard store beside them."""
    d = tmp_path / "cache"
    params = GMPParams.from_fp_params(FP)
    imgs = [molecule("H2O"), molecule("CH4"), molecule("NH3")]
    cache = FingerprintCache(d)
    cache.featurize_many(imgs, params)
    old = cache.entry_path(imgs[0], params)
    t = time.time() - 10 * 86400
    os.utime(old, (t, t))
    shard = d / "shards" / "f" / "part-0.npz"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b"s" * 5000)
    return d, old


def test_info_json_counts_entries_size_and_limit(filled):
    d, _ = filled
    r = _mfbo("cache", "info", "--json", "--dir", d, cwd=d.parent, env={"MFBO_CACHE_MAX_GB": "2.5"})
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    entries = [p for p in d.rglob("*.npz") if "shards" not in p.parts]
    assert info["entries"] == len(entries) == 3
    assert info["size_bytes"] == sum(p.stat().st_size for p in entries)
    assert info["limit_gb"] == 2.5 and info["limit_source"] == "MFBO_CACHE_MAX_GB"
    assert info["directory"] == str(d) and info["parameter_sets"] == 1
    assert info["shards"]["size_gb"] == pytest.approx(5000 / 1e9)
    text = _mfbo("cache", "info", "--dir", d, cwd=d.parent)
    assert text.returncode == 0, text.stderr
    assert f"location: {d}" in text.stdout and "entries: 3 in 1 parameter set" in text.stdout
    assert "default: min(20 GB" in text.stdout and "shard stores" in text.stdout


def test_clear_asks_for_yes_then_honours_older_than(filled):
    d, old = filled
    r = _mfbo("cache", "clear", "--dir", d, cwd=d.parent)
    assert r.returncode == 2 and "pass --yes" in r.stderr and "3 entries" in r.stderr
    assert len(list(d.glob("*/*.npz"))) == 3
    r = _mfbo("cache", "clear", "--yes", "--older-than", "5", "--dir", d, cwd=d.parent)
    assert r.returncode == 0, r.stderr
    assert "removed 1 entries" in r.stdout
    assert not old.exists() and len(list(d.glob("*/*.npz"))) == 2
    r = _mfbo("cache", "clear", "--yes", "--dir", d, cwd=d.parent)
    assert r.returncode == 0, r.stderr
    assert "removed 2 entries" in r.stdout
    assert not list(d.glob("*/*.npz"))
    assert (d / "shards" / "f" / "part-0.npz").exists()  # shard stores are not the cache's to clear
    r = _mfbo("cache", "clear", "--yes", "--dir", d, cwd=d.parent)
    assert r.returncode == 0 and "nothing to remove" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("cache", "clear", "--yes", "--older-than", "-1"), "--older-than must be a number of days >= 0"),
        (("cache", "clear", "--yes", "--older-than", "soon"), "--older-than must be a number of days >= 0"),
        (("cache", "info", "--dir", "afile"), "--dir afile is a file"),
    ],
)
def test_cache_command_rejects_bad_values(tmp_path, args, message):
    (tmp_path / "afile").write_text("")
    r = _mfbo(*args, cwd=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_fingerprint_cache_max_gb(tmp_path):
    write(tmp_path / "in.extxyz", [molecule("H2O")])
    (tmp_path / "params.json").write_text(json.dumps(FP))
    base = ("fingerprint", "in.extxyz", "--params", "params.json", "--out", "o.npz")
    r = _mfbo(*base, "--cache-dir", "c", "--cache-max-gb", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--cache-max-gb must be a positive number" in r.stderr
    r = _mfbo(*base, "--cache-max-gb", "1", cwd=tmp_path)
    assert r.returncode == 2 and "add --cache-dir" in r.stderr
    r = _mfbo(*base, "--cache-dir", "c", cwd=tmp_path, env={"MFBO_CACHE_MAX_GB": "-3"})
    assert r.returncode == 2 and "MFBO_CACHE_MAX_GB='-3'" in r.stderr
    r = _mfbo(*base, "--cache-dir", "c", "--cache-max-gb", "0.5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "c").glob("*/*.npz"))) == 1
