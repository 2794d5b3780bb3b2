"""The shard store: written once, reused without recomputation, equal to direct featurisation."""

from pathlib import Path

import numpy as np
import pytest
from ase.io import read, write

from mfbo.datasets import OC20_TRAIN_POOL
from mfbo.errors import ConfigError, DataError
from mfbo.training import open_images
from mfbo.training._featurize import gmp_params_of
from mfbo.training._shards import ShardSet, build_shards
from tests.helpers import process_gone
from tests.training.conftest import SMALL_FP, needs_fingerprints

pytestmark = needs_fingerprints


@pytest.fixture
def params():
    from mfbo.training import TrainConfig

    return gmp_params_of(TrainConfig(fp_params=SMALL_FP))


@pytest.fixture(scope="module")
def oc20_eleven():
    return read(str(OC20_TRAIN_POOL), index=":11")


def _counting(monkeypatch):
    import mfbo.training._shards as shards

    calls = []
    real = shards._featurize

    def counted(images, params, derivatives):
        calls.append(len(images))
        return real(images, params, derivatives)

    monkeypatch.setattr(shards, "_featurize", counted)
    return calls


def test_shards_equal_direct_featurisation_and_are_reused(tmp_path, oc20_eleven, params, monkeypatch):
    from mfbo.fingerprints import featurize_many

    write(tmp_path / "d.traj", oc20_eleven)
    images = open_images(tmp_path / "d.traj")
    calls = _counting(monkeypatch)
    store = build_shards(images, params, tmp_path / "shards", derivatives=True, require_forces=True, shard_size=4)
    assert calls == [4, 4, 3] and len(store.shards) == 3 and store.n_images == 11
    # (Featurised in other batches than here: equal to rounding.)
    direct = featurize_many(oc20_eleven, params, derivatives=True)
    close = dict(rtol=1e-12, atol=1e-14)
    for g in (0, 5, 10):
        np.testing.assert_allclose(store.features_of([g]), direct[g].features, **close)
        pi, pj, df = store.jacobian_of(g)
        assert np.array_equal(pi, direct[g].pair_i) and np.array_equal(pj, direct[g].pair_j)
        np.testing.assert_allclose(df, direct[g].dfeatures, **close)
    np.testing.assert_allclose(store.features_of([9, 2]), np.concatenate([direct[9].features, direct[2].features]),
                               **close)
    assert np.allclose(store.energies, [a.get_potential_energy() for a in oc20_eleven])
    # A second call (another run, another fidelity) computes nothing; a different shard size
    # asked for later keeps the store's own.
    again = build_shards(images, params, tmp_path / "shards", derivatives=True, shard_size=5)
    assert calls == [4, 4, 3] and again.directory == store.directory and again.shard_size == 4
    # Values-only and other parameters are separate stores.
    build_shards(images, params, tmp_path / "shards", derivatives=False, shard_size=4)
    assert calls == [4, 4, 3, 4, 4, 3]


def test_a_missing_shard_is_recomputed_alone(tmp_path, oc20_eleven, params, monkeypatch):
    import shutil

    write(tmp_path / "d.traj", oc20_eleven)
    images = open_images(tmp_path / "d.traj")
    store = build_shards(images, params, tmp_path / "s", derivatives=True, shard_size=4)
    shutil.rmtree(store.directory / "shard-00001")
    with pytest.raises(DataError, match="lacks shard-00001"):
        ShardSet(store.directory)
    calls = _counting(monkeypatch)
    build_shards(images, params, tmp_path / "s", derivatives=True, shard_size=4)
    assert calls == [4]


def test_missing_energy_or_forces_name_the_file_and_image(tmp_path, oc20_eleven, params):
    from ase.calculators.singlepoint import SinglePointCalculator

    images = [a.copy() for a in oc20_eleven[:3]]
    for a, b in zip(images, oc20_eleven[:3]):
        a.calc = SinglePointCalculator(a, energy=b.get_potential_energy(), forces=b.get_forces())
    images[2].calc = SinglePointCalculator(images[2], energy=1.0)
    write(tmp_path / "noforce.traj", images)
    with pytest.raises(DataError, match=r"noforce\.traj: image 2 has no forces"):
        build_shards(open_images(tmp_path / "noforce.traj"), params, tmp_path / "s", derivatives=True,
                     require_forces=True)
    with pytest.raises(ConfigError, match="workers"):
        build_shards(open_images(tmp_path / "noforce.traj"), params, tmp_path / "s", derivatives=True, workers=0)


