"""The fidelity-discrepancy kernel term (mfbo/optimize/_kernels.py) and the surrogate that uses it."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mfbo.errors import OptimizerError
from mfbo.optimize import MultiFidelityOptimizer, SearchSpace
from mfbo.optimize._kernels import TargetVanishingKernel
from mfbo.optimize._surrogate import Surrogate, fit_surrogate
from mfbo.optimize._trace import FidelityEncoder

SPACE = {"x": {"type": "float", "bounds": [0.0, 1.0]}, "y": {"type": "float", "bounds": [0.0, 1.0]},
         "data_fraction": {"type": "fidelity", "bounds": [0.1, 1.0], "target": 1.0},
         "epochs": {"type": "fidelity", "bounds": [1, 20], "target": 20}}


def test_target_vanishing_kernel_is_zero_at_target_and_positive_semidefinite():
    k = TargetVanishingKernel(2)
    s = torch.rand(30, 2, dtype=torch.double).clamp_min(0.05)
    s[:5] = 1.0  # five rows at target fidelity
    K = k(s, s).to_dense().detach()
    assert torch.allclose(K[:5], torch.zeros_like(K[:5])) and torch.allclose(K[:, :5], torch.zeros_like(K[:, :5]))
    assert torch.allclose(K, K.T)
    assert float(torch.linalg.eigvalsh(K).min()) > -1e-10
    assert torch.allclose(k(s, s, diag=True).detach(), torch.diagonal(K))
    # the discrepancy grows as a run moves away from target
    lo, mid = torch.tensor([[0.1, 0.1]], dtype=torch.double), torch.tensor([[0.5, 0.5]], dtype=torch.double)
    assert float(k(lo, lo, diag=True)) > float(k(mid, mid, diag=True)) > 0


def _value(c, frac, ep, mislead):
    """Target 1 + (x - 0.3)^2 + 0.3 (y - 0.5)^2; below target a gap that is either the same for every design
    or a design-dependent wave that reorders designs."""
    base = 1 + (c["x"] - 0.3) ** 2 + 0.3 * (c["y"] - 0.5) ** 2
    gap = (1 - frac) + (1 - ep / 20)
    shift = 0.6 * math.sin(9 * c["x"]) * math.cos(5 * c["y"]) if mislead else 0.3
    return base + gap * shift


def _target_rank_correlation(mislead: bool, discrepancy: bool) -> float:
    space = SearchSpace.from_dict(SPACE)
    enc = FidelityEncoder(space)
    rng = np.random.default_rng(0)
    configs = space.sample(60, seed=1)
    fracs, epochs, y = [], [], []
    for i, c in enumerate(configs):  # every fifth design at target, the rest cheap
        f, e = (1.0, 20) if i % 5 == 0 else (float(rng.choice([0.1, 0.25, 0.5])), int(rng.choice([2, 5, 10])))
        fracs.append(f)
        epochs.append(e)
        y.append(_value(c, f, e, mislead) * math.exp(0.01 * rng.standard_normal()))
    model, log_outcome = fit_surrogate(enc.encode(configs, fracs, epochs), np.asarray(y), enc, maxiter=100,
                                       discrepancy=discrepancy)
    test = space.sample(200, seed=7)
    mean, _ = Surrogate(model, log_outcome, enc).predict(test)
    return float(spearmanr(mean, [_value(c, 1.0, 20, mislead) for c in test])[0])


def test_discrepancy_term_ranks_designs_at_target_when_cheap_runs_mislead():
    # cheap runs that reorder designs: the shared product kernel must explain the reordering as part of
    # the target; the discrepancy term takes it up (measured 0.71 without, 0.85 with)
    plain, with_term = _target_rank_correlation(True, False), _target_rank_correlation(True, True)
    assert with_term > plain + 0.05, (plain, with_term)
    # cheap runs off by the same amount everywhere: the term costs nothing (0.995 and 0.998)
    assert _target_rank_correlation(False, True) > 0.98


def test_optimizer_option_is_validated_stored_and_used():
    with pytest.raises(OptimizerError, match="fidelity_discrepancy"):
        MultiFidelityOptimizer(SPACE, fidelity_discrepancy="yes")
    opt = MultiFidelityOptimizer(SPACE, seed=0, raw_samples=64, num_restarts=1, n_initial=3,
                                 fidelity_discrepancy=True)
    for _ in range(5):
        (c,) = opt.ask(1)
        curve = [_value(c.params, c.data_fraction, e, True) for e in range(1, c.epochs + 1)]
        opt.tell(c.trial_index, curve, c.data_fraction * c.epochs)
    assert "discrepancy.outputscale" in opt.surrogate().fidelity_hyperparameters()
    again = MultiFidelityOptimizer.from_state_dict(opt.state_dict())
    assert again.fidelity_discrepancy is True
    off = MultiFidelityOptimizer(SPACE, fidelity_discrepancy=False)
    assert MultiFidelityOptimizer.from_state_dict(off.state_dict()).fidelity_discrepancy is False
