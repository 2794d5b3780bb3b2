"""An ASE Calculator backed by a TrainedModel (energy, forces, per-atom energies)."""

from __future__ import annotations

from ase.calculators.calculator import Calculator, all_changes

__all__ = ["MfboCalculator"]


class MfboCalculator(Calculator):
    """ASE calculator for a trained GMP + SingleNN potential.

    Energies in eV, forces in eV/A. It featurises each structure with the model's GMP parameters
    (with the fingerprint Jacobian for forces) and runs exactly the trainer's prediction code.

    Args:
        model: a :class:`TrainedModel` or the path of a saved one.
        **kwargs: passed to ``ase.calculators.calculator.Calculator``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "energies"]

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        from mfbo.training._trained import TrainedModel

        self.model = model if isinstance(model, TrainedModel) else TrainedModel.load(model)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
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
            atomic = network(x) * scale + self.model.target_scaler.reference(sp.packed.numbers, x.dtype)
            atomic = atomic + self.model.target_scaler.offset / len(self.atoms)
        self.results["energy"] = energy
        self.results["free_energy"] = energy
        self.results["energies"] = atomic.double().cpu().numpy()
        if want_forces:
            self.results["forces"] = (out.forces * scale).double().cpu().numpy()
