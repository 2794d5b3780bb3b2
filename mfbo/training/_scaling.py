"""Feature and target scalers, fitted on the training subset only.

Feature scaling is affine per column (and, like AMPTorch, per element):
``x' = x * mul[e] + add[e]``. Because it is affine, forces chain through it with one
multiplication: ``dE/dx = dE/dx' * mul[e]``, so the stored fingerprint Jacobian is never
rescaled. A final row holds statistics over all elements, used for an element the
training subset does not contain.

Target scaling writes an image's energy as
``E = sum_i ref[Z_i] + offset + scale * sum_i y_i`` with y the network's atomic outputs:

* ``"per_element"`` (default): ``ref`` from a least-squares fit of the energies on the
  composition, ``offset = 0``, ``scale`` = RMS of the per-atom residual; the energy
  loss is taken per atom. Forces are scaled by ``1/scale``.
* ``"amptorch"``: AMPTorch's ``(E - mean) / std`` over total energies (``ref = 0``,
  ``offset = mean``, ``scale`` = unbiased std); the energy loss is per image.
* ``"none"``: ``scale = 1``, no offsets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mfbo.training._baselines import fit_element_energies

__all__ = ["FeatureScaler", "TargetScaler", "N_Z"]

N_Z = 119  # atomic numbers 0..118
_TINY_RANGE = 1e-6  # AMPTorch: a column whose range is below this keeps scale 1


@dataclass
class FeatureScaler:
    """Affine per-element, per-column feature scaling.

    Attributes:
        kind: "normalize", "standardize" or "none".
        row_of_z: int64 (119,) atomic number -> row of ``mul``/``add`` (last row = all elements).
        mul, add: float64 (n_rows, F).
    """

    kind: str
    row_of_z: np.ndarray
    mul: np.ndarray
    add: np.ndarray

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        numbers: np.ndarray,
        kind: str = "normalize",
        feature_range=(0.0, 1.0),
        per_element: bool = True,
    ) -> FeatureScaler:
        """Fit on training atoms.

        Args:
            features: (A, F) raw fingerprints of the training subset's atoms.
            numbers: (A,) their atomic numbers.
            kind: "normalize" (min-max to ``feature_range``), "standardize" or "none".
            per_element: separate statistics per element (AMPTorch), else one set.
        """
        features = np.asarray(features, dtype=np.float64)
        numbers = np.asarray(numbers)
        elements = np.unique(numbers) if per_element else np.array([], dtype=np.int64)
        groups = [numbers == z for z in elements] + [np.ones(len(numbers), dtype=bool)]
        stats = []
        for mask in groups:
            x = features[mask]
            if kind == "normalize":
                stats.append((x.min(axis=0), x.max(axis=0)))
            elif kind == "standardize":
                stats.append((x.mean(axis=0), x.std(axis=0)))
            else:
                stats.append(None)
        return cls._from_stats(kind, elements, stats, features.shape[1], feature_range)

    @classmethod
    def fit_chunks(
        cls,
        chunks,
        elements: np.ndarray,
        n_features: int,
        kind: str = "normalize",
        feature_range=(0.0, 1.0),
        per_element: bool = True,
    ) -> FeatureScaler:
        """:meth:`fit` over data that arrives in pieces (a streamed training subset).

        Args:
            chunks: iterable of ``(features (A_c, F), numbers (A_c,))``.
            elements: the atomic numbers present in all chunks together.
            n_features: F.

        Min-max statistics equal :meth:`fit`'s exactly; means and standard deviations are merged
        chunk by chunk (Chan et al.) and agree with it to rounding.
        """
        elements = np.unique(np.asarray(elements)) if per_element else np.array([], dtype=np.int64)
        n_groups = len(elements) + 1
        lo = np.full((n_groups, n_features), np.inf)
        hi = np.full((n_groups, n_features), -np.inf)
        count = np.zeros(n_groups)
        mean = np.zeros((n_groups, n_features))
        m2 = np.zeros((n_groups, n_features))
        for features, numbers in chunks:
            features = np.asarray(features, dtype=np.float64)
            numbers = np.asarray(numbers)
            masks = [numbers == z for z in elements] + [np.ones(len(numbers), dtype=bool)]
            for row, mask in enumerate(masks):
                x = features[mask]
                if not len(x):
                    continue
                lo[row] = np.minimum(lo[row], x.min(axis=0))
                hi[row] = np.maximum(hi[row], x.max(axis=0))
                n_b, mean_b = len(x), x.mean(axis=0)
                m2_b = ((x - mean_b) ** 2).sum(axis=0)
                n_a = count[row]
                delta = mean_b - mean[row]
                total = n_a + n_b
                mean[row] = mean[row] + delta * (n_b / total)
                m2[row] = m2[row] + m2_b + delta**2 * (n_a * n_b / total)
                count[row] = total
        stats = []
        for row in range(n_groups):
            if kind == "normalize":
                stats.append((lo[row], hi[row]))
            elif kind == "standardize":
                stats.append((mean[row], np.sqrt(m2[row] / max(count[row], 1.0))))
            else:
                stats.append(None)
        return cls._from_stats(kind, elements, stats, n_features, feature_range)

    @classmethod
    def _from_stats(cls, kind, elements, stats, n_features, feature_range) -> FeatureScaler:
        """Per group (each element, then all atoms): (min, max) for "normalize", (mean, std) for "standardize"."""
        mul = np.ones((len(stats), n_features))
        add = np.zeros((len(stats), n_features))
        lo, hi = (float(x) for x in feature_range)
        for row, stat in enumerate(stats):
            if kind == "normalize":
                xmin, xmax = stat
                span = xmax - xmin
                m = np.where(span < _TINY_RANGE, 1.0, (hi - lo) / np.where(span < _TINY_RANGE, 1.0, span))
                mul[row], add[row] = m, lo - xmin * m
            elif kind == "standardize":
                mean, std = stat
                m = np.where(std < _TINY_RANGE, 1.0, 1.0 / np.where(std < _TINY_RANGE, 1.0, std))
                mul[row], add[row] = m, -mean * m
        row_of_z = np.full(N_Z, len(stats) - 1, dtype=np.int64)
        row_of_z[np.asarray(elements).astype(np.int64)] = np.arange(len(elements))
        return cls(kind=kind, row_of_z=row_of_z, mul=mul, add=add)

    def rows(self, numbers: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(self.row_of_z, device=numbers.device)[numbers]

    def torch_params(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            torch.as_tensor(self.mul, device=device, dtype=dtype),
            torch.as_tensor(self.add, device=device, dtype=dtype),
        )

    def state(self) -> dict:
        return {"kind": self.kind, "row_of_z": self.row_of_z, "mul": self.mul, "add": self.add}

    @classmethod
    def from_state(cls, state: dict) -> FeatureScaler:
        return cls(
            kind=str(state["kind"]),
            row_of_z=np.asarray(state["row_of_z"], dtype=np.int64),
            mul=np.asarray(state["mul"], dtype=np.float64),
            add=np.asarray(state["add"], dtype=np.float64),
        )


@dataclass
class TargetScaler:
    """Energy model ``E = sum_i ref[Z_i] + offset + scale * sum_i y_i``.

    Attributes:
        kind: "per_element", "amptorch" or "none".
        ref: float64 (119,) per-element reference energies (eV/atom).
        offset: per-image constant (eV).
        scale: energy scale (eV per unit network output).
        per_atom_loss: the energy loss compares per-atom energies (else per-image).
    """

    kind: str
    ref: np.ndarray
    offset: float
    scale: float
    per_atom_loss: bool

    @classmethod
    def fit(cls, energies: np.ndarray, numbers_per_image: list[np.ndarray], kind: str) -> TargetScaler:
        """Fit on the training subset.

        Args:
            energies: (n,) total energies (eV).
            numbers_per_image: n arrays of atomic numbers.
            kind: "per_element", "amptorch" or "none".
        """
        energies = np.asarray(energies, dtype=np.float64)
        ref = np.zeros(N_Z)
        if kind == "amptorch":
            std = float(np.std(energies, ddof=1)) if len(energies) > 1 else 1.0
            return cls(kind, ref, float(np.mean(energies)), std if std > 1e-8 else 1.0, False)
        if kind == "none":
            return cls(kind, ref, 0.0, 1.0, False)
        # The per-element linear fit is also the "linear fit" baseline (mfbo.training._baselines): the
        # network learns exactly what that baseline misses.
        fit = fit_element_energies(energies, numbers_per_image)
        ref[:] = fit.ref
        scale = fit.rms_residual_per_atom
        return cls(kind, ref, 0.0, scale if scale > 1e-8 else 1.0, True)

    def reference(self, numbers: torch.Tensor, dtype) -> torch.Tensor:
        """Per-atom reference energies (A,) for atomic numbers (A,)."""
        return torch.as_tensor(self.ref, device=numbers.device, dtype=dtype)[numbers]

    def state(self) -> dict:
        return {
            "kind": self.kind,
            "ref": self.ref,
            "offset": self.offset,
            "scale": self.scale,
            "per_atom_loss": self.per_atom_loss,
        }

    @classmethod
    def from_state(cls, state: dict) -> TargetScaler:
        return cls(
            kind=str(state["kind"]),
            ref=np.asarray(state["ref"], dtype=np.float64),
            offset=float(state["offset"]),
            scale=float(state["scale"]),
            per_atom_loss=bool(state["per_atom_loss"]),
        )
