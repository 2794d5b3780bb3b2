"""Data-parallel training over real processes (torch.distributed, gloo on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mfbo.errors import ConfigError
from mfbo.training._distributed import (
    DistributedContext,
    distributed_from_env,
    free_port,
    torchrun_command,
    torchrun_env,
)

from .conftest import SMALL_FP, needs_fingerprints

# One rank of a data-parallel run: trains on the given images and, on rank 0, saves the weights.
RANK_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from ase.io import read
    from mfbo.training import TrainConfig, train

    cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
    result = train(cfg, read(sys.argv[2], ":"), read(sys.argv[3], ":"))
    state = {k: v.numpy() for k, v in result.model.network.state_dict().items()}
    np.savez(sys.argv[4], curve=json.dumps(result.curve), **state)
    """
)


def _torch_env(tmp_path, **extra) -> dict:
    env = torchrun_env()
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    return env


def test_environment_is_read_as_torchrun_writes_it():
    assert distributed_from_env({}) is None
    assert distributed_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    ctx = distributed_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert ctx == DistributedContext(rank=3, world_size=4, local_rank=1) and not ctx.is_main
    with pytest.raises(ConfigError, match="RANK=4 is outside 0..3"):
        distributed_from_env({"WORLD_SIZE": "4", "RANK": "4"})
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"):
        distributed_from_env({"WORLD_SIZE": "two"})


def test_every_process_takes_the_same_number_of_steps_and_every_batch_is_trained():
    batches = [[i] for i in range(7)]
    shares = [DistributedContext(r, 3, r).my_batches(batches) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    assert shares[0] == [[0], [3], [6]] and shares[1] == [[1], [4], [0]] and shares[2] == [[2], [5], [1]]
    assert {b[0] for s in shares for b in s} == set(range(7))


@needs_fingerprints
def test_two_processes_take_the_step_of_one_batch_twice_as_large(tmp_path, water):
    from ase.io import write

    from mfbo.training import TrainConfig, train

    # Equal-size images and a batch count that divides evenly: the identity is exact, not approximate.
    train_images, val_images = water[:16], water[16:20]
    assert len({len(a) for a in train_images}) == 1
    write(tmp_path / "train.traj", train_images)
    write(tmp_path / "val.traj", val_images)
    base = dict(fp_params=SMALL_FP, num_layers=2, num_nodes=8, epochs=3, lr=1e-2, scheduler="cosine",
                warmup_epochs=1, keep_best=True, force_coefficient=1.0, num_threads=1,
                # weight decay enters the gradient unscaled, so Adam cannot hide a wrongly scaled average
                weight_decay=0.05)
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    env = _torch_env(tmp_path, WORLD_SIZE="2")
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), json.dumps({**base, "batch_size": 2}), str(tmp_path / "train.traj"),
             str(tmp_path / "val.traj"), str(tmp_path / f"rank{r}.npz")],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs

    single = train(TrainConfig(**base, batch_size=4), train_images, val_images, distributed=False)
    ranks = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    for name, value in single.model.network.state_dict().items():
        for r in ranks:  # both processes end with the weights of the one-process run with twice the batch
            np.testing.assert_allclose(r[name], value.numpy(), rtol=1e-9, atol=1e-12)
    curves = [json.loads(str(r["curve"])) for r in ranks]
    clock = ("epoch_time", "epoch_cpu_time", "wall_time")
    assert [{k: v for k, v in rec.items() if k not in clock} for rec in curves[0]] == [
        {k: v for k, v in rec.items() if k not in clock} for rec in curves[1]]
    for mine, ref in zip(curves[0], single.curve):  # the training sums cover both processes' batches
        for key in ("train_energy_mae_per_atom", "train_force_mae", "train_loss", "val_energy_mae_per_atom",
                    "val_force_mae"):
            assert mine[key] == pytest.approx(ref[key], rel=1e-8), key


@needs_fingerprints
def test_torchrun_trains_one_model_that_rank_zero_writes(tmp_path, water):
    from ase.io import write

    write(tmp_path / "train.traj", water[:20])
    run = {"train": str(tmp_path / "train.traj"), "cache_dir": str(tmp_path / "cache"), "fp_params": SMALL_FP,
           "num_nodes": 8, "epochs": 2, "batch_size": 4, "num_threads": 1}
    (tmp_path / "run.json").write_text(json.dumps(run))
    env = _torch_env(tmp_path)
    proc = subprocess.run(
        torchrun_command(2, ["-m", "mfbo.cli", "train", str(tmp_path / "run.json"), "-o", str(tmp_path / "out"),
                             "--no-progress"]),
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert record["status"] == "completed" and record["processes"] == 2
    assert len(record["curve"]) == 2
    assert proc.stdout.count("record:") == 1  # one process reports
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.npz", "record.json"]
