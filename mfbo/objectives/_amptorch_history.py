"""Learning-curve records from AMPTorch's skorch history, and the callback that writes them.

Runs inside AMPTorch's own interpreter (``_amptorch_worker``): it imports numpy and, for the
callback, skorch and torch, and from mfbo only its errors and record keys, never mfbo's trainer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from mfbo.errors import ObjectiveError, TrainingDiverged
from mfbo.objectives._record import RECORD_KEYS

__all__ = [
    "HISTORY_PREFIX",
    "SplitTargets",
    "free_atom_mask",
    "make_scoring_callback",
    "records_from_history",
    "split_metrics",
    "tail_split",
]


# The prefix of the columns our scoring callback writes into AMPTorch's skorch history.
HISTORY_PREFIX = "mfbo_"


class SplitTargets:
    """Reference energies (eV), atom counts, forces (eV/Å) and free-atom masks of one split."""

    def __init__(self, images: Sequence, with_forces: bool):
        import numpy as np

        # Raw DFT values, FixAtoms not applied: what AMPTorch and the built-in trainer fit.
        self.energies = np.array([float(a.get_potential_energy(apply_constraint=False)) for a in images])
        self.natoms = np.array([len(a) for a in images], dtype=float)
        self.forces = None
        self.free = None
        if with_forces:
            self.forces = np.concatenate(
                [np.asarray(a.get_forces(apply_constraint=False), dtype=float) for a in images]
            )
            self.free = np.concatenate([free_atom_mask(a) for a in images])


def free_atom_mask(atoms):
    """(n_atoms,) bool: True for atoms no ``FixAtoms`` constraint holds."""
    import numpy as np
    from ase.constraints import FixAtoms

    free = np.ones(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            free[np.asarray(constraint.get_indices(), dtype=int)] = False
    return free


def split_metrics(energy_pred, forces_pred, targets: SplitTargets, prefix: str) -> dict[str, float]:
    """MAEs of one split from denormalised predictions.

    Args:
        energy_pred: (n_images,) predicted total energies, eV.
        forces_pred: (n_atoms_total, 3) predicted forces, eV/Å, or None.
        targets: the split's reference values.
        prefix: "train" or "val".

    Returns:
        {prefix_energy_mae (eV/image), prefix_energy_mae_per_atom (eV/atom), prefix_force_mae,
        prefix_force_mae_free (eV/Å; None without forces)}.
    """
    import numpy as np

    energy_pred = np.asarray(energy_pred, dtype=float).reshape(-1)
    if energy_pred.shape != targets.energies.shape:
        raise ObjectiveError(
            f"AMPTorch returned {energy_pred.size} {prefix} energies for {targets.energies.size} images"
        )
    err = np.abs(energy_pred - targets.energies)
    out = {
        f"{prefix}_energy_mae": float(err.mean()),
        f"{prefix}_energy_mae_per_atom": float((err / targets.natoms).mean()),
        f"{prefix}_force_mae": None,
        f"{prefix}_force_mae_free": None,
    }
    if forces_pred is not None and targets.forces is not None:
        forces_pred = np.asarray(forces_pred, dtype=float).reshape(-1, 3)
        if forces_pred.shape != targets.forces.shape:
            raise ObjectiveError(
                f"AMPTorch returned {forces_pred.shape[0]} {prefix} force rows for "
                f"{targets.forces.shape[0]} atoms"
            )
        ferr = np.abs(forces_pred - targets.forces)
        out[f"{prefix}_force_mae"] = float(ferr.mean())
        out[f"{prefix}_force_mae_free"] = float(ferr[targets.free].mean()) if targets.free.any() else None
    return out


def records_from_history(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Learning-curve records (the built-in trainer's layout) from a skorch history.

    Reads the columns our scoring callback wrote (``mfbo_*``) for every epoch; AMPTorch's own
    columns (``train_energy_mae`` etc., scored on training-mode predictions) are kept under
    ``amptorch_*`` for reference.
    """
    records = []
    for row in history:
        rec: dict[str, Any] = {"epoch": int(row["epoch"])}
        for key in RECORD_KEYS[1:]:
            if HISTORY_PREFIX + key not in row:
                raise ObjectiveError(f"AMPTorch history of epoch {rec['epoch']} lacks {key!r}")
            value = row[HISTORY_PREFIX + key]
            rec[key] = None if value is None else float(value)
        for key in ("train_energy_mae", "val_energy_mae", "train_forces_mae", "val_forces_mae", "train_loss",
                    "valid_loss", "dur"):
            if key in row and row[key] is not None:
                rec["amptorch_" + key] = float(row[key])
        records.append(rec)
    return records


def make_scoring_callback(train_targets: SplitTargets, val_targets: SplitTargets, with_forces: bool,
                           divergence_factor: float = 1e4):
    """A skorch callback scoring both splits each epoch in eval mode, in mfbo's record layout.

    It also stops a diverging run the way the built-in trainer does: a non-finite loss or metric,
    or a mean training loss above ``divergence_factor`` x the best epoch's, raises
    :class:`TrainingDiverged` carrying the epoch and the last finite record.
    """
    import numpy as np
    from skorch.callbacks import Callback

    class MfboScoring(Callback):
        def on_train_begin(self, net, **kwargs):
            self.t0 = time.perf_counter()
            self.last = None
            self.best_loss = math.inf

        def on_epoch_begin(self, net, **kwargs):
            # The lr used during this epoch (schedulers step at epoch end).
            self.lr = float(net.optimizer_.param_groups[0]["lr"])

        def _predict(self, net, dataset):
            energy, forces = net.forward(dataset, training=False)
            base = dataset.dataset if hasattr(dataset, "dataset") else dataset
            energy = base.target_scaler.denorm(energy.detach().cpu(), pred="energy")
            forces_np = None
            if with_forces and forces.numel():
                forces_np = base.target_scaler.denorm(forces.detach().cpu(), pred="forces").numpy()
            return np.asarray(energy, dtype=float), forces_np

        def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
            epoch = len(net.history)
            rec = {}
            rec.update(split_metrics(*self._predict(net, dataset_train), train_targets, "train"))
            rec.update(split_metrics(*self._predict(net, dataset_valid), val_targets, "val"))
            rec["lr"] = self.lr
            rec["wall_time"] = time.perf_counter() - self.t0
            loss = net.history[-1].get("train_loss")
            loss = math.nan if loss is None else float(loss)
            finite = math.isfinite(loss) and all(v is None or math.isfinite(v) for v in rec.values())
            if not finite or loss > divergence_factor * self.best_loss:
                why = "non-finite loss or metrics" if not finite else (
                    f"training loss {loss:.3g} > {divergence_factor:g} x best {self.best_loss:.3g}")
                raise TrainingDiverged(f"AMPTorch training diverged at epoch {epoch} ({why})",
                                       epoch=epoch, last_metrics=self.last)
            self.best_loss = min(self.best_loss, loss)
            for key, value in rec.items():
                net.history.record(HISTORY_PREFIX + key, value)
            self.last = {"epoch": epoch, **rec}

    return MfboScoring()


def tail_split(n_val: int):
    """skorch train_split holding out the last ``n_val`` items (accepts any skorch signature)."""
    import torch

    def split(dataset, y=None, **fit_params):
        n = len(dataset)
        return (torch.utils.data.Subset(dataset, list(range(n - n_val))),
                torch.utils.data.Subset(dataset, list(range(n - n_val, n))))

    return split
