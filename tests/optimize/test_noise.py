"""Per-run observation noise (mfbo/optimize/_noise.py) and the surrogate that uses it."""

from __future__ import annotations

import numpy as np
import torch

from mfbo.optimize import SearchSpace
from mfbo.optimize._noise import RunCorrelatedNoise
from mfbo.optimize._surrogate import Surrogate, fit_surrogate
from mfbo.optimize._trace import FidelityEncoder, training_rows
from mfbo.optimize._types import Trial

SPACE = {"x": {"type": "float", "bounds": [0.0, 1.0]},
         "epochs": {"type": "fidelity", "bounds": [1, 20], "target": 20}}


def test_noise_covariance_is_shared_within_a_run_and_independent_for_new_runs():
    X = torch.rand(6, 2, dtype=torch.double)
    noise = RunCorrelatedNoise(X, torch.tensor([0, 0, 0, 1, 1, 2]))
    noise.start(0.01, 0.04)
    K = noise(X, shape=torch.Size([6])).to_dense().detach()
    expected = 0.01 * torch.eye(6, dtype=torch.double)
    for block in ([0, 1, 2], [3, 4], [5]):
        expected[np.ix_(block, block)] += 0.04
    assert torch.allclose(K, expected)
    # the training inputs as gpytorch's prediction strategy passes them (a list)
    assert torch.allclose(noise([X], shape=torch.Size([6])).to_dense().detach(), expected)
    # any other points are new runs: independent noise of the total variance
    new = noise(torch.rand(4, 2, dtype=torch.double), shape=torch.Size([4])).to_dense().detach()
    assert torch.allclose(new, 0.05 * torch.eye(4, dtype=torch.double))


def _trials(offset_sd: float, seed: int = 0) -> tuple[SearchSpace, list[Trial]]:
    """30 trials of ``x`` with 20-epoch curves ``(1 + (x - 0.4)^2)(1 + 1/e)``, each times
    ``exp(offset + 0.005 eps_epoch)``: one offset per run, of sd ``offset_sd``."""
    rng = np.random.default_rng(seed)
    space = SearchSpace.from_dict(SPACE)
    trials = []
    for i, c in enumerate(space.sample(30, seed=seed)):
        ep = np.arange(1, 21)
        offset = offset_sd * rng.standard_normal()
        curve = (1 + (c["x"] - 0.4) ** 2) * (1 + 1 / ep) * np.exp(offset + 0.005 * rng.standard_normal(20))
        trials.append(Trial(index=i, params=c, data_fraction=1.0, epochs=20, curve=[float(v) for v in curve]))
    return space, trials


def _fit(offset_sd: float, runs: bool) -> Surrogate:
    space, trials = _trials(offset_sd)
    enc = FidelityEncoder(space)
    X, y, labels = training_rows(enc, trials, 5, 250, with_runs=True)
    assert len(set(labels.tolist())) == 30 and len(y) == 150
    model, log_outcome = fit_surrogate(X, y, enc, maxiter=100, amplitude=True, runs=labels if runs else None)
    return Surrogate(model, log_outcome, enc)


def _parts(s: Surrogate) -> tuple[float, float]:
    """(per-run sd, per-row sd) in log units."""
    scale = float(s.model.outcome_transform.stdvs.reshape(-1)[0])
    noise = s.model.likelihood.noise_covar
    return float(noise.run_noise.detach().sqrt()) * scale, float(noise.row_noise.detach().sqrt()) * scale


def test_marginal_likelihood_finds_the_per_run_offset_and_keeps_the_design_trend():
    s = _fit(0.05, runs=True)
    run_sd, row_sd = _parts(s)
    # measured 0.046 and 0.005 (true 0.05 and 0.005)
    assert 0.03 < run_sd < 0.08 and row_sd < 0.02, (run_sd, row_sd)
    assert abs(s.noise_sd() - np.hypot(run_sd, row_sd)) < 1e-9
    # the design's own variation stays in the model: target 1.05 at x = 0.4, 1.43 at x = 1
    mean, _ = s.predict([{"x": 0.4}, {"x": 1.0}])
    assert abs(mean[0] - 1.05) < 0.05 and abs(mean[1] - 1.428) < 0.1, mean


def test_run_offset_stays_at_its_floor_when_runs_carry_none():
    run_sd, row_sd = _parts(_fit(0.0, runs=True))
    assert run_sd < 0.01 and row_sd < 0.01, (run_sd, row_sd)


def test_training_rows_label_each_row_with_its_trial():
    space, trials = _trials(0.0)
    X, y, labels = training_rows(FidelityEncoder(space), trials[:3], 5, 250, with_runs=True)
    assert labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    X2, y2 = training_rows(FidelityEncoder(space), trials[:3], 5, 250)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
