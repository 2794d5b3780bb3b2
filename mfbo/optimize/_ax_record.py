"""The Ax experiment that records every trial, arm and observation.

Ax cannot run the two-fidelity model (it refuses a second fidelity parameter at modelling time, and its
multi-fidelity acquisitions fail while trials are pending), so mfbo's model and acquisition run in BoTorch
directly and Ax keeps the record: one Ax trial per mfbo trial (same index), its arm holding the design
parameters plus both fidelities, the learning curve attached as ``Data`` with a ``step`` column (epoch), and
cost / metadata in the trial's run metadata. That record is what Ax's storage (SQLite/PostgreSQL) saves.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mfbo.optimize._space import SearchSpace

__all__ = ["AxRecord", "METRIC_NAME"]

METRIC_NAME = "objective"


def _ax_choice_values(choices: Sequence) -> tuple[list, Any, bool]:
    """Ax-compatible values for categorical choices, their ParameterType, and whether they were stringified."""
    from ax.core import ParameterType

    if all(isinstance(c, bool) for c in choices):
        return list(choices), ParameterType.BOOL, False
    if all(isinstance(c, int) and not isinstance(c, bool) for c in choices):
        return list(choices), ParameterType.INT, False
    if all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in choices):
        return [float(c) for c in choices], ParameterType.FLOAT, False
    if all(isinstance(c, str) for c in choices):
        return list(choices), ParameterType.STRING, False
    return [str(c) for c in choices], ParameterType.STRING, True


def build_ax_search_space(space: SearchSpace):
    """An Ax ``SearchSpace`` mirroring ``space`` (fidelities as ``is_fidelity`` range parameters)."""
    from ax.core import ChoiceParameter, FixedParameter, ParameterType, RangeParameter
    from ax.core import SearchSpace as AxSearchSpace

    params = []
    for p in space.parameters:
        if p.type == "categorical":
            values, ptype, _ = _ax_choice_values(p.choices)
            if len(values) == 1:
                params.append(FixedParameter(p.name, ptype, values[0]))
            else:
                params.append(ChoiceParameter(p.name, ptype, values, is_ordered=False, sort_values=False))
        elif p.type == "fidelity":
            ptype = ParameterType.INT if p.is_integer else ParameterType.FLOAT
            target = int(p.target) if p.is_integer else float(p.target)
            low, high = (int(p.low), int(p.high)) if p.is_integer else (p.low, p.high)
            params.append(RangeParameter(p.name, ptype, low, high, is_fidelity=True, target_value=target))
        else:
            ptype = ParameterType.INT if p.is_integer else ParameterType.FLOAT
            low, high = (int(p.low), int(p.high)) if p.is_integer else (p.low, p.high)
            params.append(RangeParameter(p.name, ptype, low, high, log_scale=p.log))
    return AxSearchSpace(params)


class AxRecord:
    """Keeps an Ax ``Experiment`` in step with the optimiser's trials.

    Args:
        space: the search space.
        name: experiment name.
    """

    def __init__(self, space: SearchSpace, name: str = "mfbo"):
        from ax.core import Experiment, Metric, Objective, OptimizationConfig

        self.space = space
        metric = Metric(METRIC_NAME, lower_is_better=True)
        objective = Objective(f"-{METRIC_NAME}", metric_name_to_signature={METRIC_NAME: metric.signature})
        self.experiment = Experiment(
            search_space=build_ax_search_space(space), name=name,
            optimization_config=OptimizationConfig(objective), tracking_metrics=[metric],
            description="mfbo multi-fidelity BO record (model and acquisition run in BoTorch)",
        )
        self._stringified = {p.name for p in space.design_parameters
                             if p.type == "categorical" and _ax_choice_values(p.choices)[2]}
        self._float_choices = {p.name for p in space.design_parameters
                               if p.type == "categorical" and _ax_choice_values(p.choices)[1].name == "FLOAT"}

    def _arm_parameters(self, params: Mapping[str, Any], data_fraction: float, epochs: int) -> dict:
        out = {}
        for p in self.space.design_parameters:
            v = params[p.name]
            if p.name in self._stringified:
                v = str(v)
            elif p.name in self._float_choices:
                v = float(v)
            out[p.name] = v
        if self.space.data_fidelity is not None:
            out[self.space.data_fidelity.name] = float(data_fraction)
        if self.space.iteration_fidelity is not None:
            out[self.space.iteration_fidelity.name] = int(epochs)
        return out

    def new_trial(self, index: int, params: Mapping[str, Any], data_fraction: float, epochs: int,
                  source: str) -> None:
        """Create Ax trial ``index`` (must equal the next Ax index) and mark it running."""
        from ax.core import Arm

        trial = self.experiment.new_trial(ttl_seconds=None)
        if trial.index != index:
            raise RuntimeError(f"Ax trial index {trial.index} != mfbo trial index {index}")
        trial.add_arm(Arm(parameters=self._arm_parameters(params, data_fraction, epochs)))
        trial.update_run_metadata({"source": source})
        trial.mark_running(no_runner_required=True)

    def complete(self, index: int, curve: Sequence[float], cost: float, metadata: Mapping | None) -> None:
        """Attach the learning curve (one row per epoch, ``step`` = epoch) and mark the trial completed."""
        import pandas as pd
        from ax.core.data import Data

        trial = self.experiment.trials[index]
        arm = trial.arm
        steps = [i + 1 for i, v in enumerate(curve) if math.isfinite(v)]
        if steps:
            df = pd.DataFrame({
                "trial_index": index, "arm_name": arm.name, "metric_name": METRIC_NAME,
                "metric_signature": METRIC_NAME, "mean": [float(curve[s - 1]) for s in steps],
                "sem": float("nan"), "step": [float(s) for s in steps],
            })
            self.experiment.attach_data(Data(df=df))
        trial.update_run_metadata({"cost_seconds": float(cost), "n_epochs_run": len(curve),
                                   "metadata": _jsonable(metadata or {})})
        trial.mark_completed()

    def fail(self, index: int, reason: str) -> None:
        trial = self.experiment.trials[index]
        trial.update_run_metadata({"error": reason})
        trial.mark_failed(reason=reason)

    def abandon(self, index: int, reason: str) -> None:
        trial = self.experiment.trials[index]
        trial.update_run_metadata({"error": reason})
        trial.mark_abandoned(reason=reason)


def _jsonable(obj: Any) -> Any:
    """Best-effort conversion to JSON-able Python types (numpy scalars/arrays, tuples)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)
