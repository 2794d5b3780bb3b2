"""The keys of the per-epoch learning-curve record (torch-free, so the CLI and the objectives share it).

Every objective backend returns one record per epoch carrying at least :data:`RECORD_KEYS` (the built-in
trainer adds its own keys, see ``mfbo.training.CURVE_KEYS``). Units: energies eV/image and eV/atom, forces
eV/Å per component (all atoms / free atoms; None when not computed), lr, wall time in seconds since the
run started.
"""

__all__ = ["RECORD_KEYS"]

RECORD_KEYS = (
    "epoch",
    "train_energy_mae",
    "train_energy_mae_per_atom",
    "val_energy_mae",
    "val_energy_mae_per_atom",
    "train_force_mae",
    "train_force_mae_free",
    "val_force_mae",
    "val_force_mae_free",
    "lr",
    "wall_time",
)
