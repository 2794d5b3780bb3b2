"""Fidelity check: do the cheap runs help predict target runs, or would target runs alone predict better?

With ``MultiFidelityOptimizer(fidelity_check=True)`` every target-fidelity trial is predicted twice before
it runs: by the multi-fidelity surrogate (every run, every fidelity) and, once at least
:data:`MIN_TARGET_DESIGNS` designs ran at target, by a GP of the target-fidelity runs alone (BoTorch's
``SingleTaskGP`` on the design columns, its default kernel and priors). When the run arrives each
prediction is scored by the log density it gave the observed value (prequential scoring, Dawid 1984).
Where cheap runs mislead the multi-fidelity model — on the mlip_oc20 replay, among the best 5 % of
configurations, a design's rank after 3 of 10 epochs correlates 0.05 with its rank at target — its
target predictions are confidently wrong and the target-only model predicts most target runs better;
the optimiser then proposes target-fidelity runs by expected improvement on the target-only model, as
single-fidelity BO would, until the multi-fidelity model predicts most of them better again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

from mfbo.optimize._surrogate import uses_log_outcome

__all__ = ["MIN_TARGET_DESIGNS", "MIN_CALIBRATION_RUNS", "fit_target_gp", "noise_from_misses", "outcome_moments",
           "predict_new_run", "predictive_logpdf", "check_scores", "target_only_wins"]

#: Distinct designs that must have run at target fidelity before the target-only GP predicts: with
#: fewer, its hyperparameters are guesses and its scores say nothing about the cheap runs.
MIN_TARGET_DESIGNS = 2

#: The median of a chi-square variable with one degree of freedom: median(r^2) = 0.455 var(r) for normal r.
_MEDIAN_CHI2_1 = 0.4549364231195724

#: Target runs the target-only GP must have predicted before its noise is read off its misses
#: (:func:`noise_from_misses`); with fewer it holds the multi-fidelity surrogate's noise.
MIN_CALIBRATION_RUNS = 3


def fit_target_gp(Xd: np.ndarray, y: np.ndarray, noise_var: float | None = None):
    """Fit BoTorch's ``SingleTaskGP`` to target-fidelity results.

    Args:
        Xd: ``(n, d)`` encoded designs (unit cube, one-hot categoricals).
        y: ``(n,)`` target-fidelity values in the objective's units (lower is better).
        noise_var: the observation-noise variance in the model's outcome units (of ``log(loss)`` with a
            log outcome), held fixed; None: inferred. A handful of target runs cannot tell run-to-run
            scatter from signal (the fit interpolates them and predicts with a fraction of the real
            scatter), so the optimiser passes the variance the multi-fidelity surrogate infers from
            every run, raised to :func:`noise_from_misses` once the target-only GP has predicted
            enough target runs.
    Returns:
        ``(model, log_outcome)``: the fitted model on ``-g(y)`` (``g = log`` when every value is positive,
        as the multi-fidelity surrogate does) and whether ``g`` is log.
    """
    import torch
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    y = np.asarray(y, dtype=float)
    log_outcome = uses_log_outcome(y)
    z = -(np.log(y) if log_outcome else y)
    tY = torch.as_tensor(z, dtype=torch.double).unsqueeze(-1)
    yvar = None if noise_var is None else torch.full_like(tY, max(float(noise_var), 1e-10))
    model = SingleTaskGP(torch.as_tensor(np.asarray(Xd, dtype=float), dtype=torch.double), tY, train_Yvar=yvar)
    try:
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    except Exception:  # noqa: BLE001 - an unfitted GP keeps its prior hyperparameters; still a model
        pass
    model.eval()
    return model, log_outcome


def predict_new_run(model, log_outcome: bool, Xd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sd of a new run's value (observation noise included), objective units.

    Args:
        model: from :func:`fit_target_gp`.
        log_outcome: its second return value.
        Xd: ``(n, d)`` encoded designs.
    Returns:
        ``(mean, sd)``, each ``(n,)`` (log-normal moments with a log outcome).
    """
    import torch

    with torch.no_grad():
        post = model.posterior(torch.as_tensor(np.asarray(Xd, dtype=float), dtype=torch.double),
                               observation_noise=True)
        mu = -post.mean.squeeze(-1).numpy()
        var = post.variance.squeeze(-1).clamp_min(0).numpy()
    if log_outcome:
        mean = np.exp(mu + var / 2)
        return mean, np.sqrt(np.expm1(var)) * mean
    return mu, np.sqrt(var)


def outcome_moments(value: float, prediction: Mapping) -> tuple[float, float, float]:
    """``(x, mu, var)``: an observed value and a prediction ``{"mean", "sd", "log_outcome"}`` (objective
    units) in the model's outcome units: of ``log`` with a log outcome (the log-normal with those
    moments), else of the value itself."""
    mean, sd = float(prediction["mean"]), float(prediction["sd"])
    if prediction.get("log_outcome") and value > 0 and mean > 0:
        return (math.log(value), *_log_normal(mean, sd))
    return float(value), mean, sd * sd


