"""The numerical core shared by training, evaluation and the ASE calculator.

One function maps a batch of packed images to network outputs, energies and (via the
fingerprint Jacobian) forces, so the trainer's predictions and the calculator's agree by
construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from mfbo.training._packed import PackedImages, jacobian_forces
from mfbo.training._scaling import FeatureScaler, TargetScaler

__all__ = ["ScaledPack", "BatchOutput", "run_batch", "predict_pack", "error_metrics"]


@dataclass
class ScaledPack:
    """A pack plus everything the scalers derive from it, on the run's device and dtype.

    Attributes:
        packed: the images.
        row_mul, row_add: (A, F) per-atom feature scaling (gathered from the scaler by element).
        ref_energy: (n,) sum of per-element references + offset per image (eV).
        energy_target: (n,) scaled energy target ``(E - ref_energy) / scale``.
        force_target: (A, 3) scaled force target ``F / scale`` or None.
    """

    packed: PackedImages
    row_mul: torch.Tensor
    row_add: torch.Tensor
    ref_energy: torch.Tensor
    energy_target: torch.Tensor
    force_target: torch.Tensor | None

    @classmethod
    def build(cls, packed: PackedImages, fscaler: FeatureScaler, tscaler: TargetScaler) -> ScaledPack:
        dtype, device = packed.features.dtype, packed.features.device
        mul, add = fscaler.torch_params(device, dtype)
        rows = fscaler.rows(packed.numbers)
        image_of_atom = torch.repeat_interleave(torch.arange(packed.n_images, device=device), packed.n_atoms)
        ref = torch.zeros(packed.n_images, dtype=dtype, device=device).index_add(
            0, image_of_atom, tscaler.reference(packed.numbers, dtype)
        )
        ref = ref + tscaler.offset
        return cls(
            packed=packed,
            row_mul=mul[rows],
            row_add=add[rows],
            ref_energy=ref,
            energy_target=(packed.energies - ref) / tscaler.scale,
            force_target=None if packed.forces is None else packed.forces / tscaler.scale,
        )

    def batch(self, images: Sequence[int]) -> tuple[ScaledPack, Sequence[int]]:
        """The pack holding a batch of this pack's images, and their indices in it.

        In memory that is this pack itself; a streamed pack reads the batch from disk.
        """
        return self, images


@dataclass
class BatchOutput:
    """Network outputs for a batch of images (scaled units; multiply by the target scale for eV).

    Attributes:
        atoms: (A_b,) pack indices of the batch's atoms.
        image_of_atom: (A_b,) batch-local image index of each atom.
        n_atoms: (n_b,) atoms per image.
        energy: (n_b,) scaled energies (sum of atomic outputs).
        forces: (A_b, 3) scaled forces or None.
    """

    atoms: torch.Tensor
    image_of_atom: torch.Tensor
    n_atoms: torch.Tensor
    energy: torch.Tensor
    forces: torch.Tensor | None


def run_batch(
    network: torch.nn.Module,
    sp: ScaledPack,
    images: Sequence[int],
    *,
    forces: bool,
    create_graph: bool,
) -> BatchOutput:
    """Evaluate the network on a batch of images.

    Args:
        network: the SingleNN (its train/eval mode is the caller's choice).
        sp: the scaled pack.
        images: indices of the batch's images in the pack.
        forces: also compute forces via the Jacobian (the pack must hold one).
        create_graph: keep the graph of energies and forces for a loss (training).
    """
    packed = sp.packed
    atoms = packed.atom_index(images)
    mul = sp.row_mul[atoms]
    x = packed.features[atoms] * mul + sp.row_add[atoms]
    if forces:
        x.requires_grad_(True)
    n_atoms = packed.n_atoms[torch.as_tensor(list(images), device=atoms.device)]
    image_of_atom = torch.repeat_interleave(torch.arange(len(images), device=atoms.device), n_atoms)
    with torch.enable_grad() if (forces or create_graph) else torch.no_grad():
        atomic = network(x, packed.numbers[atoms])
        energy = torch.zeros(len(images), dtype=x.dtype, device=x.device).index_add(0, image_of_atom, atomic)
        force = None
        if forces:
            (grad,) = torch.autograd.grad(atomic.sum(), x, create_graph=create_graph)
            # Chain the affine feature scaler into the Jacobian: dE/dx_raw = dE/dx_scaled * mul.
            force = jacobian_forces(packed, packed.batch_segments(images), grad * mul)
            if not create_graph:
                force = force.detach()
        if not create_graph:
            energy = energy.detach()
    return BatchOutput(atoms=atoms, image_of_atom=image_of_atom, n_atoms=n_atoms, energy=energy, forces=force)


def predict_pack(
    network: torch.nn.Module,
    sp: ScaledPack,
    scale: float,
    *,
    forces: bool,
    batch_size: int = 64,
    share: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Energies (n,) in eV and forces (A, 3) in eV/A (or None) of every image, network in eval mode.

    ``share = (k, m)`` computes only every m-th batch starting at the k-th and leaves zeros elsewhere:
    the m processes of a data-parallel run each take a share and sum the results.
    """
    was_training = network.training
    network.eval()
    energies, force_list = [], []
    if share is not None:  # at least one batch per process
        batch_size = max(1, min(batch_size, -(-sp.packed.n_images // share[1])))
    try:
        for step, start in enumerate(range(0, sp.packed.n_images, batch_size)):
            chunk = list(range(start, min(start + batch_size, sp.packed.n_images)))
            if share is not None and step % share[1] != share[0]:
                ref = sp.ref_energy
                energies.append(torch.zeros(len(chunk), dtype=ref.dtype, device=ref.device))
                if forces:
                    n_atoms = int(sp.packed.n_atoms[chunk].sum())
                    force_list.append(torch.zeros(n_atoms, 3, dtype=ref.dtype, device=ref.device))
                continue
            bsp, images = sp.batch(chunk)
            out = run_batch(network, bsp, images, forces=forces, create_graph=False)
            energies.append(out.energy * scale + bsp.ref_energy[images[0] : images[0] + len(images)])
            if forces:
                force_list.append(out.forces * scale)
    finally:
        network.train(was_training)
    return torch.cat(energies), (torch.cat(force_list) if forces else None)


def error_metrics(
    sp: ScaledPack, energies: torch.Tensor, forces: torch.Tensor | None, prefix: str
) -> dict[str, float | None]:
    """MAEs of predictions against a pack's DFT labels.

    Returns:
        ``{prefix}energy_mae`` (eV/image), ``{prefix}energy_mae_per_atom`` (eV/atom),
        ``{prefix}force_mae`` and ``{prefix}force_mae_free`` (eV/A per component; None without
        forces or labels).
    """
    packed = sp.packed
    err = (energies - packed.energies).abs()
    out: dict[str, float | None] = {
        f"{prefix}energy_mae": float(err.mean()),
        f"{prefix}energy_mae_per_atom": float((err / packed.n_atoms).mean()),
        f"{prefix}force_mae": None,
        f"{prefix}force_mae_free": None,
    }
    if forces is not None and packed.forces is not None:
        ferr = (forces - packed.forces).abs()
        out[f"{prefix}force_mae"] = float(ferr.mean())
        free = ferr[packed.free]
        out[f"{prefix}force_mae_free"] = float(free.mean()) if free.numel() else None
    return out