def _arrays(store):
    return {(p.parent.name, p.name): np.load(p) for p in sorted(store.directory.glob("shard-*/*.npy"))}


def test_the_caller_featurises_beside_its_workers_and_resumes(tmp_path, oc20_eleven, params, monkeypatch):
    """workers=2: this process and one spawned worker share the shards; the store equals the
    one-process store, and a rerun computes only the missing shards."""
    import shutil

    import torch

    write(tmp_path / "d.traj", oc20_eleven)
    images = open_images(tmp_path / "d.traj")
    alone = build_shards(images, params, tmp_path / "one", derivatives=True, require_forces=True, shard_size=2)
    calls = _counting(monkeypatch)  # counts what this process featurises (not the worker)
    threads = torch.get_num_threads()
    shared = build_shards(images, params, tmp_path / "two", derivatives=True, require_forces=True, shard_size=2,
                          workers=2)
    assert torch.get_num_threads() == threads
    # The caller starts at once, while the worker is still importing torch: it takes the first shards.
    assert calls[:1] == [2] and sum(calls) <= 11
    reference = _arrays(alone)
    got = _arrays(shared)
    assert got.keys() == reference.keys() and len({k[0] for k in got}) == 6
    for key, value in reference.items():
        assert np.array_equal(got[key], value), key
    for name in ("shard-00001", "shard-00004"):
        shutil.rmtree(shared.directory / name)
    kept = {p.name: (p / "features.npy").stat() for p in shared.directory.glob("shard-*")}
    calls.clear()
    again = build_shards(images, params, tmp_path / "two", derivatives=True, require_forces=True, shard_size=2,
                         workers=2)
    assert sum(calls) <= 4  # only the two missing shards, here or in the worker
    for name, stat in kept.items():
        now = (again.directory / name / "features.npy").stat()
        assert (now.st_ino, now.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)
    got = _arrays(again)
    assert got.keys() == reference.keys() and not list(again.directory.glob(".tmp-*"))
    for key, value in reference.items():
        assert np.array_equal(got[key], value), key


