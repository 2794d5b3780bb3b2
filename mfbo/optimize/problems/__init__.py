"""Multi-fidelity benchmark problems with known (or best-known) optima.

>>> from mfbo.optimize.problems import get_problem
>>> p = get_problem("hartmann6_mf", seed=0)
>>> out = p(p.space.sample(1)[0], data_fraction=0.25, epochs=5)   # {"curve": [...5 floats], "cost": s}
>>> p.value_at_target(p.optimizer_location) - p.optimum_value       # simple regret
0.0

Registered names: ``hartmann6_mf``, ``learning_curve``, ``yahpo_lcbench``, ``yahpo_rbv2_xgboost``
(the YAHPO Gym ones need ``onnxruntime`` and the surrogate files, see :mod:`._yahpo`), ``oc20_gmp``
(GMP + SingleNN on OC20 replayed from an exhaustive grid, see :mod:`._tabular`) and ``tabular``
(any recorded table: ``get_problem("tabular", table=PATH)``).
"""

from mfbo.optimize.problems._base import Problem, UnknownProblem, get_problem, list_problems, register_problem
from mfbo.optimize.problems._synthetic import Hartmann6MF, LearningCurveProblem

__all__ = [
    "Problem",
    "UnknownProblem",
    "get_problem",
    "list_problems",
    "register_problem",
    "Hartmann6MF",
    "LearningCurveProblem",
]

register_problem("hartmann6_mf", Hartmann6MF)
register_problem("learning_curve", LearningCurveProblem)

from mfbo.optimize.problems._yahpo import YahpoLCBench, YahpoRBv2XGBoost  # noqa: E402

__all__ += ["YahpoLCBench", "YahpoRBv2XGBoost"]
register_problem("yahpo_lcbench", YahpoLCBench)
register_problem("yahpo_rbv2_xgboost", YahpoRBv2XGBoost)

from mfbo.optimize.problems._tabular import OC20GMP, TabularProblem  # noqa: E402

__all__ += ["OC20GMP", "TabularProblem"]
register_problem("oc20_gmp", OC20GMP)
register_problem("tabular", TabularProblem)

from mfbo.optimize.problems._replay import MlipMo, MlipOC20, MlipSi, ReplayProblem  # noqa: E402

__all__ += ["ReplayProblem", "MlipSi", "MlipMo", "MlipOC20"]
register_problem("mlip_si", MlipSi)
register_problem("mlip_mo", MlipMo)
register_problem("mlip_oc20", MlipOC20)
register_problem("replay", ReplayProblem)
