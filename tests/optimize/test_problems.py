"""Benchmark problems: known optima really optimal, fidelity bias shrinks, API and pickling."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from mfbo.errors import ConfigError
from mfbo.optimize.problems import Problem, UnknownProblem, get_problem, list_problems, register_problem

SYNTHETIC = ["hartmann6_mf", "learning_curve"]


def _yahpo_dir() -> Path:
    import os

    env = os.environ.get("MFBO_YAHPO_DATA") or os.environ.get("MFBO_SHARED")
    if env:
        p = Path(env)
        return p if (p / "lcbench").is_dir() else p / "data" / "yahpo"
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "yahpo"


def _yahpo_available() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "onnxruntime is not installed"
    if not (_yahpo_dir() / "lcbench" / "model.onnx").is_file():
        return f"YAHPO surrogate data not found under {_yahpo_dir()}"
    return None


yahpo_skip = pytest.mark.skipif(_yahpo_available() is not None, reason=str(_yahpo_available()))


def test_registry_lists_problems_and_refuses_duplicates():
    assert {"hartmann6_mf", "learning_curve", "yahpo_lcbench", "yahpo_rbv2_xgboost"} <= set(list_problems())
    with pytest.raises(ConfigError, match="already registered"):
        register_problem("hartmann6_mf", lambda seed=0: None)
    with pytest.raises(UnknownProblem, match="unknown benchmark problem 'nope'"):
        get_problem("nope")


@pytest.mark.parametrize("name", SYNTHETIC)
def test_known_optimum_is_attained_and_never_beaten(name):
    p = get_problem(name)
    assert p.value_at_target(p.optimizer_location) == pytest.approx(p.optimum_value, abs=1e-9)
    configs = p.space.sample(512, seed=3)
    values = np.array([p.value_at_target(c) for c in configs])
    assert values.min() > p.optimum_value
    # Local perturbations of the optimum (one parameter at a time) never beat it either.
    rng = np.random.default_rng(0)
    for prm in p.space.design_parameters:
        for _ in range(10):
            cfg = dict(p.optimizer_location)
            if prm.type == "categorical":
                cfg[prm.name] = prm.choices[rng.integers(len(prm.choices))]
            else:
                u = float(np.clip(prm.to_unit(cfg[prm.name]) + rng.normal(0, 0.05), 0, 1))
                v = prm.from_unit(np.array(u)).item()
                cfg[prm.name] = int(v) if prm.is_integer else v
            assert p.value_at_target(cfg) >= p.optimum_value - 1e-12


@pytest.mark.parametrize("name", SYNTHETIC)
def test_fidelity_bias_shrinks_as_fraction_and_epochs_grow(name):
    p = get_problem(name)
    configs = p.space.sample(128, seed=5)
    T = int(p.space["epochs"].target)
    target = np.array([p.value_at_target(c) for c in configs])

    def bias(s, t):
        low = np.array([p._evaluate(p.space.validate(c), s, t, None)[0][-1] for c in configs])
        return float(np.mean(np.abs(low - target)))

    lo = p.space["data_fraction"].low
    by_fraction = [bias(s, T) for s in (lo, 0.2, 0.5, 1.0)]
    by_epochs = [bias(1.0, t) for t in (1, max(T // 9, 2), T // 3, T)]
    assert all(a > b for a, b in zip(by_fraction, by_fraction[1:])), by_fraction
    assert all(a > b for a, b in zip(by_epochs, by_epochs[1:])), by_epochs
    assert by_fraction[-1] == by_epochs[-1] == 0.0
    assert by_fraction[0] > 0.005 and by_epochs[0] > 0.05


@pytest.mark.parametrize("name", SYNTHETIC)
def test_call_returns_noisy_curve_with_cost_proportional_to_fraction_times_epochs(name):
    p = get_problem(name, seed=1)
    cfg = p.space.sample(1, seed=0)[0]
    T = int(p.space["epochs"].target)
    out = p(cfg, data_fraction=0.5, epochs=4)
    assert set(out) == {"curve", "cost"} and len(out["curve"]) == 4
    assert all(math.isfinite(v) for v in out["curve"])
    assert out["cost"] == pytest.approx(p.full_fidelity_cost * 0.5 * 4 / T)
    assert p(cfg)["cost"] == pytest.approx(p.full_fidelity_cost)
    # noise: repeated calls differ; the noise-free value is in the middle of noisy target-fidelity draws
    draws = np.array([p(cfg)["curve"][-1] for _ in range(40)])
    assert draws.std() > 0
    assert abs(draws.mean() - p.value_at_target(cfg)) < 4 * draws.std() / math.sqrt(40) + 1e-9


@pytest.mark.parametrize("name", SYNTHETIC)
def test_seed_reproducible_and_picklable(name):
    cfg = get_problem(name).space.sample(1, seed=2)[0]
    a, b, c = get_problem(name, seed=7), get_problem(name, seed=7), get_problem(name, seed=8)
    assert a(cfg, 0.3, 5) == b(cfg, 0.3, 5)
    assert a(cfg, 0.3, 5) != c(cfg, 0.3, 5)
    clone = pickle.loads(pickle.dumps(a))
    assert clone(cfg, 0.3, 5) == a(cfg, 0.3, 5)


def test_bad_fidelities_and_configs_raise_config_errors():
    p = get_problem("hartmann6_mf")
    cfg = p.space.sample(1, seed=0)[0]
    with pytest.raises(ConfigError, match="data_fraction"):
        p(cfg, data_fraction=1.5, epochs=3)
    with pytest.raises(ConfigError, match="epochs"):
        p(cfg, data_fraction=0.5, epochs=0)
    with pytest.raises(ConfigError, match="x3"):
        p({k: v for k, v in cfg.items() if k != "x3"}, 0.5, 3)


def test_problem_base_requires_evaluate():
    class Bare(Problem):
        pass

    with pytest.raises(NotImplementedError, match="_evaluate"):
        Bare()._evaluate({}, 1.0, 1, None)


@yahpo_skip
@pytest.mark.parametrize("name", ["yahpo_lcbench", "yahpo_rbv2_xgboost"])
def test_yahpo_problems(name):
    p = get_problem(name, data_dir=_yahpo_dir())
    assert math.isfinite(p.optimum_value) and p.full_fidelity_cost > 0
    configs = p.space.sample(2048, seed=11)
    values = p.values_at_target(configs)
    assert np.all(np.isfinite(values))
    # the best-known optimum (random search + local refinement, recorded in analysis/) is never beaten
    assert values.min() >= p.optimum_value - 1e-6
    cfg = configs[0]
    ep = 3
    df = 0.25 if p.space.data_fidelity is not None else None
    out = p(cfg, df, ep)
    assert len(out["curve"]) == ep and out["cost"] > 0
    assert out["cost"] < p(cfg)["cost"]
    assert p(cfg)["curve"][-1] == pytest.approx(p.value_at_target(cfg), rel=1e-6)
    clone = pickle.loads(pickle.dumps(p))
    assert clone(cfg, df, ep) == out


@yahpo_skip
def test_yahpo_missing_data_and_unknown_task_are_clear_errors(tmp_path):
    from mfbo.errors import DataError

    with pytest.raises(DataError, match="MFBO_YAHPO_DATA"):
        get_problem("yahpo_lcbench", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown task_id"):
        get_problem("yahpo_lcbench", data_dir=_yahpo_dir(), task_id="42")
