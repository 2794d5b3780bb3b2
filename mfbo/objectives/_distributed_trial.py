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
import subprocess
import sys
import tempfile
from pathlib import Path

from mfbo.errors import TrainingError
from mfbo.training._distributed import torchrun_command, torchrun_env

__all__ = ["run_distributed"]


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
        cmd = torchrun_command(processes, ["-m", "mfbo.objectives._distributed_trial", str(job)])
        proc = subprocess.run(cmd, env=torchrun_env(), capture_output=True, text=True)
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