def _log_normal(mean: float, sd: float) -> tuple[float, float]:
    """``(mu, var)`` of the log of a log-normal variable with this (positive) mean and sd."""
    var = math.log1p((sd / mean) ** 2)
    return math.log(mean) - var / 2, var


def noise_from_misses(records: Iterable[tuple[float, Mapping]], floor: float, cap: float | None = None) -> float:
    """The observation-noise variance the target-only GP's one-step-ahead misses of target runs show:
    ``median(r^2) / 0.455 - median(v)``, with ``r`` a run's miss and ``v`` the latent (noise-free) part of
    its predicted variance, model outcome units (``0.455`` is the median of a chi-square with one degree
    of freedom, so the first term is a normal miss's variance).

    The multi-fidelity surrogate reads its noise off learning curves, whose rows share a run's seed, and
    off cheap runs, whose seed scatter differs from the target's: on the mlip_oc20 replay it put a new
    target run's scatter at 0.004 in ``log(loss)`` (0.03-0.04 with ``run_noise``) against a seed spread
    of 0.012-0.018 (five random designs, 40 draws each), and the target-only GP holding 0.004 missed its
    runs by about two predicted sd. Runs it predicted near earlier ones are missed mostly by their own
    seed, so their misses measure the noise.

    Args:
        records: ``(observed value, prediction)`` per target run the target-only GP predicted before it
            ran; a prediction is ``{"mean", "sd", "noise_var", "log_outcome"}`` (``noise_var`` the
            variance it held, outcome units).
        floor: the least variance returned (the multi-fidelity surrogate's).
        cap: the most (the scatter of the target runs' values themselves); None: no cap.
    Returns:
        The variance, ``floor`` with fewer than :data:`MIN_CALIBRATION_RUNS` usable records.
    """
    sq, latent = [], []
    for value, pred in records:
        if "noise_var" not in pred:
            continue
        x, mu, var = outcome_moments(value, pred)
        if math.isfinite(x) and math.isfinite(mu) and math.isfinite(var):
            sq.append((x - mu) ** 2)
            latent.append(max(var - float(pred["noise_var"]), 0.0))
    if len(sq) < MIN_CALIBRATION_RUNS:
        return float(floor)
    # medians, not means: a seed's heavy tail or an early miss of the model itself (fitted to two or three
    # runs) would otherwise be read as scatter of every run
    est = float(np.median(sq)) / _MEDIAN_CHI2_1 - float(np.median(latent))
    if cap is not None:
        est = min(est, float(cap))
    return max(est, float(floor))


def predictive_logpdf(value: float, mean: float, sd: float) -> float:
    """Log density of ``value`` under a prediction ``(mean, sd)`` in objective units.

    Log-normal with those moments when the value and mean are positive (the surrogates model
    ``log(loss)``, and this is the density they gave, up to the Jacobian ``1/value`` that is the same for
    every model); normal otherwise. ``-inf`` for ``sd <= 0``.
    """
    value, mean, sd = float(value), float(mean), float(sd)
    if not (sd > 0 and math.isfinite(sd) and math.isfinite(mean) and math.isfinite(value)):
        return -math.inf
    if value > 0 and mean > 0:
        mu, var = _log_normal(mean, sd)
        x = math.log(value)
    else:
        var, mu, x = sd * sd, mean, value
    return -0.5 * (math.log(2 * math.pi * var) + (x - mu) ** 2 / var)


def check_scores(records: Iterable[tuple[float, Mapping, Mapping]]) -> dict:
    """Sum the two models' log scores over target runs that both predicted.

    Args:
        records: ``(observed value, multi-fidelity prediction, target-only prediction)`` per completed
            target-fidelity run; predictions are ``{"mean", "sd"}`` in objective units.
    Returns:
        ``{"n", "multi_fidelity", "target_only", "target_only_better"}``: the number of scored runs, each
        model's summed log predictive density (higher is better) and the number of runs to which the
        target-only model gave the higher density.
    """
    n, mf, to, better = 0, 0.0, 0.0, 0
    for value, p_mf, p_to in records:
        a = predictive_logpdf(value, p_mf["mean"], p_mf["sd"])
        b = predictive_logpdf(value, p_to["mean"], p_to["sd"])
        if math.isinf(a) and math.isinf(b):
            continue
        n, mf, to, better = n + 1, mf + a, to + b, better + int(b > a)
    return {"n": n, "multi_fidelity": mf, "target_only": to, "target_only_better": better}


def target_only_wins(scores: Mapping, min_runs: int = 2) -> bool:
    """Whether the target-only model predicted most of the scored target runs better (more than half, and
    at least ``min_runs`` scored).

    A majority of runs, not the summed log density, decides: training seeds have heavy tails (on the
    mlip_oc20 record the three seeds of a configuration span 0.008 at the median and up to 0.10, on
    values near 0.31), and one such run under the target-only model's narrow predictive density would
    otherwise outweigh every run before it.
    """
    n = int(scores["n"])
    return n >= min_runs and 2 * int(scores["target_only_better"]) > n
