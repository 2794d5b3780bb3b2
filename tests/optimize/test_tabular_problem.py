"""Tabular benchmark problems: exact lookups, fraction snapping, cost additivity, known optimum, errors."""

from __future__ import annotations

import gzip
import itertools
import json
import pickle

import numpy as np
import pytest

from mfbo.errors import ConfigError, DataError, MfboError, TrainingDiverged
from mfbo.optimize.problems import get_problem, list_problems
from mfbo.optimize.problems._tabular import (
    OC20GMP,
    TABLE_FORMAT,
    TableError,
    TabularProblem,
    default_oc20_gmp_table,
)

FRACTIONS = [0.25, 0.5, 1.0]
T = 4
AXES = {"a": [0, 1, 2], "lr": [0.001, 0.01], "act": ["tanh", "silu"]}


def _loss(config: dict, fraction: float, epoch: int) -> float:
    # Distinct for every cell; best at a=1, lr=0.01, act=silu; decreasing in epochs and fraction.
    base = 0.1 + 0.05 * (config["a"] - 1) ** 2 + (0.02 if config["lr"] == 0.001 else 0.0)
    base += 0.01 if config["act"] == "tanh" else 0.0
    return base + 0.3 * (1.0 - fraction) + 0.2 / epoch + 0.001 * config["a"] * fraction


def _epoch_s(config: dict, fraction: float, clock: str) -> list[float]:
    scale = 1.0 if clock == "cpu" else 1.5
    return [scale * (1.0 + config["a"]) * fraction * (1 + 0.1 * t) for t in range(T)]


def make_table(**overrides) -> dict:
    runs = []
    names = list(AXES)
    for values in itertools.product(*AXES.values()):
        config = dict(zip(names, values))
        for f in FRACTIONS:
            runs.append({
                "config": config, "fraction": f,
                "curves": {"loss": [_loss(config, f, t) for t in range(1, T + 1)],
                           "other": [1.0 + config["a"] - 0.1 * t for t in range(T)]},
                "epoch_s": {"cpu": _epoch_s(config, f, "cpu"), "wall": _epoch_s(config, f, "wall")},
                "featurize_s": {"cpu": 2.0 * f, "wall": 3.0 * f},
                "setup_s": {"cpu": 0.5, "wall": 0.5},
            })
    table = {"format": TABLE_FORMAT, "name": "toy", "axes": [{"name": k, "values": v} for k, v in AXES.items()],
             "fractions": FRACTIONS, "max_epochs": T, "metrics": ["loss", "other"], "default_metric": "loss",
             "runs": runs}
    table.update(overrides)
    return table


@pytest.fixture()
def table_path(tmp_path):
    path = tmp_path / "table.json"
    path.write_text(json.dumps(make_table()))
    return path


@pytest.fixture()
def problem(table_path):
    return TabularProblem(table=table_path)


def _all_configs(p: TabularProblem) -> list[dict]:
    return list(p.configs)


def test_space_exposes_axes_as_exact_parameters(problem):
    space = problem.space
    assert space["a"].type == "int" and (space["a"].low, space["a"].high) == (0, 2)
    assert space["lr_level"].type == "int" and (space["lr_level"].low, space["lr_level"].high) == (0, 1)
    assert space["act"].type == "categorical" and set(space["act"].choices) == {"tanh", "silu"}
    assert (space["data_fraction"].low, space["data_fraction"].high, space["data_fraction"].target) == (0.25, 1, 1)
    assert (space["epochs"].low, space["epochs"].high, space["epochs"].target) == (1, T, T)
    assert problem.name == "toy" and len(problem.configs) == 12
    assert problem.hyperparameters({"a": 2, "lr_level": 1, "act": "tanh"}) == {"a": 2, "lr": 0.01, "act": "tanh"}
    # Every quasi-random sample is a cell of the table.
    for cfg in space.sample(64, seed=1):
        assert np.isfinite(problem.value_at_target(cfg))


def test_lookups_return_the_recorded_curves(problem):
    for params in _all_configs(problem):
        hp = problem.hyperparameters(params)
        for f in FRACTIONS:
            for t in (1, 3, T):
                out = problem(params, data_fraction=f, epochs=t)
                assert out["curve"] == pytest.approx([_loss(hp, f, e) for e in range(1, t + 1)], abs=1e-12)
    # Defaults: target fidelity.
    params = problem.configs[0]
    assert len(problem(params)["curve"]) == T


