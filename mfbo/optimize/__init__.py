"""Multi-fidelity Bayesian optimisation: search space, surrogate, acquisition, cost model, baselines.

Public API: :func:`minimize` (one entry point for mfbo and the baselines), :class:`MultiFidelityOptimizer`
(ask/tell), :class:`SearchSpace`, and the records :class:`Candidate`, :class:`Trial`, :class:`MinimizeResult`.
Importing this package is cheap; torch/BoTorch/Ax load when an optimiser is built.
"""

from mfbo.optimize._space import Parameter, SearchSpace
from mfbo.optimize._types import Candidate, MinimizeResult, Trial

__all__ = [
    "Parameter",
    "SearchSpace",
    "Candidate",
    "Trial",
    "MinimizeResult",
    "MultiFidelityOptimizer",
    "LogLinearCostModel",
    "Surrogate",
    "minimize",
    "trace_epochs",
]


def __getattr__(name: str):
    # Lazy: keep `import mfbo.optimize` free of torch/BoTorch/Ax (the CLI imports it).
    if name == "MultiFidelityOptimizer":
        from mfbo.optimize._optimizer import MultiFidelityOptimizer

        return MultiFidelityOptimizer
    if name == "minimize":
        from mfbo.optimize._minimize import minimize

        return minimize
    if name == "LogLinearCostModel":
        from mfbo.optimize._cost import LogLinearCostModel

        return LogLinearCostModel
    if name == "Surrogate":
        from mfbo.optimize._surrogate import Surrogate

        return Surrogate
    if name == "trace_epochs":
        from mfbo.optimize._trace import trace_epochs

        return trace_epochs
    raise AttributeError(f"module 'mfbo.optimize' has no attribute {name!r}")
