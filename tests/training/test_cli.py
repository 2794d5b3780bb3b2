"""`mfbo train CONFIG` in a subprocess."""

import json
import subprocess
import sys

from tests.training.conftest import SMALL_FP, needs_fingerprints

pytestmark = needs_fingerprints


def _run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "mfbo.cli", "train", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_train_cli_toml_writes_model_and_record(tmp_path):
    import tomli_w
    from ase.io import read, write

    from mfbo.datasets import WATER

    images = read(str(WATER), index=":24")
    write(tmp_path / "water.traj", images)
    run = {"train": "water.traj", "test": "water.traj", "fp_params": SMALL_FP, "epochs": 3, "num_nodes": 8,
           "num_layers": 2, "batch_size": 4, "lr": 0.01, "val_fraction": 0.25, "output": "out"}
    (tmp_path / "run.toml").write_text(tomli_w.dumps(run))
    proc = _run("run.toml", "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "val E (eV/atom)" in proc.stdout and "test (24 images)" in proc.stdout
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert record["status"] == "completed" and len(record["curve"]) == 3
    assert record["n_train"] == 18 and record["n_val"] == 6
    assert (tmp_path / "out" / "model.npz").is_file()
    from mfbo.training import TrainedModel

    model = TrainedModel.load(tmp_path / "out" / "model.npz")
    assert model.config.num_nodes == 8


def test_train_cli_bad_inputs(tmp_path, capsys, monkeypatch):
    (tmp_path / "bad.json").write_text(json.dumps({"train": "missing.traj"}))
    proc = _run("bad.json", cwd=tmp_path)
    assert proc.returncode == 2
    assert "missing.traj" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    # The same dispatcher in-process (each subprocess pays the torch import).
    from mfbo.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "typo.json").write_text(json.dumps({"train": "x.traj", "num_nodez": 3}))
    assert main(["train", "typo.json"]) == 2
    assert "num_nodez" in capsys.readouterr().err
    (tmp_path / "broken.toml").write_text("train = [")
    assert main(["train", "broken.toml"]) == 2
    assert "broken.toml" in capsys.readouterr().err
    assert main(["train", "nothing-here.toml"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_train_cli_divergence_keeps_the_record(tmp_path, capsys, monkeypatch):
    from ase.io import read, write

    from mfbo.cli import main
    from mfbo.datasets import WATER

    write(tmp_path / "w.traj", read(str(WATER), index=":20"))
    run = {"train": "w.traj", "fp_params": SMALL_FP, "epochs": 30, "lr": 1e8, "batch_size": 2,
           "num_layers": 2, "num_nodes": 8, "output": "div"}
    (tmp_path / "div.json").write_text(json.dumps(run))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "div.json", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "diverged at epoch" in err and len(err.strip().splitlines()) == 1
    record = json.loads((tmp_path / "div" / "record.json").read_text())
    assert record["status"] == "diverged" and record["epoch"] >= 1


def test_train_cli_streams_and_resumes_a_killed_featurisation(tmp_path):
    """`mfbo train` with data_mode = "stream", killed (SIGKILL) while featurising, then run again:
    the shards finished before the kill are reused as they are, the rest computed (2 processes)."""
    import os
    import signal
    import time

    import tomli_w
    from ase.io import read, write

    from mfbo.datasets import OC20_TRAIN_POOL

    write(tmp_path / "pool.traj", read(str(OC20_TRAIN_POOL), index=":160"))
    write(tmp_path / "test.traj", read(str(OC20_TRAIN_POOL), index="164:168"))  # 166 holds Mo, absent before
    # The default 20 fingerprints with Jacobians: slow enough (tens of ms per image) to kill midway.
    run = {"train": "pool.traj", "test": "test.traj", "epochs": 1, "num_layers": 1, "num_nodes": 4, "val_fraction": 0.1,
           "data_mode": "stream", "shard_dir": "shards", "shard_size": 5, "featurize_workers": 1, "output": "out"}
    (tmp_path / "run.toml").write_text(tomli_w.dumps(run))
    proc = subprocess.Popen([sys.executable, "-m", "mfbo.cli", "train", "run.toml", "--no-progress"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(tmp_path.glob("shards/*/*/shard-*"))) >= 3:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = {p.name: (p / "features.npy").stat() for p in tmp_path.glob("shards/*/*/shard-*")}
    assert 3 <= len(done) < 32, "the featurisation was not killed midway"
    run["featurize_workers"] = 2
    (tmp_path / "run.toml").write_text(tomli_w.dumps(run))
    proc = subprocess.run([sys.executable, "-m", "mfbo.cli", "train", "run.toml"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(done)} of 32 shards of pool.traj already on disk; computing {32 - len(done)} with 2" in proc.stderr
    assert "fingerprints: 160/160 images" in proc.stderr  # plain progress lines when stderr is not a terminal
    shards = list(tmp_path.glob("shards/*/*/shard-*"))
    assert len(shards) == 32 and not list(tmp_path.glob("shards/*/*/.tmp-*"))
    for path in shards:
        if path.name in done:  # untouched: neither rewritten nor replaced
            stat = (path / "features.npy").stat()
            assert (stat.st_ino, stat.st_mtime_ns) == (done[path.name].st_ino, done[path.name].st_mtime_ns)
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert record["status"] == "completed" and record["data_mode"] == "stream"
    assert record["n_train"] == 144 and record["n_val"] == 16
    # The test baselines are fitted on the labels read back from the shards.
    assert record["test_baselines"]["n_images"] == 4 and record["test_metrics"]["n_images"] == 4
    from mfbo.training import TrainConfig, split_train_val, unseen_elements

    pool, _ = split_train_val(read(str(tmp_path / "pool.traj"), index=":"), 0.1, TrainConfig().seed)
    expected = unseen_elements(pool, read(str(tmp_path / "test.traj"), index=":"))
    assert expected == ["Mo"] and record["unseen_test_elements"] == expected
