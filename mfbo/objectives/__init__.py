"""Objective backends: what one trial of a study runs, and the learning-curve record it returns.

``get_objective("builtin", train=..., val=...)`` builds mfbo's own trainer;
``get_objective("amptorch", ...)`` real AMPTorch (imported only when asked for).
"""

from mfbo.objectives._base import Objective
from mfbo.objectives._builtin import BuiltinObjective
from mfbo.objectives._record import METRIC_KEYS, RECORD_KEYS, check_evaluation, check_metric, metric_curve
from mfbo.objectives._registry import available_objectives, get_objective, register_objective, resolve_factory

__all__ = [
    "Objective",
    "BuiltinObjective",
    "register_objective",
    "get_objective",
    "available_objectives",
    "resolve_factory",
    "RECORD_KEYS",
    "METRIC_KEYS",
    "metric_curve",
    "check_metric",
    "check_evaluation",
]
