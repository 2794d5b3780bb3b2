"""Faults inside trials (Python API, real worker processes): a worker killed mid-trial, a diverging
trial and a trial past its timeout each become a failed trial with its reason; the study goes on."""

from __future__ import annotations

import pytest

from mfbo.study import Study
from tests.study.conftest import FAST_OPTIMIZER, HERE
from tests.study.study_synth import SPACE, Synth

FIDELITY = {"data_fraction": {"type": "fidelity", "bounds": [0.25, 1.0], "target": 1.0},
            "epochs": {"type": "fidelity", "bounds": [1, 8], "target": 8}}


@pytest.fixture(scope="module")
def faulty_study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    objective = Synth(delay=0.02, script_dir=str(tmp / "calls"), script={0: "sigkill", 1: "diverge", 2: "hang"})
    study = Study.create(tmp / "run", objective, {**SPACE, **FIDELITY}, budget_ffe=0.35, workers=1,
                         trial_timeout=4.0, max_failure_rate=0.9, min_trials_for_failure_rate=5,
                         optimizer_options=FAST_OPTIMIZER, python_path=[HERE])
    result = study.run(progress=False)
    return study, result


def _failed(study):
    return {t.index: t for t in study.trials if t.status == "failed"}


def test_worker_killed_mid_trial_is_a_failed_trial(faulty_study):
    study, _ = faulty_study
    t = _failed(study)[0]
    assert "killed by SIGKILL" in t.error


def test_diverging_trial_is_a_failed_trial_with_epoch(faulty_study):
    study, _ = faulty_study
    t = _failed(study)[1]
    assert "diverged at epoch 2" in t.error


def test_trial_timeout_kills_and_fails(faulty_study):
    study, _ = faulty_study
    t = _failed(study)[2]
    assert "timed out after 4 s" in t.error


def test_study_goes_on_after_faults(faulty_study):
    study, result = faulty_study
    assert result["status"] == "finished"
    assert len(_failed(study)) == 3
    done = [t for t in study.trials if t.status == "completed"]
    assert len(done) >= 1 and all(len(t.curve) == t.epochs for t in done)
    best = study.best()
    assert set(best["params"]) == {"x", "y"} and best["final"] is True
    # reopened from disk: same record
    again = Study.load(study.dir)
    assert [t.status for t in again.trials] == [t.status for t in study.trials]


def test_surrogate_of_a_loaded_study(faulty_study):
    study, _ = faulty_study
    done = [t for t in study.trials if t.status == "completed"]
    if len(done) < 2:
        pytest.skip("fewer than two completed trials in this run")
    view = Study.load(study.dir).surrogate()
    mean, sd = view.predict([done[0].params], (done[0].data_fraction, done[0].epochs))
    assert callable(view.importance) and callable(view.plot_loo)
    assert mean.shape == (1,) and sd.shape == (1,) and sd[0] >= 0
    # close to the observation relative to the spread of the observations
    vals = [t.curve[-1] for t in done]
    assert abs(mean[0] - done[0].curve[-1]) < max(vals) - min(vals) + 0.05