def test_fraction_snaps_up_to_the_next_recorded_level(problem):
    assert [problem.snap_fraction(f) for f in (0.25, 0.26, 0.5, 0.500000001, 0.51, 0.99, 1.0)] == \
        [0.25, 0.5, 0.5, 0.5, 1.0, 1.0, 1.0]
    params = {"a": 1, "lr_level": 0, "act": "silu"}
    assert problem(params, 0.3, 2) == problem(params, 0.5, 2)
    assert problem(params, 0.3, 2) != problem(params, 0.25, 2)
    with pytest.raises(ConfigError, match="data_fraction"):
        problem(params, 0.1, 2)
    with pytest.raises(ConfigError, match="epochs"):
        problem(params, 1.0, T + 1)


def test_cost_is_featurisation_plus_setup_plus_summed_epochs(problem, table_path):
    params = {"a": 2, "lr_level": 1, "act": "tanh"}
    hp = problem.hyperparameters(params)
    for f in FRACTIONS:
        epochs = _epoch_s(hp, f, "cpu")
        for t in range(1, T + 1):
            assert problem(params, f, t)["cost"] == pytest.approx(2.0 * f + 0.5 + sum(epochs[:t]))
        # additive in epochs: each extra epoch adds its recorded seconds
        assert problem(params, f, 3)["cost"] - problem(params, f, 2)["cost"] == pytest.approx(epochs[2])
    wall = TabularProblem(table=table_path, clock="wall")
    assert wall(params, 1.0, 2)["cost"] == pytest.approx(3.0 + 0.5 + sum(_epoch_s(hp, 1.0, "wall")[:2]))
    # 1 FFE = median cost at target fidelity; cost(f, t) = median over configurations.
    target_costs = [problem(c, 1.0, T)["cost"] for c in problem.configs]
    assert problem.full_fidelity_cost == pytest.approx(np.median(target_costs))
    assert problem.cost(0.3, 2) == pytest.approx(np.median([problem(c, 0.5, 2)["cost"] for c in problem.configs]))


def test_known_optimum_and_zero_regret(problem):
    values = np.array([problem.value_at_target(c) for c in problem.configs])
    assert problem.optimum_value == pytest.approx(values.min())
    assert problem.optimizer_location == {"a": 1, "lr_level": 1, "act": "silu"}
    assert problem.regret(problem.optimizer_location) == 0.0
    assert np.all(values - problem.optimum_value >= 0)
    assert problem.value_at_target(problem.optimizer_location) == problem(problem.optimizer_location)["curve"][-1]
    assert np.allclose(problem.values_at_target(problem.configs), values)


def test_metric_choice_and_weights(table_path):
    p = TabularProblem(table=table_path, metric={"loss": 1.0, "other": 0.5})
    params = {"a": 0, "lr_level": 0, "act": "tanh"}
    hp = p.hyperparameters(params)
    expected = [_loss(hp, 1.0, t + 1) + 0.5 * (1.0 - 0.1 * t) for t in range(T)]
    assert p(params, 1.0, T)["curve"] == pytest.approx(expected)
    other = TabularProblem(table=table_path, metric="other")
    assert other.optimizer_location["a"] == 0
    with pytest.raises(ConfigError, match="not recorded"):
        TabularProblem(table=table_path, metric="val_nope")
    with pytest.raises(ConfigError, match="clock"):
        TabularProblem(table=table_path, clock="gpu")


def test_gzip_dict_registry_and_pickle(tmp_path, table_path):
    gz = tmp_path / "table.json.gz"
    with gzip.open(gz, "wt") as fh:
        json.dump(make_table(), fh)
    a, b, c = TabularProblem(table=table_path), TabularProblem(table=gz), TabularProblem(table=make_table())
    assert a.optimum_value == b.optimum_value == c.optimum_value
    assert {"tabular", "oc20_gmp"} <= set(list_problems())
    p = get_problem("tabular", seed=3, table=table_path)
    assert p.optimum_value == a.optimum_value
    q = pickle.loads(pickle.dumps(p))
    params = p.configs[5]
    assert q(params, 0.5, 3) == p(params, 0.5, 3)
    with pytest.raises(ConfigError, match="table=PATH"):
        get_problem("tabular")


def test_missing_table_says_how_to_regenerate(tmp_path):
    with pytest.raises(TableError, match="not found") as info:
        TabularProblem(table=tmp_path / "nope.json")
    assert isinstance(info.value, DataError) and isinstance(info.value, MfboError)
    with pytest.raises(TableError, match="exhaustive.py"):
        OC20GMP(table=tmp_path / "nope.json")
    with pytest.raises(TableError, match="exhaustive.py"):
        get_problem("oc20_gmp", table=tmp_path / "nope.json")


def _cells(table):
    return table["runs"]


