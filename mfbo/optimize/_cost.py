"""A cost model learned from observed wall times, refitted every round.

Training cost grows roughly like ``fraction x epochs``, and design parameters (network width, fingerprint
size, cutoff) scale it further, so the model is a log-linear regression::

    log cost = w0 + w_d * log s_data + w_e * log s_epochs + w_x . x_design

on the surrogate's encoded inputs (fidelities normalised so target = 1). A small ridge penalty pulls the
design weights to zero and the fidelity exponents to 1 while data are scarce; before any observation the
model is ``cost = s_data * s_epochs`` (relative units). Costs are reported in full-fidelity-equivalents of
the *reference* configuration (the centre of the design box at target fidelity) when fed to the
acquisition, which is what inverse-cost weighting needs: only ratios matter.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from botorch.models.deterministic import DeterministicModel
from torch import Tensor

__all__ = ["LogLinearCostModel", "CostModule"]



class LogLinearCostModel:
    """Ridge regression of log cost on log fidelities and design features.

    Args:
        n_design: number of encoded design columns.
        fidelity_cols: column indices (in the encoded X) of the fidelities, in order (data, iteration).
        ridge: ridge penalty (on standardised features) towards the prior weights.
    """

    def __init__(self, n_design: int, fidelity_cols: list[int], ridge: float = 1.0):
        self.n_design = n_design
        self.fidelity_cols = list(fidelity_cols)
        self.ridge = float(ridge)
        self.n_obs = 0
        # weights over features [1, log s_f..., x_design...]; prior: exponent 1 per fidelity.
        self.coef = np.zeros(1 + len(self.fidelity_cols) + n_design)
        self.coef[1: 1 + len(self.fidelity_cols)] = 1.0
        self.residual_sd = float("nan")

    def _features(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=float))
        logs = np.log(np.clip(X[:, self.fidelity_cols], 1e-4, None)) if self.fidelity_cols else np.zeros((len(X), 0))
        return np.hstack([np.ones((len(X), 1)), logs, X[:, : self.n_design]])

    def fit(self, X: np.ndarray, cost: np.ndarray) -> LogLinearCostModel:
        """Fit on encoded inputs ``X (n, d_enc + n_fid)`` and costs ``(n,)`` in seconds (> 0)."""
        cost = np.asarray(cost, dtype=float)
        ok = np.isfinite(cost) & (cost > 0)
        X, cost = np.atleast_2d(np.asarray(X, dtype=float))[ok], cost[ok]
        self.n_obs = int(ok.sum())
        if self.n_obs == 0:
            return self
        F = self._features(X)
        y = np.log(cost)
        prior = np.zeros(F.shape[1])
        prior[1: 1 + len(self.fidelity_cols)] = 1.0
        # Ridge towards the prior on every coefficient but the intercept; the intercept is free.
        lam = np.full(F.shape[1], self.ridge)
        lam[0] = 1e-8
        A = F.T @ F + np.diag(lam)
        b = F.T @ y + lam * prior
        self.coef = np.linalg.solve(A, b)
        resid = y - F @ self.coef
        self.residual_sd = float(np.sqrt(np.mean(resid ** 2))) if self.n_obs > 1 else float("nan")
        return self

    def predict(self, X: np.ndarray, design_exponent: float = 1.0) -> np.ndarray:
        """Predicted cost in seconds (relative units before any fit), shape ``(n,)``.

        Args:
            X: encoded inputs ``(n, d_enc + n_fid)``.
            design_exponent: power applied to the design-dependent factor of the cost (1: the fitted
                model; 0: cost depends on the fidelities only). See :meth:`module`.
        """
        return np.exp(self._features(X) @ self._scaled_coef(design_exponent))

    def _scaled_coef(self, design_exponent: float) -> np.ndarray:
        coef = self.coef.copy()
        coef[1 + len(self.fidelity_cols):] *= float(design_exponent)
        return coef

    def to_dict(self) -> dict:
        return {"coef": self.coef.tolist(), "n_obs": self.n_obs, "residual_sd": self.residual_sd,
                "fidelity_cols": self.fidelity_cols, "n_design": self.n_design}

    def module(self, scale: float = 1.0, overhead: float = 0.0, design_exponent: float = 1.0) -> CostModule:
        """A BoTorch deterministic model computing ``predict(X, design_exponent) / scale + overhead``.

        ``design_exponent`` < 1 "cools" the design-dependent part of the cost (cost-cooling, Lee et al.
        2020, "Cost-aware Bayesian optimization"): the fidelity trade-off keeps its full cost, but a design
        that is expensive at every fidelity is penalised less, so an expensive optimum is not avoided for ever.
        """
        return CostModule(self._scaled_coef(design_exponent), self.n_design, self.fidelity_cols, scale, overhead)


class CostModule(DeterministicModel):
    """BoTorch deterministic cost model ``exp(features(X) @ coef) / scale + overhead`` (``... x n x 1``).

    ``overhead`` (in the units of ``predict / scale``, i.e. FFE) is a fixed per-trial cost: the optimiser's
    own round trip, process start-up, validation passes. It keeps the inverse-cost weighting from
    preferring ever-cheaper runs whose information is nearly nil (BoTorch's tutorials use a fixed cost too).
    """

    def __init__(self, coef: np.ndarray, n_design: int, fidelity_cols: list[int], scale: float = 1.0,
                 overhead: float = 0.0):
        super().__init__()
        self._num_outputs = 1
        self.register_buffer("coef", torch.as_tensor(np.asarray(coef), dtype=torch.double))
        self.n_design = n_design
        self.fidelity_cols = list(fidelity_cols)
        self.log_scale = math.log(scale)
        self.overhead = float(overhead)

    def forward(self, X: Tensor) -> Tensor:
        coef = self.coef.to(X)
        out = coef[0] - self.log_scale + X[..., : self.n_design] @ coef[1 + len(self.fidelity_cols):]
        for k, col in enumerate(self.fidelity_cols):
            out = out + coef[1 + k] * X[..., col].clamp_min(1e-4).log()
        return (out.exp() + self.overhead).unsqueeze(-1)
