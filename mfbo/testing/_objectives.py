"""Conformance suite for objective backends (:class:`mfbo.objectives.Objective` plug-ins).

::

    from mfbo.testing import check_objective
    check_objective(MyObjective(...), {"lr": 1e-3}, data_fraction=0.25, epochs=2)

It evaluates the objective as few times as it can (training is the expensive part): once as
given, once as a pickled-and-restored copy (which is what a worker process receives), and once
at ``epochs - 1`` when ``check_trace`` is on. It then checks the results against the contract
and raises :class:`ObjectiveConformanceError` listing every failed check.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Mapping
from typing import Any

__all__ = ["ObjectiveConformanceError", "check_objective", "objective_checks"]


class ObjectiveConformanceError(AssertionError):
    """An objective breaks the Objective contract; the message lists each failed check."""


def _evaluate(objective, params, data_fraction, epochs):
    # Objective subclasses are used through evaluate(); plain callables (mfbo.minimize) directly.
    fn = getattr(objective, "evaluate", None) or objective
    return fn(params, data_fraction, epochs)


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_result(result, epochs: int, require_records: bool) -> list[str]:
    problems = []
    if not isinstance(result, Mapping):
        return [f"result: evaluate must return a mapping, got {type(result).__name__}"]
    curve = result.get("curve")
    if curve is None:
        problems.append("curve: the result has no 'curve'")
    else:
        try:
            values = list(curve)
        except TypeError:
            values = None
            problems.append(f"curve: must be a list of floats, got {type(curve).__name__}")
        if values is not None:
            if len(values) != epochs:
                problems.append(f"curve: {len(values)} values for {epochs} epochs (one per epoch 1..epochs)")
            bad = [i + 1 for i, v in enumerate(values) if not _is_finite_number(v)]
            if bad:
                problems.append(f"curve: non-finite or non-numeric values at epochs {bad[:5]} (a diverged run "
                                "must raise TrainingDiverged instead)")
    if "cost" in result or require_records:
        cost = result.get("cost")
        if not _is_finite_number(cost) or cost < 0:
            problems.append(f"cost: must be a finite number of seconds >= 0, got {cost!r}")
    if require_records:
        records = result.get("records")
        if not isinstance(records, (list, tuple)):
            problems.append(f"records: must be a list of per-epoch dicts, got {type(records).__name__}")
        elif len(records) != epochs:
            problems.append(f"records: {len(records)} per-epoch records for {epochs} epochs")
        else:
            epochs_seen = [r.get("epoch") if isinstance(r, Mapping) else None for r in records]
            if epochs_seen != list(range(1, epochs + 1)):
                problems.append(f"records: 'epoch' must run 1..{epochs}, got {epochs_seen}")
            else:
                from mfbo.objectives import RECORD_KEYS

                missing = sorted({k for r in records for k in RECORD_KEYS if k not in r})
                if missing:
                    problems.append(f"records: missing record keys {missing} (see mfbo.objectives.RECORD_KEYS)")
        metadata = result.get("metadata")
        if metadata is not None and not isinstance(metadata, Mapping):
            problems.append(f"metadata: must be a dict when given, got {type(metadata).__name__}")
    return problems


def _curves_close(a, b, rtol, atol) -> bool:
    a, b = list(a), list(b)
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=rtol, abs_tol=atol) for x, y in zip(a, b))


_CHECK_NAMES = ("result", "curve", "cost", "records", "metadata", "no_mutation", "pickle", "deterministic",
                "trace")


def objective_checks() -> list[str]:
    """Names of the checks :func:`check_objective` reports (prefixes of its failure lines)."""
    return list(_CHECK_NAMES)


def check_objective(
    objective,
    params: Mapping[str, Any],
    *,
    data_fraction: float = 0.5,
    epochs: int = 2,
    check_pickle: bool = True,
    check_determinism: bool = True,
    check_trace: bool = False,
    require_records: bool | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
) -> dict:
    """Run an objective through the Objective contract.

    Checks: the result is a mapping whose ``curve`` has one finite float per epoch; ``cost`` is
    finite seconds >= 0; for ``Objective`` subclasses, ``records`` holds one dict per epoch
    numbered 1..epochs and carrying every key of ``mfbo.objectives.RECORD_KEYS``; ``params`` is
    not modified; the objective survives pickling (it is sent to worker processes) and the
    restored copy gives the same curve (determinism with a fixed seed); optionally the curve of
    a run to ``epochs - 1`` is the prefix of the longer one (what trace observations assume).

    Args:
        objective: an ``mfbo.objectives.Objective`` or a plain callable
            ``objective(params, data_fraction, epochs)``.
        params: design hyperparameters to evaluate (keep the run small: it runs 2-3 times).
        data_fraction: data-fraction fidelity in (0, 1].
        epochs: epoch fidelity (>= 2 when ``check_trace``).
        check_pickle, check_determinism, check_trace: switch checks on or off.
        require_records: demand ``records``/``cost`` (default: when ``objective`` is an Objective).
        rtol, atol: tolerance of the determinism and trace comparisons.

    Returns:
        the first evaluation's result.

    Raises:
        ObjectiveConformanceError: listing every failed check, one per line.
    """
    from mfbo.objectives import Objective

    epochs = int(epochs)
    if epochs < 1 or (check_trace and epochs < 2):
        raise ValueError("epochs must be >= 1 (>= 2 with check_trace)")
    if require_records is None:
        require_records = isinstance(objective, Objective)
    problems: list[str] = []

    given = copy.deepcopy(dict(params))
    call_params = dict(params)
    try:
        first = _evaluate(objective, call_params, data_fraction, epochs)
    except Exception as exc:  # noqa: BLE001 - any exception here is the finding
        raise ObjectiveConformanceError(
            f"result: evaluate(params, {data_fraction}, {epochs}) raised {type(exc).__name__}: {exc}"
        ) from exc
    problems += _check_result(first, epochs, require_records)
    if call_params != given:
        problems.append("no_mutation: evaluate modified the params dict it was given")
    curve_ok = not any(p.startswith(("result", "curve")) for p in problems)

    if check_pickle or check_determinism:
        other = objective
        if check_pickle:
            try:
                other = pickle.loads(pickle.dumps(objective))
            except Exception as exc:  # noqa: BLE001
                problems.append(f"pickle: the objective cannot be pickled ({type(exc).__name__}: {exc}); "
                                "objectives are sent to worker processes")
                other = objective if check_determinism else None
        if other is not None:
            try:
                second = _evaluate(other, dict(given), data_fraction, epochs)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"deterministic: a second evaluation raised {type(exc).__name__}: {exc}")
                second = None
            if second is not None and check_determinism and curve_ok:
                curve2 = second.get("curve") if isinstance(second, Mapping) else None
                if curve2 is None or not _curves_close(first["curve"], curve2, rtol, atol):
                    where = "a pickled copy" if other is not objective else "a second call"
                    problems.append(f"deterministic: {where} gave a different curve for the same params and "
                                    f"fidelities ({list(first['curve'])} vs {curve2}); seed every random choice")

    if check_trace and curve_ok:
        try:
            short = _evaluate(objective, dict(given), data_fraction, epochs - 1)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"trace: evaluation at {epochs - 1} epochs raised {type(exc).__name__}: {exc}")
        else:
            curve_s = short.get("curve") if isinstance(short, Mapping) else None
            if curve_s is None or not _curves_close(curve_s, list(first["curve"])[: epochs - 1], rtol, atol):
                problems.append(f"trace: the curve of a {epochs - 1}-epoch run is not the prefix of the {epochs}-epoch "
                                "run's curve (learning-rate schedules must not depend on the epoch fidelity)")

    if problems:
        name = type(objective).__name__
        raise ObjectiveConformanceError(f"{name} fails {len(problems)} check(s):\n  " + "\n  ".join(problems))
    return dict(first)
