"""The benchmark runner: scoring logic on hand-made runs, and one tiny end-to-end run through its CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import load_analysis_script

RUN_PY = Path(__file__).resolve().parents[2] / "analysis" / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def run_mod():
    return load_analysis_script("benchmarks/run.py", "mfbo_bench_run")


def test_regret_on_grid_and_cost_to_target(run_mod):
    rec = {"cost_ffe": [0.5, 1.0, 2.5], "regret": [3.0, 0.4, 0.05]}
    grid = np.array([0.0, 0.5, 0.9, 1.0, 3.0])
    assert run_mod.regret_on_grid(rec, grid, r0=10.0).tolist() == [10.0, 3.0, 3.0, 0.4, 0.05]
    assert run_mod.cost_to_target(rec, 0.5) == 1.0
    assert run_mod.cost_to_target(rec, 0.05) == 2.5
    assert run_mod.cost_to_target(rec, 0.01) == math.inf


def _rec(method, seed, costs, regrets):
    return {"problem": "p", "method": method, "seed": seed, "cost_ffe": costs, "regret": regrets,
            "final_regret": regrets[-1], "final_cost_ffe": costs[-1], "wall_s": 1.0, "cpu_s": 1.0,
            "n_trials": len(costs), "target_fidelity_share": 0.5, "error": None}


def test_summary_medians_and_ratios(run_mod):
    r0 = 1.0  # thresholds: 5 % -> 0.05, 1 % -> 0.01
    recs = []
    for s in range(3):
        recs.append(_rec("mfbo", s, [1.0, 2.0 + s], [0.5, 0.04]))      # 5 %: 2, 3, 4 -> median 3
        recs.append(_rec("ax-sf", s, [3.0, 6.0 + s], [0.5, 0.04]))     # 5 %: 6, 7, 8 -> median 7
        recs.append(_rec("random", s, [5.0, 10.0], [0.5, 0.3]))       # never
    summary = run_mod.summarise(recs, {"p": 10.0}, {"p": r0})["p"]
    mf, ax = summary["methods"]["mfbo"], summary["methods"]["ax-sf"]
    assert mf["cost_to_target_5pct_median"] == 3.0 and ax["cost_to_target_5pct_median"] == 7.0
    assert mf["reached_1pct"] == 0.0 and summary["methods"]["random"]["reached_5pct"] == 0.0
    ratios = summary["ratios"]["5pct"]
    assert ratios["vs_best_baseline"] == {"baseline": "ax-sf", "ratio": pytest.approx(3 / 7), "bound": "="}
    # random never reached the target within the budget of 10 FFE: the ratio is an upper bound
    assert ratios["vs_random"] == {"baseline": "random", "ratio": pytest.approx(0.3), "bound": "<=",
                                   "baseline_budget_ffe": 10.0}
    assert ratios["vs_random"]["ratio"] > 0
    assert summary["ratios"]["1pct"]["vs_best_baseline"]["ratio"] == math.inf
    assert mf["regret_median"][0] == r0 and mf["regret_median"][-1] == pytest.approx(0.04)


def test_longer_baseline_budget_gives_a_measured_ratio(run_mod):
    recs = []
    for s in range(3):
        recs.append(_rec("mfbo", s, [1.0, 2.0 + s], [0.5, 0.04]) | {"budget_ffe": 10.0})
        recs.append(_rec("random", s, [5.0, 40.0 + 10 * s, 90.0], [0.5, 0.04, 0.04]) | {"budget_ffe": 100.0})
    summary = run_mod.summarise(recs, {"p": 10.0}, {"p": 1.0})["p"]
    assert summary["method_budget_ffe"] == {"mfbo": 10.0, "random": 100.0}
    assert summary["cost_grid_ffe"][-1] == pytest.approx(100.0)
    ratio = summary["ratios"]["5pct"]["vs_random"]
    assert ratio == {"baseline": "random", "ratio": pytest.approx(3 / 50), "bound": "="}
    grid = np.asarray(summary["cost_grid_ffe"])
    med = np.asarray(summary["methods"]["mfbo"]["regret_median"], dtype=float)
    # mfbo's runs say nothing past their own budget of 10 FFE
    assert np.all(np.isnan(med[grid > 10.0 + 1e-9])) and np.all(np.isfinite(med[grid <= 10.0]))


def test_cli_end_to_end(tmp_path):
    out = tmp_path / "res"
    cmd = [sys.executable, str(RUN_PY), "--problems", "hartmann6_mf", "--methods", "random", "hyperband",
           "--seeds", "2", "--budget", "hartmann6_mf=2", "--method-budget", "random=3", "--jobs", "2",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "hartmann6_mf" in proc.stdout and "hyperband" in proc.stdout
    data = json.loads((out / "results.json").read_text())
    ps = data["problems"]["hartmann6_mf"]
    assert set(ps["methods"]) == {"random", "hyperband"}
    assert ps["initial_design_regret"] > 1.0 and ps["budget_ffe"] == 2.0
    for m in ps["methods"].values():
        assert m["n_runs"] == 2 and m["n_failed"] == 0
        assert len(m["regret_median"]) == len(ps["cost_grid_ffe"])
        # None (NaN) past a method's own budget: hyperband stops at 2 FFE, the grid goes on to random's 3
        assert all(a >= b - 1e-12 for a, b in zip(m["regret_q75"], m["regret_median"]) if a is not None)
    assert ps["methods"]["hyperband"]["budget_ffe"] == 2.0 and ps["methods"]["random"]["budget_ffe"] == 3.0
    assert 2.0 <= ps["methods"]["hyperband"]["cost_spent_median_ffe"] < 3.0
    assert 3.0 <= ps["methods"]["random"]["cost_spent_median_ffe"] < 4.0
    runs = data["runs"]
    assert len(runs) == 4 and all(r["regret"] and min(r["regret"]) >= 0 for r in runs)
    assert (out / "hartmann6_mf.png").stat().st_size > 10_000
    assert "| random | 3 | 2 (0) |" in (out / "summary.md").read_text()
    assert len(list((out / "runs").rglob("seed*.json"))) == 4
    # a rerun reuses the stored runs and only rebuilds the summary
    proc2 = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc2.returncode == 0 and "runs in" not in proc2.stderr
    # runs/ is not committed: a summary elsewhere can start from the stored results.json
    out2 = tmp_path / "res2"
    cmd2 = cmd[:cmd.index("--out")] + ["--out", str(out2), "--summarise-only", "--runs-from", str(out / "results.json")]
    proc3 = subprocess.run(cmd2, capture_output=True, text=True, timeout=300)
    assert proc3.returncode == 0, proc3.stderr[-2000:]
    data2 = json.loads((out2 / "results.json").read_text())
    assert len(list((out2 / "runs").rglob("seed*.json"))) == 4
    for name, m in data2["problems"]["hartmann6_mf"]["methods"].items():
        assert m["final_regret"] == pytest.approx(ps["methods"][name]["final_regret"], rel=1e-6)


def test_cli_rejects_a_malformed_budget(tmp_path):
    proc = subprocess.run([sys.executable, str(RUN_PY), "--method-budget", "random", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--method-budget 'random': expected NAME=FFE" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_summary_reports_calibration_at_target(run_mod):
    recs = []
    for s, (vz, tz, rz) in enumerate([(0.5, [0.5, 3.0], 1.0), (-1.5, [-1.5], -2.5), (2.5, [2.5, 0.1, -0.2], 0.3)]):
        recs.append(_rec("mfbo", s, [1.0, 2.0], [0.5, 0.04]) | {"verification_z": vz, "target_runs_z": tz,
                                                                 "retrain_z": rz})
        recs.append(_rec("random", s, [1.0, 2.0], [0.5, 0.3]))
    summary = run_mod.summarise(recs, {"p": 10.0}, {"p": 1.0})["p"]
    mf = summary["methods"]["mfbo"]
    assert mf["verification_z"] == [0.5, -1.5, 2.5]
    assert mf["verification_within_2sd"] == pytest.approx(2 / 3)
    assert mf["target_runs_within_2sd"] == pytest.approx(4 / 6)
    assert mf["retrain_z"] == [1.0, -2.5, 0.3] and mf["retrain_within_2sd"] == pytest.approx(2 / 3)
    assert "verification_z" not in summary["methods"]["random"] and "retrain_z" not in summary["methods"]["random"]
    text = run_mod.markdown({"p": summary})
    assert "mfbo calibration at target: the recommendation's target run within 2 predicted sd in 67% of 3 runs" in text
    assert ("mfbo calibration of the final recommendation: a fresh target-fidelity run of it within 2 sd of the "
            "final prediction in 67% of 3 runs") in text


def test_retrain_z_scores_a_fresh_target_run_against_the_final_prediction(run_mod):
    from mfbo.optimize import minimize

    class Problem:
        """Target runs whose values are known: 0.5 at the first call after the search, 0.7 at the next."""

        def __init__(self):
            self.values = iter([0.5, 0.7])

        def __call__(self, params, data_fraction, epochs):
            return {"curve": [next(self.values)] * epochs}

    res = minimize(lambda p, f, e: {"curve": [(p["x"] - 0.3) ** 2 + 0.1 + 0.1 / t for t in range(1, e + 1)],
                                    "cost": f * e},
                   {"x": {"type": "float", "bounds": [0.0, 1.0]},
                    "data_fraction": {"type": "fidelity", "bounds": [0.1, 1.0], "target": 1.0},
                    "epochs": {"type": "fidelity", "bounds": [1, 4], "target": 4}},
                   budget=3.0, seed=0, n_initial=3, raw_samples=32, num_restarts=1)
    pred = res.optimizer.predict_target(res.best_params)
    assert run_mod._retrain_z(Problem(), res) == pytest.approx((0.5 - pred["mean"]) / pred["sd"])
    assert run_mod._retrain_z(Problem(), type("R", (), {"optimizer": None, "best_params": {}})()) is None
