"""The fidelity-discrepancy term of the surrogate's kernel.

BoTorch's multi-fidelity kernel (Wu et al. 2019) is a product ``k_x(x, x') k_s(s, s')``: a cheap run is a
correlated copy of the target with the *same* design structure, and one correlation per fidelity holds
everywhere in the space. Real training objectives break that near the optimum: configurations that look
best after a few epochs or on a small subset (a high learning rate, a small network) need not be best at
target (among the best 5 % of the mlip_mo replay, rank correlation with the target is 0.25 at 1/8 of
the data). Following the additive multi-fidelity models (Kennedy & O'Hagan 2000; Le Gratiet 2013),
:func:`discrepancy_kernel` adds a term ``psi(s) psi(s') k_h(x, x')``: a separate GP ``h`` over the design
with its own lengthscales and amplitude, switched on below target by ``psi(s) = 1 - prod_c s_c^{p_c}``
(``s_c`` a fidelity divided by its target, so ``psi = 0`` at target fidelity). A cheap run then informs
the target only through the shared part. The marginal likelihood sets the term's amplitude and
lengthscales, but with few target runs the two parts are hard to tell apart, so the term also keeps a
design seen only cheaply uncertain at target: that helps where cheap runs mislead (the real-training
benchmarks) and slows problems where they do not (hartmann6_mf); hence it is opt-in
(``MultiFidelityOptimizer(fidelity_discrepancy=True)``; docs/optimize.md, "Fidelity discrepancy").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from gpytorch.constraints import Positive
from gpytorch.kernels import Kernel, ScaleKernel
from gpytorch.priors import GammaPrior

__all__ = ["TargetVanishingKernel", "discrepancy_kernel"]

# Gamma(concentration, rate) prior on the discrepancy's amplitude (standardised outcome units)
_AMPLITUDE_PRIOR = (1.5, 3.0)


class TargetVanishingKernel(Kernel):
    """``k(s, s') = psi(s) psi(s')`` with ``psi(s) = 1 - prod_c s_c^{p_c}`` over the active fidelity columns.

    Inputs are fidelities divided by their targets (in ``(0, 1]``; 1 is target fidelity; values above 1
    count as target), so the kernel is zero whenever either point is at target. One learned power ``p_c > 0`` per column (Gamma(2, 2) prior,
    mean 1) says how fast the discrepancy fades as that fidelity approaches its target.
    """

    has_lengthscale = False

    def __init__(self, n_fidelities: int, **kwargs):
        super().__init__(**kwargs)
        self.register_parameter("raw_power", torch.nn.Parameter(torch.zeros(*self.batch_shape, 1, n_fidelities)))
        self.register_constraint("raw_power", Positive())
        self.register_prior("power_prior", GammaPrior(2.0, 2.0), lambda m: m.power,
                            lambda m, v: m._set_power(v))

    @property
    def power(self) -> torch.Tensor:
        return self.raw_power_constraint.transform(self.raw_power)

    def _set_power(self, value: torch.Tensor) -> None:
        value = torch.as_tensor(value).to(self.raw_power)
        self.initialize(raw_power=self.raw_power_constraint.inverse_transform(value))

    def _psi(self, s: torch.Tensor) -> torch.Tensor:
        s = s.clamp(1e-6, 1.0)
        return 1.0 - torch.exp((torch.log(s) * self.power).sum(dim=-1))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, last_dim_is_batch: bool = False,
                **params) -> torch.Tensor:
        if last_dim_is_batch:
            raise NotImplementedError("TargetVanishingKernel does not support last_dim_is_batch")
        p1, p2 = self._psi(x1), self._psi(x2)
        if diag:
            return p1 * p2
        return p1.unsqueeze(-1) * p2.unsqueeze(-2)


def discrepancy_kernel(design_dims: Sequence[int], fidelity_dims: Sequence[int]) -> ScaleKernel:
    """The additive discrepancy term: ``ScaleKernel(RBF(design, ARD) * TargetVanishingKernel(fidelities))``.

    Args:
        design_dims: columns of the design part of ``X`` (``d`` of them).
        fidelity_dims: columns of the fidelities (each divided by its target).
    Returns:
        The kernel. Its RBF has BoTorch's dimension-scaled lengthscale prior (as the shared design kernel);
        the amplitude has a Gamma(1.5, 3) prior (mean 0.5, mode 0.17, in standardised outcome units).
    """
    from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior

    design = get_covar_module_with_dim_scaled_prior(ard_num_dims=len(design_dims), active_dims=list(design_dims))
    fid = TargetVanishingKernel(len(fidelity_dims), active_dims=torch.as_tensor(list(fidelity_dims)))
    return ScaleKernel(design * fid, outputscale_prior=GammaPrior(*_AMPLITUDE_PRIOR))
