"""Recommendation: the configuration to take away, judged by the surrogate at target fidelity.

Two rules (``MultiFidelityOptimizer(recommendation=...)``):

- ``"target"``: once any trial ran at target fidelity, the optimiser recommends the target-fidelity run
  with the lowest observed value and keeps it until a new target-fidelity result arrives
  (``MultiFidelityOptimizer.recommend``); before that, as ``"evaluated"``. While ``fidelity_check``
  has handed proposals to the GP of target-fidelity runs alone, the target run it gives the best
  posterior mean (:mod:`mfbo.optimize._fidelity_check`).
- ``"evaluated"`` (default): among the
  evaluated feasible designs (whatever fidelity each ran at), the
  one with the best pessimistic estimate at target fidelity, posterior mean minus one posterior standard
  deviation (maximisation convention: the loss's upper confidence bound). A design seen only at low
  fidelity wins only when the model is sure its target-fidelity loss is lower; the recommendation is
  never an extrapolation into a region without data.
- ``"optimised"``: the design maximising the posterior mean alone over the evaluated designs, a Sobol
  sample and a few L-BFGS-B refinements of the posterior mean with the fidelities fixed at their targets
  (integer and categorical values rounded before scoring). The maximum of a posterior mean over the whole
  space is often an artefact of the model where it has no data (the optimiser's curse): measured on the
  priors benchmark it was repeatedly worse than the best evaluated design (docs/optimize.md).

Unlike Ax's ``get_best_parameterization``, neither returns a low-fidelity observation just because it
was low.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["RECOMMENDATIONS", "hold_or_switch", "mean_maximisers", "recommend", "recommend_evaluated"]

RECOMMENDATIONS = ("evaluated", "optimised", "target")


def recommend_evaluated(opt, surrogate, completed, kappa: float = 1.0) -> dict:
    """The evaluated feasible design maximising ``mean - kappa * std`` at target fidelity.

    Args:
        opt: the :class:`~mfbo.optimize.MultiFidelityOptimizer` (space, encoder, constraints).
        surrogate: its fitted :class:`~mfbo.optimize._surrogate.Surrogate`.
        completed: completed trials (at least one).
        kappa: posterior standard deviations subtracted from the mean (model units).
    Returns:
        Design parameters in natural units, no fidelities.
    """
    from mfbo.errors import OptimizerError

    configs = opt._unique_designs(completed)
    feasible = opt._feasible(configs)
    if not feasible.any():
        raise OptimizerError("no evaluated configuration satisfies the constraints; nothing to recommend")
    mean, std = opt._target_mean_std(surrogate, opt.space.encode(configs))
    score = np.where(feasible, mean - kappa * std, -np.inf)
    return dict(configs[int(np.argmax(score))])


def hold_or_switch(opt, surrogate, held: dict | None, challenger: dict, hold: float) -> dict:
    """The recommendation to give now: ``challenger`` unless ``held`` (the previous one) should be kept.

    The challenger replaces the held design only when its target-fidelity value is better by more than
    ``hold`` standard deviations of the posterior *difference* of the two (their joint posterior at target
    fidelity, so shared uncertainty cancels): with ``hold = 1`` the model must give the challenger a
    probability of at least 0.84 of being better. Evidence that separates them (a run of either near
    target fidelity, or cheap runs that the model trusts) moves that difference; a refit that only
    reshuffles near-equal designs does not, so the recommendation stops wandering among them.

    Args:
        opt: the :class:`~mfbo.optimize.MultiFidelityOptimizer` (space, encoder, constraints).
        surrogate: its fitted :class:`~mfbo.optimize._surrogate.Surrogate`.
        held: the recommendation given before (design parameters), or None.
        challenger: the design the recommendation rule ranks first now.
        hold: posterior standard deviations of the difference (>= 0; 0 always switches).
    Returns:
        ``challenger`` or ``held`` (design parameters in natural units).
    """
    if held is None or hold <= 0 or opt._design_key(held) == opt._design_key(challenger) \
            or not opt._feasible([held])[0]:
        return challenger
    X = opt._at_target(opt.space.encode([challenger, held]))
    with torch.no_grad():
        post = surrogate.model.posterior(torch.as_tensor(X))
        mean = post.mean.reshape(-1).numpy()
        cov = post.distribution.covariance_matrix.reshape(2, 2).numpy()
    sd = float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1], 0.0)))
    return challenger if mean[0] - mean[1] > hold * sd else dict(held)


def mean_maximisers(opt, surrogate, configs: list[dict], n_refine: int = 3) -> list[dict]:
    """Designs maximising the posterior mean at target fidelity: L-BFGS-B from the ``n_refine`` best of
    ``configs`` with the fidelities fixed at their targets, rounded (integers, categories).

    Args:
        opt: the :class:`~mfbo.optimize.MultiFidelityOptimizer`.
        surrogate: its fitted :class:`~mfbo.optimize._surrogate.Surrogate`.
        configs: designs to start from (the best by posterior mean are used).
        n_refine: number of starts.
    Returns:
        Up to ``n_refine`` designs (natural units); empty if the optimisation fails.
    """
    from botorch.acquisition import PosteriorMean
    from botorch.generation.gen import gen_candidates_scipy

    enc = opt.encoder
    if n_refine < 1 or not configs:
        return []
    Xd = opt.space.encode(configs)
    mean = opt._target_mean(surrogate, Xd)
    fixed = {col: 1.0 for col in enc.fidelity_cols}
    starts = np.zeros((min(n_refine, len(Xd)), enc.dim))
    starts[:, : enc.d] = Xd[np.argsort(-mean)[: len(starts)]]
    for col in enc.fidelity_cols:
        starts[:, col] = 1.0
    lo, hi = enc.bounds()
    try:
        Xopt, _ = gen_candidates_scipy(
            torch.as_tensor(starts).unsqueeze(-2), PosteriorMean(surrogate.model),
            lower_bounds=torch.as_tensor(lo), upper_bounds=torch.as_tensor(hi), fixed_features=fixed,
            options={"maxiter": 50},
        )
    except Exception:  # noqa: BLE001 - an optional improvement over the designs started from
        return []
    return opt.space.decode(Xopt.squeeze(-2).detach().numpy()[:, : enc.d])


def recommend(opt, surrogate, completed, n_sobol: int = 256, n_refine: int = 3) -> dict:
    """The ``"optimised"`` rule: the design maximising the posterior mean at target fidelity.

    Args:
        opt: the :class:`~mfbo.optimize.MultiFidelityOptimizer` (space, encoder, constraints).
        surrogate: its fitted :class:`~mfbo.optimize._surrogate.Surrogate`.
        completed: completed trials.
        n_sobol: quasi-random designs scored in addition to the evaluated ones.
        n_refine: gradient refinements started from the best candidates.
    Returns:
        Design parameters in natural units, no fidelities.
    """
    evaluated = [t.params for t in completed]
    configs = evaluated + opt.space.sample(n_sobol, seed=opt.seed + 4242)
    configs = configs + mean_maximisers(opt, surrogate, configs, n_refine)
    mean = opt._target_mean(surrogate, opt.space.encode(configs))
    feasible = opt._feasible(configs)
    if not feasible.any():
        from mfbo.errors import OptimizerError

        raise OptimizerError("no feasible configuration to recommend under the constraints")
    i = int(np.argmax(np.where(feasible, mean, -np.inf)))
    return dict(configs[i])
