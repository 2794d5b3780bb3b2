"""A quick study end to end through the CLI (real processes, SQLite), and a study whose every trial fails."""

from __future__ import annotations

import json

import pytest

from tests.study.conftest import run_cli, stored_experiment, write_study


def test_quick_study_end_to_end(tmp_path):
    study = write_study(tmp_path / "quick.toml", budget_ffe=0.2, workers=2, options={"delay": 0.02})
    r = run_cli("run", study, "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    d = tmp_path / "run"
    assert "finished" in r.stdout

    r = run_cli("status", d, "--json")
    assert r.returncode == 0, r.stderr
    st = json.loads(r.stdout)
    assert st["status"] == "finished"
    assert st["trials"]["completed"] >= 2 and st["trials"]["running"] == 0
    so_far = st["best_so_far"]
    if so_far["at_target"]:  # a target-fidelity result, never a lower-fidelity one
        assert so_far["value"] > 0 and (so_far["data_fraction"], so_far["epochs"]) == (1.0, 8)
    else:  # none yet: says so, and shows the recommendation with its predicted value
        assert so_far["value"] is None and so_far["trial_id"] is None and set(so_far["params"]) == {"x", "y"}
        assert so_far["prediction"]["mean"] > 0 and so_far["prediction"]["sd"] > 0
    # the final retraining against the prediction stored before it ran
    # the optimiser's own wall time, beside the study's: part of it, and per finished trial
    b = st["budget"]
    n_finished = st["trials"]["completed"] + st["trials"]["failed"]
    assert 0 < b["optimizer_s"] < b["wall_time_used_s"]
    assert b["optimizer_share"] == pytest.approx(b["optimizer_s"] / b["wall_time_used_s"])
    assert b["optimizer_s_per_trial"] == pytest.approx(b["optimizer_s"] / n_finished)
    cal = st["calibration"]
    pred = cal["prediction"]
    assert pred["sd"] > 0 and cal["z"] == pytest.approx((cal["value"] - pred["mean"]) / pred["sd"])

    r = run_cli("best", d, "--json")
    assert r.returncode == 0, r.stderr
    best = json.loads(r.stdout)
    assert set(best) >= {"params", "train_config", "test_metrics", "model_path"}
    assert set(best["params"]) == {"x", "y"}
    assert best["fidelity"] == {"data_fraction": 1.0, "epochs": 8}
    assert len(best["validation_curve"]) == 8
    assert best["prediction"] == pred and best["z"] == pytest.approx(cal["z"])
    assert best["validation_value"] == cal["value"]
    # best.json was written before the study's last state: the optimiser's time then, no more than now
    assert 0 < best["study"]["optimizer_s"] <= b["optimizer_s"]
    assert best["study"]["optimizer_share"] == pytest.approx(best["study"]["optimizer_s"] / best["study"]["wall_time_s"])
    # every finished trial has its atomically written result file with versions and the curve
    files = sorted((d / "results").glob("trial_*.json"))
    assert len(files) == st["trials"]["completed"] + st["trials"]["failed"]
    recs = [json.loads(f.read_text()) for f in files]
    # budget accounting: FFE = fraction x epochs / 8 per trial, each counted once; it stopped once spent,
    # and the last trial was submitted while less than the budget was spent or pending
    ffe = sorted((r["data_fraction"] * r["epochs"] / 8 for r in recs), reverse=True)
    assert abs(st["budget"]["ffe_used"] - sum(ffe)) < 1e-9
    assert sum(ffe) >= 0.2 and sum(ffe[1:]) < 0.2
    rec = recs[0]
    assert {"params", "data_fraction", "epochs", "curve", "cost", "records", "timings", "versions"} <= set(rec)
    assert {"mfbo", "torch", "ax-platform", "botorch", "numpy", "ase"} <= set(rec["versions"])
    assert len(rec["curve"]) == rec["epochs"]
    log = (d / "study.log").read_text()
    assert "driver started" in log and "study finished" in log
    assert "the optimiser's own time" in log

    r = run_cli("status", d)
    assert r.returncode == 0 and "best so far" in r.stdout
    assert ("best so far at target fidelity:" in r.stdout) is so_far["at_target"]
    assert ("no trial has run at target fidelity yet; the recommendation is predicted" in r.stdout) \
        is not so_far["at_target"]
    assert f"(z = {cal['z']:.2f})" in r.stdout
    assert f"optimiser's own time: {b['optimizer_s']:.1f} s ({100 * b['optimizer_share']:.0f} % of the wall time" in r.stdout
    progress = [ln for ln in log.splitlines() if "progress:" in ln]
    assert progress and all(("best at target" in ln) or ("no target-fidelity result yet" in ln) or "best -" in ln
                            for ln in progress)
    # the Ax record in the study DB (saved trial by trial, at most every 30 s, and at the end): every
    # trial with its status, and each completed trial's last value
    exp = stored_experiment(d)
    status = {t.index: t.status.name for t in exp.trials.values()}
    assert sorted(status.values()).count("COMPLETED") == st["trials"]["completed"]
    assert len(status) == sum(st["trials"].values())
    df = exp.lookup_data().df.sort_values(["trial_index", "step"])
    finals = sorted(df.groupby("trial_index")["mean"].last().tolist())
    assert finals == pytest.approx(sorted(r["curve"][-1] for r in recs), rel=1e-8)  # Ax keeps 10 digits
    # a second `run` on the same output refuses and points to resume
    r = run_cli("run", study, cwd=tmp_path)
    assert r.returncode != 0 and "mfbo resume" in r.stderr


def test_every_trial_fails_stops_with_reason(tmp_path):
    study = write_study(tmp_path / "allfail.toml", budget_ffe=5.0, workers=2, options={"always_fail": True},
                        execution={"max_failure_rate": 0.5, "min_trials_for_failure_rate": 3})
    r = run_cli("run", study, "--no-progress", cwd=tmp_path)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("mfbo run: error:")]
    assert len(lines) == 1, r.stderr[-2000:]
    assert "stopped" in lines[0] and "synthetic failure" in lines[0] and "max_failure_rate" in lines[0]
    st = json.loads(run_cli("status", tmp_path / "run", "--json").stdout)
    assert st["status"] == "stopped" and "synthetic failure" in st["stop_reason"]
    assert st["trials"]["completed"] == 0 and 3 <= st["trials"]["failed"] <= 4
    assert st["trials"]["running"] == 0
    assert not (tmp_path / "run" / "best.json").exists()
