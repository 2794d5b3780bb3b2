"""Images + fingerprints packed into flat tensors, and the Jacobian route to forces.

Every image's atoms are stored contiguously (``atom_offsets``). The (large) fingerprint
Jacobian stays one tensor per image, shared with the engine's arrays (no copy at all), with
image-local pair indices; the force product runs image by image, on blocks small enough to
stay in cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mfbo.training._data import free_atom_mask, image_energy, image_forces

__all__ = ["PackedImages", "pack_images", "jacobian_forces"]


@dataclass
class PackedImages:
    """Flat per-atom and per-pair arrays for a list of images.

    Attributes:
        numbers: int64 (A,) atomic numbers.
        atom_offsets: int64 (n+1,) image k owns atoms ``atom_offsets[k]:atom_offsets[k+1]``.
        features: (A, F) raw fingerprints (float64 until ``to``).
        energies: (n,) DFT total energies (eV); NaN when absent (prediction-only sets).
        forces: (A, 3) raw DFT forces (eV/A, FixAtoms not applied) or None.
        free: bool (A,) atoms not fixed by FixAtoms.
        pair_i, pair_j: per image, int64 (P_k,) image-local atom indices of each Jacobian pair,
            or None.
        dfeatures: per image, (P_k, F, 3) ``d features[pair_i, m] / d positions[pair_j, k]``,
            or None.
        flat_pairs: optional ``(pair_i, pair_j, dfeatures)`` of all images as one block with
            pack-wide atom indices (a batch read from shards); when a batch is the whole pack, the
            force product then runs as one operation instead of image by image.
    """

    numbers: torch.Tensor
    atom_offsets: torch.Tensor
    features: torch.Tensor
    energies: torch.Tensor
    forces: torch.Tensor | None
    free: torch.Tensor
    pair_i: list[torch.Tensor] | None = None
    pair_j: list[torch.Tensor] | None = None
    dfeatures: list[torch.Tensor] | None = None
    flat_pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def __post_init__(self):
        # Python-side offsets: batching loops over images and must not sync with a device.
        self._atom_off = self.atom_offsets.tolist()

    @property
    def n_images(self) -> int:
        return len(self._atom_off) - 1

    @property
    def n_atoms(self) -> torch.Tensor:
        return self.atom_offsets[1:] - self.atom_offsets[:-1]

    @property
    def has_jacobian(self) -> bool:
        return self.dfeatures is not None

    def to(self, device, dtype) -> PackedImages:
        def conv(t, floating=False):
            if t is None:
                return None
            if isinstance(t, list):
                return [conv(x, floating) for x in t]
            return t.to(device=device, dtype=dtype) if floating else t.to(device=device)

        return PackedImages(
            numbers=conv(self.numbers),
            atom_offsets=conv(self.atom_offsets),
            features=conv(self.features, True),
            energies=conv(self.energies, True),
            forces=conv(self.forces, True),
            free=conv(self.free),
            pair_i=conv(self.pair_i),
            pair_j=conv(self.pair_j),
            dfeatures=conv(self.dfeatures, True),
            flat_pairs=None if self.flat_pairs is None else (
                conv(self.flat_pairs[0]), conv(self.flat_pairs[1]), conv(self.flat_pairs[2], True)
            ),
        )

    def atom_index(self, images: Sequence[int]) -> torch.Tensor:
        """int64 indices of the atoms of ``images`` in batch order."""
        ranges = [torch.arange(self._atom_off[k], self._atom_off[k + 1]) for k in images]
        return torch.cat(ranges).to(self.atom_offsets.device)

    def batch_segments(self, images: Sequence[int]):
        """Per image of the batch: (its atom slice in the batch, its index in the pack)."""
        segments = []
        start = 0
        for k in images:
            n = self._atom_off[k + 1] - self._atom_off[k]
            segments.append((slice(start, start + n), k))
            start += n
        return segments


def jacobian_forces(packed: PackedImages, segments, grad_features: torch.Tensor, *,
                    batched: bool | None = None) -> torch.Tensor:
    """Forces from the fingerprint Jacobian: ``F_j = -sum_p J[p]^T dE/dfeatures[pair_i[p]]``.

    Args:
        packed: the pack holding the Jacobian.
        segments: from :meth:`PackedImages.batch_segments`.
        grad_features: (A_b, F) dE/d(raw features) of the batch's atoms (scaler already chained in).
        batched: gather the batch's pairs into one block and take one product (default: on devices
            other than the CPU), else one product per image. Both give the same numbers.

    Returns:
        (A_b, 3) forces in the energy units of ``grad_features`` per A; differentiable w.r.t.
        ``grad_features`` (so a force loss can be backpropagated into the network).
    """
    if packed.flat_pairs is not None and [k for _, k in segments] == list(range(packed.n_images)):
        return _pair_forces(*packed.flat_pairs, grad_features)
    if batched is None:
        # One product per batch costs a copy of the batch's Jacobian: on a CPU an epoch took 1.34x
        # the per-image products' time (analysis/bench_force_product.py); on a GPU it replaces a few kernel
        # launches per image by a few per batch.
        batched = grad_features.device.type != "cpu"
    if batched and len(segments) > 1:
        return _batched_jacobian_forces(packed, segments, grad_features)
    return torch.cat([_pair_forces(packed.pair_i[k], packed.pair_j[k], packed.dfeatures[k], grad_features[atoms_slice])
                      for atoms_slice, k in segments])


def _pair_forces(pair_i: torch.Tensor, pair_j: torch.Tensor, dfeatures: torch.Tensor,
                 grad_features: torch.Tensor) -> torch.Tensor:
    """(A, 3) forces ``-sum_p dfeatures[p]^T grad_features[pair_i[p]]`` onto the atoms ``pair_j[p]``
    of one block of pairs (P,), (P,), (P, F, 3) whose atom indices address the rows of
    ``grad_features`` (A, F)."""
    contrib = torch.einsum("pfc,pf->pc", dfeatures, grad_features.index_select(0, pair_i))  # (P, 3)
    forces = torch.zeros(grad_features.shape[0], 3, dtype=grad_features.dtype, device=grad_features.device)
    return -forces.index_add(0, pair_j, contrib)


def _batched_jacobian_forces(packed: PackedImages, segments, grad_features: torch.Tensor) -> torch.Tensor:
    """:func:`jacobian_forces` over the whole batch in one product: the batch's pairs gathered into
    one block, their image-local atom indices shifted to batch positions."""
    device = grad_features.device
    images = [k for _, k in segments]
    counts = torch.tensor([len(packed.pair_i[k]) for k in images], device=device)
    starts = torch.tensor([sl.start for sl, _ in segments], device=device)
    shift = torch.repeat_interleave(starts, counts)
    pair_i = torch.cat([packed.pair_i[k] for k in images]) + shift
    pair_j = torch.cat([packed.pair_j[k] for k in images]) + shift
    return _pair_forces(pair_i, pair_j, torch.cat([packed.dfeatures[k] for k in images]), grad_features)


def pack_images(images: Sequence, fingerprints: Sequence, *, jacobian: bool) -> PackedImages:
    """Pack images and their fingerprints (float64, CPU).

    Args:
        images: n ``ase.Atoms``.
        fingerprints: n engine results with ``.features`` (n_atoms, F) and, when ``jacobian``,
            ``.pair_i``, ``.pair_j`` (P,) and ``.dfeatures`` (P, F, 3).
        jacobian: pack the Jacobian (needed for forces).
    """
    n = len(images)
    natoms = np.array([len(a) for a in images], dtype=np.int64)
    atom_offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(natoms, out=atom_offsets[1:])
    features = np.concatenate([np.asarray(fp.features, dtype=np.float64) for fp in fingerprints], axis=0)
    numbers = np.concatenate([a.numbers for a in images]).astype(np.int64)
    energies = np.array([e if (e := image_energy(a)) is not None else np.nan for a in images], dtype=np.float64)
    force_list = [image_forces(a) for a in images]
    forces = None if any(f is None for f in force_list) else np.concatenate(force_list, axis=0)
    free = np.concatenate([free_atom_mask(a) for a in images])
    packed = dict(
        numbers=torch.from_numpy(numbers),
        atom_offsets=torch.from_numpy(atom_offsets),
        features=torch.from_numpy(features),
        energies=torch.from_numpy(energies),
        forces=None if forces is None else torch.from_numpy(forces),
        free=torch.from_numpy(free),
    )
    if jacobian:
        # torch.from_numpy shares memory with the engine's arrays: no copy of the Jacobian.
        packed.update(
            pair_i=[torch.from_numpy(np.asarray(fp.pair_i, dtype=np.int64)) for fp in fingerprints],
            pair_j=[torch.from_numpy(np.asarray(fp.pair_j, dtype=np.int64)) for fp in fingerprints],
            dfeatures=[torch.from_numpy(np.asarray(fp.dfeatures, dtype=np.float64)) for fp in fingerprints],
        )
    return PackedImages(**packed)
