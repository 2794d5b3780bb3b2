"""Fidelity terms of the surrogate's kernel besides BoTorch's: the fidelity amplitude and the discrepancy.

**Fidelity amplitude** (:class:`FidelityAmplitudeKernel`, opt-in). BoTorch's multi-fidelity kernel
gives a cheap run at least the design variance of a target run: its data and epoch kernels only add
variance below target. A training run after one epoch, or on an eighth of the data, barely separates
configurations that differ widely once trained, so the model compresses the target's spread: it shrinks
the best configurations towards the mean and the final retrain beats the prediction by several sd (on the
mlip_si replay, where one epoch is a tenth of the target's). Multiplying the kernel by
``a(s) a(s')``, ``a(s) = prod_c s_c^{p_c}`` with a learned power per fidelity (``Normal(0, 1)`` prior,
0 = BoTorch's kernel), lets design differences grow (``p > 0``) or shrink (``p < 0``) towards the target;
``a = 1`` at target, so the fidelity correlation :meth:`Surrogate.fidelity_correlation` reports is
unchanged.

**Fidelity discrepancy** (opt-in).

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
from gpytorch.priors import GammaPrior, NormalPrior

__all__ = ["FidelityAmplitudeKernel", "TargetVanishingKernel", "amplitude_kernel", "discrepancy_kernel"]

# Gamma(concentration, rate) prior on the discrepancy's amplitude (standardised outcome units)
_AMPLITUDE_PRIOR = (1.5, 3.0)


class _RankOneKernel(Kernel):
    """``k(s, s') = f(s) f(s')`` for a per-row factor ``f`` (:meth:`factor`) of the active fidelity columns."""

    has_lengthscale = False

    def factor(self, s: torch.Tensor) -> torch.Tensor:
        """``f(s)``: ``(..., n)`` for fidelity rows ``s`` of shape ``(..., n, n_fidelities)``."""
        raise NotImplementedError

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, last_dim_is_batch: bool = False,
                **params) -> torch.Tensor:
        if last_dim_is_batch:
            raise NotImplementedError(f"{type(self).__name__} does not support last_dim_is_batch")
        f1, f2 = self.factor(x1), self.factor(x2)
        if diag:
            return f1 * f2
        return f1.unsqueeze(-1) * f2.unsqueeze(-2)


class TargetVanishingKernel(_RankOneKernel):
    """``k(s, s') = psi(s) psi(s')`` with ``psi(s) = 1 - prod_c s_c^{p_c}`` over the active fidelity columns.

    Inputs are fidelities divided by their targets (in ``(0, 1]``; 1 is target fidelity; values above 1
    count as target), so the kernel is zero whenever either point is at target. One learned power ``p_c > 0`` per column (Gamma(2, 2) prior,
    mean 1) says how fast the discrepancy fades as that fidelity approaches its target.
    """

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

    def factor(self, s: torch.Tensor) -> torch.Tensor:
        """``psi(s)``: ``(..., n)`` for fidelity rows ``s`` of shape ``(..., n, n_fidelities)``."""
        return 1.0 - torch.exp((torch.log(s.clamp(1e-6, 1.0)) * self.power).sum(dim=-1))


class FidelityAmplitudeKernel(_RankOneKernel):
    """``k(s, s') = a(s) a(s')`` with ``a(s) = prod_c s_c^{p_c}`` over the active fidelity columns.

    Inputs are fidelities divided by their targets (clamped to ``[1e-3, 1]``, so ``a = 1`` at and above
    target). One learned power ``p_c`` per column, ``Normal(0, 1)`` prior, starting at 0 (``k = 1``).
    """

    def __init__(self, n_fidelities: int, **kwargs):
        super().__init__(**kwargs)
        self.register_parameter("power", torch.nn.Parameter(torch.zeros(*self.batch_shape, 1, n_fidelities)))
        self.register_prior("power_prior", NormalPrior(0.0, 1.0), _amplitude_power, _set_amplitude_power)

    def factor(self, s: torch.Tensor) -> torch.Tensor:
        """``a(s)``: ``(..., n)`` for fidelity rows ``s`` of shape ``(..., n, n_fidelities)``."""
        return torch.exp((torch.log(s.clamp(1e-3, 1.0)) * self.power).sum(dim=-1))


def _amplitude_power(m: FidelityAmplitudeKernel) -> torch.Tensor:
    return m.power


def _set_amplitude_power(m: FidelityAmplitudeKernel, value: torch.Tensor) -> None:
    m.initialize(power=torch.as_tensor(value).to(m.power))


def amplitude_kernel(fidelity_dims: Sequence[int]) -> FidelityAmplitudeKernel:
    """The fidelity-amplitude factor over the given fidelity columns (each divided by its target)."""
    return FidelityAmplitudeKernel(len(fidelity_dims), active_dims=torch.as_tensor(list(fidelity_dims)))


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
