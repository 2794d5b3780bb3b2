"""An ASE Calculator backed by a TrainedModel (energy, forces, per-atom energies)."""

from __future__ import annotations

from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols

from mfbo.errors import DataError
from mfbo.training._trained import TrainedModel

__all__ = ["MfboCalculator"]


class MfboCalculator(Calculator):
    """ASE calculator for a trained GMP + SingleNN potential.

    Energies in eV, forces in eV/A. It featurises each structure with the model's GMP parameters
    (with the fingerprint Jacobian for forces) and runs exactly the trainer's prediction code.

    A structure holding an element that no training image had is refused (DataError naming it): the
    network would extrapolate from another element's fingerprints and its numbers would mean nothing.

    Args:
        model: a :class:`TrainedModel` or the path of a saved one.
        allow_unseen_elements: predict anyway for elements absent from the training data.
        **kwargs: passed to ``ase.calculators.calculator.Calculator``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies"]

    def __init__(self, model, allow_unseen_elements: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.model = model if isinstance(model, TrainedModel) else TrainedModel.load(model)
        self.allow_unseen_elements = bool(allow_unseen_elements)

    def _check_elements(self, atoms) -> None:
        known = self.model.metadata.get("elements")
        if self.allow_unseen_elements or not known:
            return
        unseen = sorted({int(z) for z in atoms.get_atomic_numbers()} - {int(z) for z in known})
        if unseen:
            names = ", ".join(chemical_symbols[z] for z in unseen)
            trained = ", ".join(chemical_symbols[int(z)] for z in known)
            raise DataError(
                f"element(s) {names} did not occur in this model's training data (trained on {trained}): "
                "retrain with such structures, or pass allow_unseen_elements=True to extrapolate anyway"
            )

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self._check_elements(self.atoms)
        from mfbo.training._core import run_batch
        from mfbo.training._featurize import featurize_images
        from mfbo.training._packed import pack_images

        # Forces come almost free with the Jacobian, and ASE asks for energy and forces in turn
        # for the same structure, so compute both at once.
        want_forces = True
        fps = featurize_images([self.atoms], self.model.gmp_params, derivatives=want_forces)
        packed = pack_images([self.atoms], fps, jacobian=want_forces)
        sp = self.model.scaled_pack(packed)
        scale = self.model.target_scaler.scale
        network = self.model.network.eval()
        out = run_batch(network, sp, [0], forces=want_forces, create_graph=False)
        energy = float(out.energy[0] * scale + sp.ref_energy[0])
        # Per-atom energies: the atom's reference plus its scaled network output (image offset shared out).
        import torch

        with torch.no_grad():
            x = sp.packed.features * sp.row_mul + sp.row_add
            atomic = network(x, sp.packed.numbers) * scale + self.model.target_scaler.reference(sp.packed.numbers, x.dtype)
            atomic = atomic + self.model.target_scaler.offset / len(self.atoms)
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["energies"] = atomic.double().cpu().numpy()
        if want_forces:
            self.results["forces"] = (out.forces * scale).double().cpu().numpy()
