"""Data-parallel training of one run over several processes with ``torch.distributed``.

Launched by ``torchrun`` (``torchrun --nproc-per-node N -m mfbo.cli train RUN.json -o OUT``, or a
script calling :func:`mfbo.training.train`): every process holds the model and the training data,
each epoch's shuffled batches are dealt out round-robin (process ``r`` trains batches ``r, r + N, ...``),
and after every backward pass the gradients are averaged over the processes before the optimiser step,
so the weights stay identical everywhere. One step therefore trains ``N`` batches at once: with equal
batch sizes it is the step of one batch ``N`` times as large (an exact identity when the batches hold
equally many atoms). Each process predicts a share of the validation batches and the predictions are
summed over the processes, so every process computes the same validation errors (early stopping and the
best-epoch choice agree without further messages); the training metrics of the curve are summed over
the processes.

The gradients are reduced by hand (one flattened all-reduce per step) rather than through
``DistributedDataParallel``: the force loss differentiates the network twice (forces are
``-dE/dx`` with ``create_graph``), which DDP's gradient hooks do not support.

Backends: ``gloo`` on CPU, ``nccl`` with CUDA (each process on ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mfbo.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where it is used, so reading the environment stays cheap
    import torch

__all__ = ["DistributedContext", "distributed_from_env", "free_port", "torchrun_command", "torchrun_env"]

# What torchrun sets in each process it starts; a process that launches a new group drops inherited ones.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                      "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in a data-parallel run.

    Attributes:
        rank: 0 .. world_size - 1 (rank 0 writes the run's outputs).
        world_size: number of processes.
        local_rank: rank on this node (selects the CUDA device).
    """

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The device this process trains on: ``cuda:local_rank`` for a CUDA run, else ``device``."""
        if device.type == "cuda":
            import torch

            return torch.device("cuda", self.local_rank)
        return device

    def init(self, device: torch.device) -> bool:
        """Join the process group (torchrun's environment gives the rendezvous).

        Returns:
            True when this call created the group (close it with :meth:`close`), False when the
            process had joined one already.
        """
        import torch
        import torch.distributed as dist

        if dist.is_initialized():
            if dist.get_world_size() != self.world_size:
                raise ConfigError(f"torch.distributed is initialised with {dist.get_world_size()} processes, "
                                  f"but WORLD_SIZE is {self.world_size}")
            return False
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
        dist.init_process_group(backend=backend, rank=self.rank, world_size=self.world_size)
        return True

    def close(self, barrier: bool = True) -> None:
        """Leave the process group, after a barrier (so no process leaves while another still talks)
        unless ``barrier`` is False."""
        import torch.distributed as dist

        if dist.is_initialized():
            try:
                if barrier:
                    dist.barrier()
            finally:
                dist.destroy_process_group()

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every process."""
        import torch
        import torch.distributed as dist

        with torch.no_grad():
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

    def average_gradients(self, module: torch.nn.Module) -> None:
        """Replace every parameter's gradient by its mean over the processes (one all-reduce).

        A parameter without a gradient on this process counts as a zero gradient, so every process
        takes part in the same collective whatever its batch used.
        """
        import torch
        import torch.distributed as dist

        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def sum_values(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sums of ``values`` over the processes."""
        import torch

        return [float(v) for v in self.sum_tensor(torch.tensor(values, dtype=torch.float64, device=device)).tolist()]

    def sum_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``tensor`` over the processes (a new tensor)."""
        import torch.distributed as dist

        out = tensor.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    def my_batches(self, batches: list[list[int]]) -> list[list[int]]:
        """This process's share of an epoch's batches: ``batches[rank::world_size]`` after the list is
        topped up cyclically from its start to a multiple of ``world_size``, so that every process takes
        the same number of steps (each step is a collective) and the extra steps retrain different batches."""
        n_steps = -(-len(batches) // self.world_size)
        padded = [batches[k % len(batches)] for k in range(n_steps * self.world_size)] if batches else []
        return padded[self.rank :: self.world_size]


def distributed_from_env(environ=None) -> DistributedContext | None:
    """The data-parallel context torchrun describes in the environment (``WORLD_SIZE`` > 1, ``RANK``,
    ``LOCAL_RANK``), or None for a single-process run.

    Raises:
        ConfigError: WORLD_SIZE, RANK or LOCAL_RANK is not an integer, or RANK is out of range.
    """
    env = os.environ if environ is None else environ
    raw = env.get("WORLD_SIZE")
    if raw in (None, ""):
        return None
    try:
        world = int(raw)
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={raw!r}, RANK={env.get('RANK')!r}, LOCAL_RANK={env.get('LOCAL_RANK')!r}: "
                          "torchrun sets these to integers; unset them for a single-process run") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise ConfigError(f"RANK={rank} is outside 0..{world - 1} (WORLD_SIZE={world})")
    return DistributedContext(rank=rank, world_size=world, local_rank=local)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the rendezvous of a group started on this node)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun_command(processes: int, args, port: int | None = None) -> list[str]:
    """The command that starts ``processes`` copies of ``args`` on this node with torchrun.

    Args:
        processes: processes to start.
        args: what each runs: ``["-m", "module", ...]`` or a script path and its arguments.
        port: the rendezvous port on 127.0.0.1 (default: a free one).
    """
    import sys

    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(processes),
            "--master-addr", "127.0.0.1", "--master-port", str(free_port() if port is None else port), *args]


def torchrun_env(environ=None) -> dict:
    """``environ`` (default ``os.environ``) without torchrun's per-process variables, with one thread per
    process unless ``OMP_NUM_THREADS`` says otherwise: the environment to start a new group from."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items() if k not in TORCHRUN_VARIABLES}
    env.setdefault("OMP_NUM_THREADS", "1")
    return env
