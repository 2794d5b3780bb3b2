"""The per-epoch learning-curve record every objective backend returns, and the metric on it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mfbo.errors import ConfigError, ObjectiveError
from mfbo.training._record_keys import RECORD_KEYS  # the one definition; see its module for units

__all__ = ["RECORD_KEYS", "METRIC_KEYS", "check_metric", "metric_curve", "check_evaluation"]

# Record keys that make sense as an objective to minimise.
METRIC_KEYS = tuple(k for k in RECORD_KEYS if k.endswith(("_mae", "_per_atom", "_free")))


def check_metric(metric) -> dict[str, float]:
    """Normalise a metric (one record key, or {key: weight}) to a dict of weights.

    Raises:
        ConfigError: an unknown key or a non-finite weight.
    """
    weights = {metric: 1.0} if isinstance(metric, str) else dict(metric) if isinstance(metric, Mapping) else None
    if not weights:
        raise ConfigError(f"metric {metric!r} must be a record key or a non-empty dict of key -> weight")
    for key, weight in weights.items():
        if key not in METRIC_KEYS:
            raise ConfigError(f"metric key {key!r} is not one of {list(METRIC_KEYS)}")
        if not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ConfigError(f"metric weight for {key!r} must be a finite number, got {weight!r}")
    return {k: float(w) for k, w in weights.items()}


def metric_curve(records: Sequence[Mapping[str, Any]], metric) -> list[float]:
    """The objective after each epoch: one record key, or a weighted sum of keys.

    Raises:
        ObjectiveError: a record lacks a needed value (e.g. a force metric of an energy-only run).
    """
    weights = check_metric(metric)
    curve = []
    for record in records:
        total = 0.0
        for key, weight in weights.items():
            value = record.get(key)
            if value is None:
                raise ObjectiveError(
                    f"metric {key!r} is missing at epoch {record.get('epoch')}: force metrics need "
                    "get_forces=True (fingerprint Jacobians)"
                )
            total += weight * float(value)
        curve.append(total)
    return curve


def check_evaluation(result: Mapping[str, Any], epochs: int) -> dict:
    """Validate what ``Objective.evaluate`` returned.

    Returns:
        the result as a plain dict.

    Raises:
        ObjectiveError: missing keys, a curve of the wrong length, or a negative cost.
    """
    if not isinstance(result, Mapping):
        raise ObjectiveError(f"an objective must return a mapping, got {type(result).__name__}")
    for key in ("curve", "cost", "records"):
        if key not in result:
            raise ObjectiveError(f"objective result lacks {key!r}")
    curve = list(result["curve"])
    if len(curve) != int(epochs):
        raise ObjectiveError(f"objective returned a curve of {len(curve)} values for {epochs} epochs")
    cost = float(result["cost"])
    if not cost >= 0:
        raise ObjectiveError(f"objective returned cost {result['cost']!r}; it must be >= 0 seconds")
    return dict(result)
