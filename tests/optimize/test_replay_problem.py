"""Replay problems (mfbo.optimize.problems._replay): surrogate of recorded runs with seed noise."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from mfbo.errors import ConfigError, DataError
from mfbo.optimize.problems import get_problem, list_problems
from mfbo.optimize.problems._replay import RecordError, ReplayProblem, default_records, fit_replay, save_fit
from tests.optimize._records import make_records

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def toy():
    rec = make_records(noise=0.05)
    return rec, fit_replay(rec, cross_validate=True)


def _cells(rec: dict, metric: dict, fraction: float):
    """(config, recorded target values over seeds) of every configuration at ``fraction``."""
    out = []
    for c in rec["configs"]:
        vals = [sum(w * r["curves"][m][-1] for m, w in metric.items()) for r in c["runs"]
                if r["fraction"] == fraction and len(r["curves"][next(iter(metric))]) == rec["max_epochs"]]
        if len(vals) >= 2:
            out.append((c["config"], np.array(vals)))
    return out


def _within_spread(problem: ReplayProblem, rec: dict, k: float = 2.0) -> float:
    """Share of recorded target cells whose replayed expected value lies within the recorded seed
    spread: recorded mean +- k x recorded seed sd (sd of the log values, as a factor)."""
    cells = _cells(rec, problem.metric, max(rec["fractions"]))
    inside = 0
    for config, vals in cells:
        v = problem.value_at_target(config)
        lo, hi = np.log(vals).mean() - k * np.log(vals).std(ddof=1), np.log(vals).mean() + k * np.log(vals).std(ddof=1)
        inside += lo <= np.log(v) <= hi
    return inside / len(cells)


def test_registered_and_missing_record_names_the_command(tmp_path, monkeypatch):
    assert {"mlip_si", "mlip_mo", "mlip_oc20", "replay"} <= set(list_problems())
    monkeypatch.setenv("MFBO_MLIP_RECORDS", str(tmp_path))
    with pytest.raises(RecordError, match=r"record\.py --dataset mo"):
        get_problem("mlip_mo")
    assert issubclass(RecordError, DataError)
    with pytest.raises(ConfigError, match="records=PATH"):
        get_problem("replay")
    bad = tmp_path / "bad.json.gz"
    with gzip.open(bad, "wt") as fh:
        json.dump({"format": "something-else"}, fh)
    with pytest.raises(RecordError, match="format"):
        ReplayProblem(records=bad)


def test_replay_api_noise_and_cost(toy):
    rec, state = toy
    p = ReplayProblem(seed=3, records=rec, fit=state)
    assert p.space.target_fidelities() == {"data_fraction": 1.0, "epochs": 6}
    c = rec["configs"][0]["config"]
    out = p(c, 0.25, 4)
    assert len(out["curve"]) == 4 and out["cost"] > 0
    # a run's seed moves its whole curve; another problem seed draws other noise, the same seed the same
    a, b = ReplayProblem(seed=3, records=rec, fit=state), ReplayProblem(seed=3, records=rec, fit=state)
    assert a(c, 1.0, 6)["curve"] == b(c, 1.0, 6)["curve"]
    assert a(c, 1.0, 6)["curve"] != ReplayProblem(seed=4, records=rec, fit=state)(c, 1.0, 6)["curve"]
    # cost grows with epochs and with the data fraction
    assert p(c, 1.0, 6)["cost"] > p(c, 1.0, 2)["cost"] > p(c, 0.25, 2)["cost"]
    assert p.full_fidelity_cost > 0
    # the optimum is below every recorded configuration's expected value and every sampled one
    vals = p.values_at_target([x["config"] for x in rec["configs"]] + p.space.sample(256, seed=5))
    assert p.optimum_value <= vals.min() + 1e-12
    assert p.regret(p.optimizer_location) == pytest.approx(0.0, abs=1e-9)


def test_replay_within_recorded_seed_spread_and_draws_that_spread(toy):
    rec, state = toy
    p = ReplayProblem(seed=0, records=rec, fit=state)
    assert _within_spread(p, rec) >= 0.9
    # replayed seed noise at a recorded point has the recorded spread (log sd 0.05 in the toy record)
    c = rec["configs"][3]["config"]
    draws = np.log([p(c, 1.0, 6)["curve"][-1] for _ in range(400)])
    assert 0.025 < draws.std() < 0.1
    # fit error: held-out R^2 and rank correlation over configurations are reported and high on a smooth toy
    fe = state["fit_error"]
    assert fe["r2_target"] > 0.9 and fe["spearman_target"] > 0.9 and fe["folds"] == 5


def test_saved_fit_is_reused_and_a_stale_one_refitted(toy, tmp_path):
    rec, state = toy
    path = tmp_path / "toy.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump(rec, fh)
    save_fit({**state, "optimum_value": -1.0}, str(path) + ".fit.json")  # marked: reused as is
    assert ReplayProblem(records=path).optimum_value == -1.0
    save_fit({**state, "digest": "0" * 16, "optimum_value": -1.0}, str(path) + ".fit.json")
    assert ReplayProblem(records=path).optimum_value == pytest.approx(state["optimum_value"])


@pytest.mark.parametrize("dataset", ["si", "mo"])  # the OC20 fit is too loose for it (docs/benchmarks.md)
def test_mlip_replays_the_recorded_runs_within_their_seed_spread(dataset):
    if not default_records(dataset).is_file():
        pytest.skip(f"no committed mlearn {dataset} record")
    p = get_problem(f"mlip_{dataset}", seed=0)
    rec_path = default_records(dataset)
    with gzip.open(rec_path, "rt") as fh:
        rec = json.load(fh)
    assert p.fit_state["digest"]  # the committed fit is used (no refit at construction)
    assert _within_spread(p, rec) >= 0.8
    out = p(p.optimizer_location, 0.125, 1)
    assert len(out["curve"]) == 1 and 0 < out["cost"] < p.full_fidelity_cost
    assert Path(str(rec_path) + ".fit.json").is_file()
