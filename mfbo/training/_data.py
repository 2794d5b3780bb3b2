"""Datasets: reading and checking images, the fixed validation split, nested fidelity subsets."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mfbo.errors import ConfigError, DataError

__all__ = [
    "load_images",
    "split_train_val",
    "nested_subset",
    "image_energy",
    "image_forces",
    "free_atom_mask",
]


def _describe(source) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    path = getattr(source, "path", None)  # an open_images view
    return str(path) if path is not None else "the given list of Atoms"


def _stored(atoms, name):
    """A stored single-point result, read directly (ASE's getters compare the whole structure
    on every call, which dominated data set-up on large datasets)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    calc = atoms.calc
    if isinstance(calc, SinglePointCalculator) and calc.atoms is not None and len(calc.atoms) == len(atoms):
        return calc.results.get(name)
    return None


def image_energy(atoms) -> float | None:
    """DFT total energy (eV) of an image, or None if it has none."""
    calc = atoms.calc
    if calc is None:
        return None
    energy = _stored(atoms, "energy")
    if energy is None:
        try:
            energy = atoms.get_potential_energy(apply_constraint=False)
        except Exception:
            return None
    if energy is None or not np.isfinite(energy):
        return None
    return float(energy)


def image_forces(atoms) -> np.ndarray | None:
    """Raw DFT forces (n_atoms, 3) in eV/A, FixAtoms NOT applied (as AMPTorch), or None."""
    calc = atoms.calc
    if calc is None:
        return None
    forces = _stored(atoms, "forces")
    if forces is None:
        try:
            forces = atoms.get_forces(apply_constraint=False)
        except Exception:
            return None
    forces = np.asarray(forces, dtype=np.float64)
    if forces.shape != (len(atoms), 3) or not np.all(np.isfinite(forces)):
        return None
    return forces


def free_atom_mask(atoms) -> np.ndarray:
    """Bool (n_atoms,): True for atoms not fixed by a FixAtoms constraint."""
    from ase.constraints import FixAtoms

    mask = np.ones(len(atoms), dtype=bool)
    for constraint in atoms.constraints:
        if isinstance(constraint, FixAtoms):
            mask[np.asarray(constraint.get_indices(), dtype=int)] = False
    return mask


def load_images(source, *, require_forces: bool = False) -> list:
    """Read and check a dataset.

    Args:
        source: path of any ASE-readable file (traj, extxyz, ASE db, ...), an OC20 / fairchem LMDB
            dataset (see :mod:`mfbo.training._lmdb`), or a sequence of ``ase.Atoms``.
        require_forces: also require finite forces of shape (n_atoms, 3) on every image.

    Returns:
        list of ``ase.Atoms`` (the given objects when a list was passed).

    Raises:
        DataError: unreadable file, empty dataset, an empty image, or an image without an energy
            (or forces); the message names the file and the first bad index.
    """
    from ase import Atoms

    where = _describe(source)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise DataError(f"dataset file {path} does not exist")
        try:
            from mfbo.training._images import read_all

            images = read_all(path)
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"cannot read dataset file {path} with ASE: {exc}") from None
    elif isinstance(source, Atoms):
        images = [source]
    elif isinstance(source, Sequence):
        images = list(source)
    else:
        raise DataError(f"a dataset must be a file path or a list of ase.Atoms, got {type(source).__name__}")
    if not images:
        raise DataError(f"dataset {where} holds no images")
    for index, atoms in enumerate(images):
        if not isinstance(atoms, Atoms):
            raise DataError(f"dataset {where}: item {index} is a {type(atoms).__name__}, not an ase.Atoms")
        if len(atoms) == 0:
            raise DataError(f"dataset {where}: image {index} has no atoms")
        if image_energy(atoms) is None:
            raise DataError(
                f"dataset {where}: image {index} has no energy (first bad index {index}); "
                "every training image needs a DFT total energy (attach a SinglePointCalculator)"
            )
        if require_forces and image_forces(atoms) is None:
            raise DataError(
                f"dataset {where}: image {index} has no forces (first bad index {index}); "
                "train with get_forces=False or supply forces on every image"
            )
    return images


def split_train_val(images: Sequence, val_fraction: float, seed: int) -> tuple[list, list]:
    """Seeded random split into a training pool and a fixed validation set.

    Args:
        images: the pool.
        val_fraction: fraction in (0, 1) held out; the validation set has
            ``max(1, round(val_fraction * N))`` images (57 of AMPTorch's 569 at 0.1).
        seed: RNG seed.

    Returns:
        (train, val): lists in the permuted order (views, when ``images`` is an
        :func:`~mfbo.training.open_images` view: no image is read).
    """
    n = len(images)
    if not 0.0 < float(val_fraction) < 1.0:
        raise ConfigError(f"val_fraction={val_fraction!r} must lie in (0, 1)")
    if n < 2:
        raise DataError(f"cannot split {n} image(s) into training and validation sets")
    n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    perm = np.random.default_rng(seed).permutation(n)
    if hasattr(images, "take"):
        return images.take(perm[n_val:]), images.take(perm[:n_val])
    images = list(images)
    return [images[i] for i in perm[n_val:]], [images[i] for i in perm[:n_val]]


def subset_size(n: int, data_fraction: float) -> int:
    """ceil(data_fraction * n), at least 1."""
    if not 0.0 < float(data_fraction) <= 1.0:
        raise ConfigError(f"data_fraction={data_fraction!r} must lie in (0, 1]")
    # The small tolerance keeps e.g. 0.3 * 10 from rounding up to 4.
    return max(1, min(n, math.ceil(float(data_fraction) * n - 1e-9)))


def nested_subset(train: Sequence, data_fraction: float, seed: int) -> list:
    """The data-fraction fidelity: the first ceil(f * N) images of one seeded permutation.

    For a fixed ``seed`` every smaller subset is contained in every larger one.

    Args:
        train: the training pool (N images).
        data_fraction: f in (0, 1].
        seed: RNG seed of the permutation.

    Returns:
        list of ceil(f * N) images (a view for an :func:`~mfbo.training.open_images` view).
    """
    if hasattr(train, "take"):
        return train.take(nested_subset_indices(len(train), data_fraction, seed))
    return [train[i] for i in nested_subset_indices(len(train), data_fraction, seed)]


def nested_subset_indices(n: int, data_fraction: float, seed: int) -> np.ndarray:
    """Indices (into a pool of n) of :func:`nested_subset`."""
    k = subset_size(n, data_fraction)
    # A separate stream from split_train_val's so the two choices are independent.
    perm = np.random.default_rng([int(seed), 0x5EB5E7]).permutation(n)
    return perm[:k]
