"""The objective conformance suite accepts a good objective and catches broken ones."""

from __future__ import annotations

import math
import random
import threading
from pathlib import Path

import pytest

from mfbo.objectives import RECORD_KEYS, Objective
from mfbo.testing._objectives import ObjectiveConformanceError, check_objective, objective_checks


class PowerLaw(Objective):
    """A cheap deterministic learning-curve objective: loss(t) = a + b * (t + 1)^-c."""

    def __init__(self, seed=0):
        self.seed = seed

    def _curve(self, params, data_fraction, epochs):
        rng = random.Random(f"{self.seed}-{sorted(params.items())}")
        noise = rng.uniform(0, 1e-3)
        floor = 0.1 + (params["lr"] - 0.01) ** 2 + 0.05 / data_fraction + noise
        return [floor + 2.0 * (t + 1) ** -0.7 for t in range(1, epochs + 1)]

    def evaluate(self, params, data_fraction, epochs):
        curve = self._curve(params, data_fraction, epochs)
        records = [dict.fromkeys(RECORD_KEYS, v) | {"epoch": t} for t, v in enumerate(curve, start=1)]
        return {"curve": curve, "cost": 0.01 * data_fraction * epochs, "records": records}


class WrongLength(PowerLaw):
    def evaluate(self, params, data_fraction, epochs):
        result = super().evaluate(params, data_fraction, epochs)
        return {**result, "curve": result["curve"][:-1]}


class NaNCurve(PowerLaw):
    def evaluate(self, params, data_fraction, epochs):
        result = super().evaluate(params, data_fraction, epochs)
        return {**result, "curve": [math.nan] * epochs}


class BadCost(PowerLaw):
    def evaluate(self, params, data_fraction, epochs):
        return {**super().evaluate(params, data_fraction, epochs), "cost": -1.0}


class Unseeded(PowerLaw):
    def evaluate(self, params, data_fraction, epochs):
        result = super().evaluate(params, data_fraction, epochs)
        return {**result, "curve": [v + random.random() for v in result["curve"]]}


class Unpicklable(PowerLaw):
    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()


class Mutating(PowerLaw):
    def evaluate(self, params, data_fraction, epochs):
        params["lr"] = 0.5
        return super().evaluate(params, data_fraction, epochs)


class NoRecords(PowerLaw):
    def evaluate(self, params, data_fraction, epochs):
        result = super().evaluate(params, data_fraction, epochs)
        return {**result, "records": [{"epoch": r["epoch"], "val_energy_mae": 1.0} for r in result["records"]]}


class EpochDependentSchedule(PowerLaw):
    # Decays faster when asked for fewer epochs: a run to t is not the prefix of a run to T.
    def _curve(self, params, data_fraction, epochs):
        return [1.0 / (1 + t / epochs) for t in range(1, epochs + 1)]


PARAMS = {"lr": 0.02, "num_layers": 2}


def test_a_good_objective_passes_every_check():
    result = check_objective(PowerLaw(), PARAMS, data_fraction=0.5, epochs=4, check_trace=True)
    assert len(result["curve"]) == 4
    assert {"curve", "pickle", "deterministic", "trace"} <= set(objective_checks())


def test_plain_callables_are_accepted():
    def f(params, data_fraction, epochs):
        return {"curve": [1.0 / t for t in range(1, epochs + 1)]}

    assert check_objective(f, {}, epochs=3, check_pickle=False)["curve"] == [1.0, 0.5, 1.0 / 3]


@pytest.mark.parametrize(
    ("broken", "check"),
    [
        (WrongLength(), "curve: 3 values for 4 epochs"),
        (NaNCurve(), "curve: non-finite"),
        (BadCost(), "cost:"),
        (Unseeded(), "deterministic:"),
        (Unpicklable(), "pickle:"),
        (Mutating(), "no_mutation:"),
        (NoRecords(), "records: missing record keys"),
        (EpochDependentSchedule(), "trace:"),
    ],
)
def test_broken_objectives_are_caught(broken, check):
    with pytest.raises(ObjectiveConformanceError) as info:
        check_objective(broken, PARAMS, epochs=4, check_trace=True)
    assert check in str(info.value)
    assert type(broken).__name__ in str(info.value)


def test_an_objective_that_raises_is_reported():
    class Crashes(PowerLaw):
        def evaluate(self, params, data_fraction, epochs):
            raise RuntimeError("CUDA out of memory")

    with pytest.raises(ObjectiveConformanceError, match="RuntimeError: CUDA out of memory"):
        check_objective(Crashes(), PARAMS)


class TwoFaults(Unseeded):
    def evaluate(self, params, data_fraction, epochs):
        return {**super().evaluate(params, data_fraction, epochs), "cost": math.inf}


def test_every_failure_is_listed_at_once():
    with pytest.raises(ObjectiveConformanceError) as info:
        check_objective(TwoFaults(), PARAMS)
    message = str(info.value)
    assert "fails 2 check(s)" in message and "cost:" in message and "deterministic:" in message


def test_the_real_builtin_objective_conforms(tmp_path):
    from mfbo.objectives import BuiltinObjective
    from mfbo.training._config import TrainConfig

    water = Path(__file__).resolve().parents[2] / "mfbo" / "datasets" / "water_2d.traj"
    import ase.io

    images = ase.io.read(str(water), ":12")
    base = TrainConfig(fp_params={"MCSHs": {"0": {"groups": [1], "sigmas": [0.5, 1.5]}}, "cutoff": 4.0},
                       num_layers=1, num_nodes=4, batch_size=4, epochs=2, get_forces=False, num_threads=1)
    objective = BuiltinObjective(images[:9], images[9:], base_config=base, cache_dir=str(tmp_path))
    result = check_objective(objective, {"lr": 0.01}, data_fraction=1.0, epochs=2)
    assert result["metadata"]["backend"] == "builtin"
