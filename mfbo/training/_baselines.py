"""Trivial baselines a potential must beat, and the elements a model has never seen.

A potential's test error only means something beside what no learning at all achieves:

* **linear fit**: energy = sum over atoms of a per-element reference energy, fitted by least squares
  on the training images' compositions (what a "per-element linear fit of energy on composition" gives);
* **mean energy**: energy = number of atoms x the training set's mean energy per atom;
* **zero forces**: every force component predicted as 0 eV/Å.

Errors use the trainer's definitions: energy MAE per image (eV) and per atom (eV/atom, the mean over
images of |dE| / N_atoms), force MAE per Cartesian component (eV/Å) over all atoms and over free
atoms (atoms not fixed by ``FixAtoms``). Torch-free, so the CLI can use it without importing torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from mfbo.training._data import free_atom_mask, image_energy, image_forces

__all__ = [
    "LabelSet",
    "ElementEnergies",
    "fit_element_energies",
    "baseline_metrics",
    "unseen_elements",
    "ratios_to_baselines",
    "NEGLIGIBLE_ERROR",
    "is_error_scale",
]

# A baseline error below this (eV/atom, eV/Å) is the rounding residue of an exact baseline (energies
# exactly linear in composition, forces of perfectly symmetric cells), not an error scale: no ratio
# is formed with it (dividing by it would give numbers of order 1e13).
NEGLIGIBLE_ERROR = 1e-8


def is_error_scale(base) -> bool:
    """Whether a baseline error (eV/atom or eV/Å) can divide a model's error: a number above
    :data:`NEGLIGIBLE_ERROR`."""
    return base is not None and float(base) > NEGLIGIBLE_ERROR


@dataclass
class LabelSet:
    """The DFT labels of a set of images.

    Attributes:
        energies: (n,) total energies (eV).
        numbers: n arrays of atomic numbers.
        forces: (A, 3) forces of all atoms in image order (eV/Å), or None when any image lacks them.
        free: (A,) bool, atoms not fixed by constraints.
    """

    energies: np.ndarray
    numbers: list[np.ndarray]
    forces: np.ndarray | None
    free: np.ndarray

    @classmethod
    def of(cls, images: Iterable) -> LabelSet:
        """Labels of ASE images (each must carry an energy), read in one pass (a lazy
        :func:`~mfbo.training.open_images` view reads each image once)."""
        energies, numbers, forces, free = [], [], [], []
        for a in images:
            energies.append(float(image_energy(a)))
            numbers.append(np.asarray(a.get_atomic_numbers()))
            forces.append(image_forces(a))
            free.append(free_atom_mask(a))
        stacked = None if any(f is None for f in forces) else np.concatenate([np.asarray(f) for f in forces])
        return cls(np.asarray(energies, dtype=float), numbers, stacked,
                   np.concatenate(free) if free else np.zeros(0, bool))

    @property
    def n_atoms(self) -> np.ndarray:
        return np.array([len(z) for z in self.numbers], dtype=float)


@dataclass
class ElementEnergies:
    """Per-element reference energies from a least-squares fit on composition.

    Attributes:
        ref: float64 (119,) eV/atom by atomic number; elements absent from the fit hold
            ``mean_per_atom``.
        mean_per_atom: the fitted images' total energy / total atoms (eV/atom).
        elements: atomic numbers present in the fit.
        rms_residual_per_atom: RMS of the per-atom residual on the fitted images (eV/atom).
    """

    ref: np.ndarray
    mean_per_atom: float
    elements: np.ndarray
    rms_residual_per_atom: float

    def predict(self, numbers: Sequence[np.ndarray]) -> np.ndarray:
        """(n,) energies (eV) of images with the given atomic numbers."""
        return np.array([float(self.ref[np.asarray(z, dtype=np.int64)].sum()) for z in numbers])


def fit_element_energies(energies, numbers_per_image: Sequence[np.ndarray]) -> ElementEnergies:
    """Least-squares per-element energies: E_image ~ sum over atoms of ref[Z].

    Minimum-norm least squares, so it is well defined also when compositions are collinear (every
    image H2O, say); that only changes how energy is shared between elements, not the fitted energies.

    Args:
        energies: (n,) total energies (eV).
        numbers_per_image: n arrays of atomic numbers.
    """
    energies = np.asarray(energies, dtype=np.float64)
    elements = np.unique(np.concatenate([np.asarray(z) for z in numbers_per_image]))
    column = {int(z): c for c, z in enumerate(elements)}
    composition = np.zeros((len(energies), len(elements)))
    for row, numbers in enumerate(numbers_per_image):
        for z, count in zip(*np.unique(numbers, return_counts=True)):
            composition[row, column[int(z)]] = count
    solution = np.linalg.lstsq(composition, energies, rcond=None)[0]
    natoms = composition.sum(axis=1)
    mean_per_atom = float(np.sum(energies) / np.sum(natoms))
    ref = np.full(119, mean_per_atom)
    ref[elements.astype(np.int64)] = solution
    residual = (energies - composition @ solution) / natoms
    return ElementEnergies(ref, mean_per_atom, elements.astype(np.int64), float(np.sqrt(np.mean(residual**2))))


def _energy_errors(predicted: np.ndarray, labels: LabelSet) -> dict:
    err = np.abs(predicted - labels.energies)
    return {"energy_mae": float(err.mean()), "energy_mae_per_atom": float((err / labels.n_atoms).mean())}


def baseline_metrics(train, evaluate) -> dict:
    """Errors of the trivial baselines on ``evaluate``, fitted on ``train``.

    Args:
        train: training images (ASE Atoms) or their :class:`LabelSet`: the linear fit and the mean
            energy per atom are fitted on these.
        evaluate: the images to score (validation or test), or their LabelSet.

    Returns:
        ``{"n_images", "linear_fit": {"energy_mae" (eV), "energy_mae_per_atom" (eV/atom)},
        "mean_energy": {...same keys}, "zero_forces": {"force_mae", "force_mae_free"} (eV/Å per
        component; None without force labels)}``.
    """
    train = train if isinstance(train, LabelSet) else LabelSet.of(train)
    evaluate = evaluate if isinstance(evaluate, LabelSet) else LabelSet.of(evaluate)
    fit = fit_element_energies(train.energies, train.numbers)
    linear = _energy_errors(fit.predict(evaluate.numbers), evaluate)
    mean = _energy_errors(fit.mean_per_atom * evaluate.n_atoms, evaluate)
    zero = {"force_mae": None, "force_mae_free": None}
    if evaluate.forces is not None and len(evaluate.forces):
        absf = np.abs(evaluate.forces)
        zero["force_mae"] = float(absf.mean())
        free = absf[evaluate.free]
        zero["force_mae_free"] = float(free.mean()) if free.size else None
    return {"n_images": len(evaluate.energies), "linear_fit": linear, "mean_energy": mean, "zero_forces": zero}


def ratios_to_baselines(metrics: dict, baselines: dict) -> dict:
    """Model error / baseline error (below 1 beats the baseline; None where undefined: no model
    value, or a baseline error of at most :data:`NEGLIGIBLE_ERROR`).

    Args:
        metrics: ``energy_mae_per_atom`` (eV/atom), ``force_mae`` and ``force_mae_free`` (eV/Å).
        baselines: a :func:`baseline_metrics` result on the same images.

    Returns:
        ``energy_vs_linear_fit``, ``energy_vs_mean``, ``force_vs_zero``, ``force_free_vs_zero``.
    """

    def ratio(value, base):
        if value is None or not is_error_scale(base):
            return None
        return float(value) / float(base)

    return {
        "energy_vs_linear_fit": ratio(metrics.get("energy_mae_per_atom"), baselines["linear_fit"]["energy_mae_per_atom"]),
        "energy_vs_mean": ratio(metrics.get("energy_mae_per_atom"), baselines["mean_energy"]["energy_mae_per_atom"]),
        "force_vs_zero": ratio(metrics.get("force_mae"), baselines["zero_forces"]["force_mae"]),
        "force_free_vs_zero": ratio(metrics.get("force_mae_free"), baselines["zero_forces"]["force_mae_free"]),
    }


def unseen_elements(train_images: Sequence, images: Sequence) -> list[str]:
    """Chemical symbols in ``images`` that no training image contains (sorted)."""
    from ase.data import chemical_symbols

    seen = {int(z) for a in train_images for z in a.get_atomic_numbers()}
    other = {int(z) for a in images for z in a.get_atomic_numbers()}
    return [chemical_symbols[z] for z in sorted(other - seen)]


def _num(value, unit: str, scale: float = 1.0) -> str:
    return "-" if value is None else f"{value * scale:.4g} {unit}"


def quality_lines(metrics: dict, baselines: dict | None, what: str = "test") -> list[str]:
    """Human-readable lines: the model's errors (with units) beside the trivial baselines'.

    Args:
        metrics: ``energy_mae`` (eV), ``energy_mae_per_atom`` (eV/atom), ``force_mae``,
            ``force_mae_free`` (eV/Å); ``n_images`` optional.
        baselines: a :func:`baseline_metrics` result on the same images, or None.
        what: the name of the image set ("test", "validation").
    """
    n = metrics.get("n_images") or (baselines or {}).get("n_images")
    head = f"{what} ({n} images)" if n else what
    lines = [f"{head}:"]
    e = metrics.get("energy_mae_per_atom")
    line = f"  energy MAE {_num(e, 'meV/atom', 1000.0)} ({_num(metrics.get('energy_mae'), 'eV')} per image)"
    if baselines is not None:
        r = ratios_to_baselines(metrics, baselines)
        lin = baselines["linear_fit"]["energy_mae_per_atom"]
        mean = baselines["mean_energy"]["energy_mae_per_atom"]
        if r["energy_vs_linear_fit"] is not None:
            line += (
                f"; {r['energy_vs_linear_fit']:.3g}x the per-element linear fit ({_num(lin, 'meV/atom', 1000.0)}),"
                f" mean energy {_num(mean, 'meV/atom', 1000.0)}"
            )
    lines.append(line)
    for key, label in (("force_mae", "force MAE"), ("force_mae_free", "force MAE, free atoms")):
        value = metrics.get(key)
        if value is None:
            continue
        line = f"  {label} {_num(value, 'eV/Å')} per component"
        base = None if baselines is None else baselines["zero_forces"][key]
        if is_error_scale(base):
            line += f"; {value / base:.3g}x zero forces ({_num(base, 'eV/Å')})"
        lines.append(line)
    return lines
