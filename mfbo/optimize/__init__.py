"""Multi-fidelity Bayesian optimisation: search space, surrogate, acquisition, cost model, baselines."""

from mfbo.optimize._space import Parameter, SearchSpace
from mfbo.optimize._types import Candidate, MinimizeResult, Trial

__all__ = ["Parameter", "SearchSpace", "Candidate", "Trial", "MinimizeResult"]
