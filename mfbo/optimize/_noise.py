"""Observation noise of learning-curve data: independent per observation plus one offset per training run.

A trial contributes several rows to the surrogate (its validation loss after a few epochs, see
:func:`mfbo.optimize._trace.training_rows`). A training seed moves the whole curve: a lucky initialisation or
data order stays lucky over the epochs, so the rows of one run share much of their noise. Modelled as
independent, rows that agree look like independent confirmations and the run's offset is read as the
design's own value.

:class:`RunCorrelatedNoise` adds a learned per-run variance ``sigma_run^2`` to the independent
``sigma_row^2``: between two rows of the same run the noise covariance is ``sigma_run^2``, within a row
``sigma_row^2 + sigma_run^2``. A new run (any points other than the training rows) gets independent noise of
variance ``sigma_row^2 + sigma_run^2``. ``sigma_row^2`` carries BoTorch's ``LogNormal(-4, 1)`` noise prior
(Hvarfner et al. 2024) and ``sigma_run^2`` an exponential prior, densest at its floor, in standardised
outcome units; both have BoTorch's lower bound.
"""

from __future__ import annotations

from typing import Any

import torch
from botorch.models.utils.gpytorch_modules import MIN_INFERRED_NOISE_LEVEL
from gpytorch.constraints import GreaterThan
from gpytorch.likelihoods import _GaussianLikelihoodBase
from gpytorch.likelihoods.noise_models import Noise
from gpytorch.priors import GammaPrior, LogNormalPrior
from linear_operator.operators import ConstantDiagLinearOperator, DenseLinearOperator

__all__ = ["RunCorrelatedNoise", "RunNoiseLikelihood"]

# rate of the exponential (Gamma(1, rate)) prior on the per-run variance, standardised units (mean 1 / rate)
_RUN_NOISE_RATE = 10.0


class RunCorrelatedNoise(Noise):
    """Noise covariance with a shared offset per run.

    Args:
        train_X: ``(n, dim)`` the surrogate's training inputs (the rows whose run labels are known).
        runs: ``(n,)`` integer run label of each training row (rows of one trial share a label).
    """

    def __init__(self, train_X: torch.Tensor, runs: torch.Tensor):
        super().__init__()
        self._train_X = train_X.detach()
        runs = torch.as_tensor(runs).reshape(-1)
        if runs.numel() != train_X.shape[-2]:
            raise ValueError(f"{runs.numel()} run labels for {train_X.shape[-2]} training rows")
        self._same_run = (runs[:, None] == runs[None, :]).to(train_X)
        for name in ("raw_row_noise", "raw_run_noise"):
            self.register_parameter(name, torch.nn.Parameter(torch.zeros(1, dtype=train_X.dtype)))
            self.register_constraint(name, GreaterThan(MIN_INFERRED_NOISE_LEVEL, transform=None))
        row_prior = LogNormalPrior(loc=-4.0, scale=1.0)
        self.register_prior("row_noise_prior", row_prior, _row_noise, _set_row_noise)
        self.register_prior("run_noise_prior", GammaPrior(1.0, _RUN_NOISE_RATE), _run_noise, _set_run_noise)
        self.start(row_prior.mode, 0.0)

    def start(self, row: Any, run: Any) -> None:
        """Set both variances (standardised units; raised to just above the lower bound where below it)."""
        floor = MIN_INFERRED_NOISE_LEVEL * 1.01
        _set_row_noise(self, torch.as_tensor(row, dtype=self._train_X.dtype).clamp_min(floor))
        _set_run_noise(self, torch.as_tensor(run, dtype=self._train_X.dtype).clamp_min(floor))

    @property
    def row_noise(self) -> torch.Tensor:
        """``(1,)`` independent per-row variance (standardised units)."""
        return self.raw_row_noise_constraint.transform(self.raw_row_noise)

    @property
    def run_noise(self) -> torch.Tensor:
        """``(1,)`` variance of the per-run offset (standardised units)."""
        return self.raw_run_noise_constraint.transform(self.raw_run_noise)

    def _is_train(self, X: Any) -> bool:
        if isinstance(X, (list, tuple)):
            X = X[0] if len(X) == 1 else None
        return (torch.is_tensor(X) and X.shape[-2:] == self._train_X.shape
                and bool((X == self._train_X).all()))

    def forward(self, *params: Any, shape: torch.Size | None = None, **kwargs: Any):
        total = self.row_noise + self.run_noise
        if params and self._is_train(params[0]):
            n = self._train_X.shape[-2]
            eye = torch.eye(n, dtype=total.dtype, device=total.device)
            return DenseLinearOperator(self.row_noise * eye + self.run_noise * self._same_run)
        if shape is None:
            X = params[0] if params and torch.is_tensor(params[0]) else None
            shape = X.shape[:-1] if X is not None else torch.Size([1])
        batch, n = shape[:-1], shape[-1]
        return ConstantDiagLinearOperator(total.expand(*batch, 1), diag_shape=n)


def _row_noise(m: RunCorrelatedNoise) -> torch.Tensor:
    return m.row_noise


def _run_noise(m: RunCorrelatedNoise) -> torch.Tensor:
    return m.run_noise


def _set_row_noise(m: RunCorrelatedNoise, value: Any) -> None:
    value = torch.as_tensor(value).to(m.raw_row_noise).reshape(1)
    m.initialize(raw_row_noise=m.raw_row_noise_constraint.inverse_transform(value))


def _set_run_noise(m: RunCorrelatedNoise, value: Any) -> None:
    value = torch.as_tensor(value).to(m.raw_run_noise).reshape(1)
    m.initialize(raw_run_noise=m.raw_run_noise_constraint.inverse_transform(value))


class RunNoiseLikelihood(_GaussianLikelihoodBase):
    """Gaussian likelihood with :class:`RunCorrelatedNoise`.

    ``noise`` is the variance of a new run's value around the latent function (``sigma_row^2 +
    sigma_run^2``), which is what predictions "with observation noise" add.
    """

    def __init__(self, train_X: torch.Tensor, runs: torch.Tensor):
        super().__init__(noise_covar=RunCorrelatedNoise(train_X, runs))

    @property
    def noise(self) -> torch.Tensor:
        return self.noise_covar.row_noise + self.noise_covar.run_noise