@pytest.mark.parametrize("corrupt, match", [
    (lambda t: t.update(format="other"), "format"),
    (lambda t: t.pop("max_epochs"), "max_epochs"),
    (lambda t: t.update(fractions=[0.5, 1.5]), "fractions"),
    (lambda t: t.update(axes=[{"name": "a", "values": [0, 1, 2]}]), "config keys"),
    (lambda t: t.update(axes=[{"name": "a", "values": [0]}] + t["axes"][1:]), "at least two values"),
    (lambda t: _cells(t).pop(7), "incomplete"),
    (lambda t: _cells(t).append(_cells(t)[0]), "duplicate run"),
    (lambda t: _cells(t)[3]["curves"].update(loss=[0.1, 0.2]), "curve 'loss' has 2 values"),
    (lambda t: _cells(t)[3]["curves"].update(loss=[0.1, None, 0.1, 0.1]), "finite numbers"),
    (lambda t: _cells(t)[3].update(fraction=0.3), "fraction 0.3"),
    (lambda t: _cells(t)[3]["config"].update(a=7), "a=7"),
    (lambda t: _cells(t)[3].update(epoch_s={"wall": [1, 1, 1, 1]}), "no 'cpu' entry"),
    (lambda t: _cells(t)[3].update(featurize_s=-1.0), "non-negative"),
])
def test_malformed_tables_are_refused_with_the_fault_named(tmp_path, corrupt, match):
    table = make_table()
    table["runs"] = [json.loads(json.dumps(r)) for r in table["runs"]]
    corrupt(table)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(table))
    with pytest.raises(TableError, match=match):
        TabularProblem(table=path)


def test_unreadable_json_is_a_table_error(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"format": "mfbo-tabular-1", "axes": [')
    with pytest.raises(TableError, match="not readable JSON"):
        TabularProblem(table=path)


def test_diverged_run_raises_like_the_trainer(tmp_path):
    table = make_table()
    run = next(r for r in table["runs"] if r["config"] == {"a": 2, "lr": 0.01, "act": "tanh"} and r["fraction"] == 1.0)
    run["diverged_at"] = 3
    run["curves"] = {k: v[:2] for k, v in run["curves"].items()}
    run["epoch_s"] = {k: v[:2] for k, v in run["epoch_s"].items()}
    p = TabularProblem(table=table)
    params = {"a": 2, "lr_level": 1, "act": "tanh"}
    assert len(p(params, 1.0, 2)["curve"]) == 2
    with pytest.raises(TrainingDiverged) as info:
        p(params, 1.0, 3)
    assert info.value.epoch == 3
    assert p.value_at_target(params) == np.inf


def test_minimize_random_runs_on_a_table(problem):
    from mfbo.optimize import minimize

    res = minimize(problem, problem.space, budget=2, method="random", seed=0)
    assert res.best_params is not None
    assert problem.regret(res.best_params) >= 0


# -- the shipped oc20_gmp table ---------------------------------------------------------------------
_OC20 = default_oc20_gmp_table()
oc20_skip = pytest.mark.skipif(not _OC20.is_file(), reason=f"{_OC20} not present (run "
                               "analysis/benchmarks/oc20_gmp/exhaustive.py)")


@oc20_skip
def test_shipped_oc20_table_loads_and_its_optimum_is_consistent():
    p = get_problem("oc20_gmp")
    assert p.table_path == _OC20 and _OC20.stat().st_size < 2_000_000
    assert {prm.name for prm in p.space.design_parameters} == {
        "mcsh_order", "n_sigmas", "num_nodes_level", "lr_level", "force_coefficient_level"}
    assert p.fractions == [0.125, 0.25, 0.5, 1.0] and p.max_epochs == 20
    values = p.values_at_target(p.configs)
    assert np.all(np.isfinite(values))
    assert p.optimum_value == pytest.approx(values.min())
    assert p.regret(p.optimizer_location) == 0.0
    assert p(p.optimizer_location)["curve"][-1] == p.optimum_value
    # Default metric = energy MAE per atom + free-atom force MAE, recorded separately too.
    e = get_problem("oc20_gmp", metric="val_energy_mae_per_atom").value_at_target(p.optimizer_location)
    f = get_problem("oc20_gmp", metric="val_force_mae_free").value_at_target(p.optimizer_location)
    assert e + f == pytest.approx(p.optimum_value, rel=1e-9)
    # A real landscape: configurations differ, and costs grow with fraction and epochs.
    assert values.max() - values.min() > 0.05
    assert 0 < p.cost(0.125, 1) < p.cost(0.5, 10) < p.cost(1.0, 20) == pytest.approx(p.full_fidelity_cost)


@oc20_skip
def test_minimize_random_runs_on_oc20():
    from mfbo.optimize import minimize

    p = get_problem("oc20_gmp")
    res = minimize(p, p.space, budget=2, method="random", seed=0)
    assert p.regret(res.best_params) >= 0