def test_a_worker_that_cannot_start_gives_a_clear_error(tmp_path, oc20_eleven):
    """A script without a __main__ guard: its spawned worker re-runs it and cannot start one itself."""
    import subprocess
    import sys

    write(tmp_path / "d.traj", oc20_eleven)
    script = tmp_path / "unguarded.py"
    script.write_text(
        "from mfbo.training import TrainConfig, open_images\n"
        "from mfbo.training._featurize import gmp_params_of\n"
        "from mfbo.training._shards import build_shards\n"
        "from tests.training.conftest import SMALL_FP\n"
        "import multiprocessing, time\n"
        "import mfbo.training._shards as shards\n"
        "real = shards._featurize\n"
        "def slow(*args):  # this process stays busy until its worker's failure has arrived\n"
        "    time.sleep(2.0)\n"
        "    return real(*args)\n"
        "if multiprocessing.parent_process() is None:\n"
        "    shards._featurize = slow\n"
        f"build_shards(open_images({str(tmp_path / 'd.traj')!r}), gmp_params_of(TrainConfig(fp_params=SMALL_FP)),\n"
        f"             {str(tmp_path / 's')!r}, derivatives=True, shard_size=1, workers=2)\n"
    )
    import os

    from mfbo.training._cli import __file__ as cli_file

    repo = str(Path(cli_file).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert proc.returncode != 0
    assert "TrainingError: a featurisation worker process died or could not start" in proc.stderr, proc.stderr


def test_a_bad_image_stops_the_shared_featurisation_with_its_name(tmp_path, oc20_eleven, params, monkeypatch):
    """workers=2: whichever process meets the image without an energy, the error names the file and
    image; the other shards are complete or absent, none half-written."""
    import time

    from ase.calculators.singlepoint import SinglePointCalculator

    import mfbo.training._shards as shards

    images = [a.copy() for a in oc20_eleven]
    for a, b in zip(images, oc20_eleven):
        a.calc = SinglePointCalculator(a, energy=b.get_potential_energy(), forces=b.get_forces())
    images[9].calc = SinglePointCalculator(images[9], forces=oc20_eleven[9].get_forces())
    write(tmp_path / "bad.traj", images)
    real = shards._featurize

    def slow(*args):  # this process slower than its worker, so both meet shards
        time.sleep(0.3)
        return real(*args)

    monkeypatch.setattr(shards, "_featurize", slow)
    with pytest.raises(DataError, match=r"bad\.traj: image 9 has no energy"):
        build_shards(open_images(tmp_path / "bad.traj"), params, tmp_path / "s", derivatives=True, shard_size=1,
                     workers=2)
    store = next((tmp_path / "s").glob("*/*-jac"))
    assert not list(store.glob(".tmp-*"))
    assert all((p / "features.npy").is_file() for p in store.glob("shard-*"))
    assert not (store / "shard-00009").exists()


def test_shard_stores_are_kept_under_a_size_limit_least_recently_used_first(tmp_path, oc20_eleven, params):
    import os
    import time

    from mfbo.training._shards import bound_shard_root, mark_in_use

    write(tmp_path / "d.traj", oc20_eleven)
    images = open_images(tmp_path / "d.traj")
    root = tmp_path / "shards"
    stores = []
    for k in range(3):  # three image orders of one file: three stores of about the same size
        order = np.roll(np.arange(11), k)
        stores.append(build_shards(images, params, root, derivatives=True, shard_size=4, order=order).directory)
    for k, d in enumerate(stores):  # least recently used first: stores[0]
        stamp = time.time() - 100 + k
        (d / "last-used").touch()
        os.utime(d / "last-used", (stamp, stamp))
    mark_in_use([stores[2]])
    size = bound_shard_root(root, max_gb=1e3)["bytes"]
    assert all(d.is_dir() for d in stores)  # under the limit: nothing removed
    # room for about one and a half stores: the least recently used goes first, then the next;
    # the store this process uses stays
    out = bound_shard_root(root, max_gb=size / 3 * 1.6 / 1e9)
    assert out["removed"] == [str(stores[0]), str(stores[1])]
    assert not stores[0].exists() and not stores[1].exists() and stores[2].is_dir()
    # a store another live process marked is kept even over the limit; a dead process's mark is not
    again = build_shards(images, params, root, derivatives=True, shard_size=4, order=np.roll(np.arange(11), 0)).directory
    (again / f".in-use-{os.getppid()}").touch()
    mark_in_use([])  # this process no longer uses stores[2]
    (stores[2] / ".in-use-999999999").touch()
    out = bound_shard_root(root, max_gb=1e-9)
    assert out["removed"] == [str(stores[2])] and again.is_dir()
    ShardSet(again)  # intact


_ORPHAN_SCRIPT = """
import multiprocessing, sys, time
from pathlib import Path

def grandchild(path):
    from mfbo._orphan import exit_when_orphaned
    exit_when_orphaned(0.05)
    Path(path).write_text("started")
    time.sleep(600)

if __name__ == "__main__":
    p = multiprocessing.get_context("spawn").Process(target=grandchild, args=(sys.argv[1],))
    p.start()
    print(p.pid, flush=True)
    time.sleep(600)
"""


def test_a_featurisation_worker_exits_when_its_parent_is_killed(tmp_path):
    """A pool worker whose trial process was killed does not wait for shards for ever."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN_SCRIPT)
    flag = tmp_path / "started"
    parent = subprocess.Popen([sys.executable, str(script), str(flag)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    deadline = time.monotonic() + 120  # hang guards, not timing assertions
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert flag.exists(), "the worker never started"
    parent.kill()
    parent.wait()
    gone = process_gone(worker)
    if not gone:
        os.kill(worker, signal.SIGKILL)
    assert gone, "the orphaned worker kept running"
