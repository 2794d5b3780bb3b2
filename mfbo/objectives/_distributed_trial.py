"""One built-in trial trained data-parallel over several processes, started with ``torchrun``.

:class:`~mfbo.objectives._builtin.BuiltinObjective` with ``processes = N > 1`` runs each training
through :func:`run_distributed`: the objective (with ``processes = 1``) and the trial are pickled into a
job folder, ``python -m torch.distributed.run --nproc-per-node N -m mfbo.objectives._distributed_trial
JOB`` starts N processes on this node (gloo on 127.0.0.1, or NCCL on the node's GPUs), each of which calls
``objective.fit`` (so :func:`mfbo.training.train` reads torchrun's environment and trains data-parallel),
and rank 0 pickles the :class:`~mfbo.training.TrainResult`, or the TrainingDiverged it met, for the caller.
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from mfbo.errors import TrainingError

__all__ = ["run_distributed"]

_ENV_DROP = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
             "TORCHELASTIC_RUN_ID")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_distributed(objective, processes: int, params: dict, data_fraction: float, epochs, test) -> object:
    """Train one trial over ``processes`` torchrun processes; returns rank 0's TrainResult.

    Raises:
        TrainingDiverged: the run diverged (re-raised from rank 0).
        TrainingError: the processes failed otherwise; the message ends with their last output lines.
    """
    with tempfile.TemporaryDirectory(prefix="mfbo-ddp-trial-") as tmp:
        job = Path(tmp)
        with open(job / "job.pkl", "wb") as fh:
            pickle.dump({"objective": objective, "params": params, "data_fraction": data_fraction,
                         "epochs": epochs, "test": test}, fh)
        env = {k: v for k, v in os.environ.items() if k not in _ENV_DROP}
        env.setdefault("OMP_NUM_THREADS", "1")  # one thread per process unless the caller says otherwise
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(processes),
               "--master-addr", "127.0.0.1", "--master-port", str(_free_port()),
               "-m", "mfbo.objectives._distributed_trial", str(job)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        out = job / "result.pkl"
        if out.is_file():
            with open(out, "rb") as fh:
                outcome = pickle.load(fh)
            if isinstance(outcome, BaseException):
                raise outcome
            if proc.returncode == 0:
                return outcome
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise TrainingError(f"data-parallel trial over {processes} processes failed (torchrun exit status "
                            f"{proc.returncode}); last output:\n{tail}")


def main(argv=None) -> int:
    from mfbo.errors import TrainingDiverged

    job = Path((argv or sys.argv[1:])[0])
    with open(job / "job.pkl", "rb") as fh:
        spec = pickle.load(fh)
    rank = int(os.environ.get("RANK", "0"))
    try:
        outcome = spec["objective"].fit(spec["params"], spec["data_fraction"], spec["epochs"], test=spec["test"])
    except TrainingDiverged as exc:  # every process diverges together (their weights are the same)
        outcome = exc
    if rank == 0:
        tmp = job / f"result.pkl.{os.getpid()}"
        with open(tmp, "wb") as fh:
            pickle.dump(outcome, fh)
        os.replace(tmp, job / "result.pkl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
