"""Recommendation: the feasible design minimising the posterior mean at target fidelity.

Candidates are every evaluated design (whatever fidelity it ran at), a Sobol sample of the design space,
and a few L-BFGS-B refinements of the posterior mean started from the best of those, with the fidelities
fixed at their targets; integer and categorical values are rounded before scoring. Unlike Ax's
``get_best_parameterization`` this never returns a low-fidelity observation just because it was low.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["recommend"]


def recommend(opt, surrogate, completed, n_sobol: int = 256, n_refine: int = 3) -> dict:
    """Return the recommended design parameters (natural units, no fidelities).

    Args:
        opt: the :class:`~mfbo.optimize.MultiFidelityOptimizer` (space, encoder, constraints).
        surrogate: its fitted :class:`~mfbo.optimize._surrogate.Surrogate`.
        completed: completed trials.
        n_sobol: quasi-random designs scored in addition to the evaluated ones.
        n_refine: gradient refinements started from the best candidates.
    """
    from botorch.acquisition import PosteriorMean
    from botorch.generation.gen import gen_candidates_scipy

    enc = opt.encoder
    evaluated = [t.params for t in completed]
    configs = evaluated + opt.space.sample(n_sobol, seed=opt.seed + 4242)
    Xd = opt.space.encode(configs)
    mean = opt._target_mean(surrogate, Xd)
    fixed = {col: 1.0 for col in enc.fidelity_cols}
    starts = np.zeros((min(n_refine, len(Xd)), enc.dim))
    starts[:, : enc.d] = Xd[np.argsort(-mean)[: len(starts)]]
    for col in enc.fidelity_cols:
        starts[:, col] = 1.0
    lo, hi = enc.bounds()
    refined: list[dict] = []
    try:
        if not len(starts):
            raise ValueError("no refinement asked")
        Xopt, _ = gen_candidates_scipy(
            torch.as_tensor(starts).unsqueeze(-2), PosteriorMean(surrogate.model),
            lower_bounds=torch.as_tensor(lo), upper_bounds=torch.as_tensor(hi), fixed_features=fixed,
            options={"maxiter": 50},
        )
        refined = opt.space.decode(Xopt.squeeze(-2).detach().numpy()[:, : enc.d])
    except Exception:  # noqa: BLE001 - the refinement is an optional improvement over the scored set
        pass
    configs = configs + refined
    mean = opt._target_mean(surrogate, opt.space.encode(configs))
    feasible = opt._feasible(configs)
    if not feasible.any():
        from mfbo.errors import OptimizerError

        raise OptimizerError("no feasible configuration to recommend under the constraints")
    i = int(np.argmax(np.where(feasible, mean, -np.inf)))
    return dict(configs[i])
