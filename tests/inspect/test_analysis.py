"""The numerical parts on inputs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from mfbo.inspect._analysis import (
    curve_trust,
    fidelity_trust,
    on_bounds,
    saltelli,
    sobol_indices,
    unit_to_configs,
)
from mfbo.optimize import SearchSpace, Trial


def test_saltelli_reproduces_analytic_indices():
    # f = x0 + 2 [x3 > 0.5] + 0.5 x1: additive, V = 1/12 + 1 + 1/48.
    first, total = saltelli(lambda X: X[:, 0] + 2 * (X[:, 3] > 0.5) + 0.5 * X[:, 1], 4, n_samples=512)
    V = 1 / 12 + 1 + 1 / 48
    np.testing.assert_allclose(first, [1 / 12 / V, 1 / 48 / V, 0, 1 / V], atol=0.01)
    np.testing.assert_allclose(total, first, atol=0.01)
    # f = x0 x1: S_i = 3/7, S_Ti = 4/7 (interaction).
    first, total = saltelli(lambda X: X[:, 0] * X[:, 1], 3, n_samples=1024)
    np.testing.assert_allclose(first, [3 / 7, 3 / 7, 0], atol=0.02)
    np.testing.assert_allclose(total, [4 / 7, 4 / 7, 0], atol=0.02)


def test_sobol_indices_treat_a_categorical_as_one_factor():
    space = SearchSpace.from_dict({
        "a": {"type": "float", "bounds": [0, 1]},
        "c": {"type": "categorical", "choices": ["p", "q", "r"]},
        "epochs": {"type": "fidelity", "bounds": [1, 10], "target": 10},
    })

    def predict(configs, df, ep):
        m = np.array([{"p": 0.0, "q": 1.0, "r": 2.0}[c["c"]] for c in configs])
        return m, np.zeros(len(m))

    s = sobol_indices(space, predict)
    assert s["total"]["c"] == pytest.approx(1.0, abs=0.01)
    assert s["total"]["a"] == pytest.approx(0.0, abs=0.01)


def _trials(order_low, order_high):
    """Six configs, each at (0.25, 4 epochs) and at target (1.0, 16), with values ranked as given."""
    out = []
    for i in range(6):
        p = {"a": i / 10}
        low = [1.0 + order_low[i]] * 4
        high = [0.5 + order_high[i]] * 16
        out.append(Trial(index=2 * i, params=p, data_fraction=0.25, epochs=4, curve=low))
        out.append(Trial(index=2 * i + 1, params=p, data_fraction=1.0, epochs=16, curve=high))
    return out


def test_fidelity_trust_sees_agreement_and_reversal():
    space = SearchSpace.from_dict({
        "a": {"type": "float", "bounds": [0, 1]},
        "data_fraction": {"type": "fidelity", "bounds": [0.1, 1.0], "target": 1.0},
        "epochs": {"type": "fidelity", "bounds": [1, 16], "target": 16},
    })
    agree = fidelity_trust(space, _trials([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]))
    rev = fidelity_trust(space, _trials([5, 4, 3, 2, 1, 0], [0, 1, 2, 3, 4, 5]))
    row = next(r for r in agree if r["data_fraction"] == [0.25, 0.25] and r["epochs"] == 4)
    assert row["n"] == 6 and row["spearman"] == pytest.approx(1.0) and row["kendall"] == pytest.approx(1.0)
    row = next(r for r in rev if r["data_fraction"] == [0.25, 0.25] and r["epochs"] == 4)
    assert row["spearman"] == pytest.approx(-1.0) and row["kendall"] == pytest.approx(-1.0)
    assert 0 <= row["spearman_p"] <= 1
    # Target-data-fraction, lower-epoch levels are there too (the curves are flat, so they agree fully).
    row = next(r for r in agree if r["data_fraction"] == [1.0, 1.0] and r["epochs"] == 8)
    assert row["spearman"] == pytest.approx(1.0)


def _ishigami(U: np.ndarray, offset: float = 0.0) -> np.ndarray:
    X = (2 * U - 1) * np.pi
    return offset + np.sin(X[:, 0]) + 7 * np.sin(X[:, 1]) ** 2 + 0.1 * X[:, 2] ** 4 * np.sin(X[:, 0])


def _ishigami_indices() -> tuple[np.ndarray, np.ndarray]:
    """Analytic first-order and total indices of the Ishigami function (a = 7, b = 0.1)."""
    a, b = 7.0, 0.1
    V = a ** 2 / 8 + b * np.pi ** 4 / 5 + b ** 2 * np.pi ** 8 / 18 + 0.5
    V1, V2, V13 = 0.5 * (1 + b * np.pi ** 4 / 5) ** 2, a ** 2 / 8, b ** 2 * np.pi ** 8 * 8 / 225
    return np.array([V1, V2, 0.0]) / V, np.array([V1 + V13, V2, V13]) / V


@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_ishigami_indices_within_their_monte_carlo_error_and_first_order_below_total(offset):
    # A large constant offset (an objective far from zero that varies little) must not matter: the
    # uncentred first-order estimator gave S_1 = 0.88 > S_T1 = 0.45 at offset 1000.
    first, total, first_se, total_se = saltelli(lambda U: _ishigami(U, offset), 3, n_samples=2048, n_boot=200)
    s1, st = _ishigami_indices()
    assert np.all(first_se > 0) and np.all(total_se > 0) and np.all(first_se < 0.05)
    np.testing.assert_array_less(np.abs(first - s1), 4 * first_se + 0.005)
    np.testing.assert_array_less(np.abs(total - st), 4 * total_se + 0.005)
    np.testing.assert_array_less(first, total + 3 * np.hypot(first_se, total_se))


def test_unit_to_configs_gives_every_integer_equal_mass():
    space = SearchSpace.from_dict({"n": {"type": "int", "bounds": [1, 5]}, "c": {"type": "categorical",
                                                                                  "choices": ["a", "b"]}})
    U = (np.arange(1000)[:, None] + 0.5) / 1000 * np.ones((1, 2))
    counts = np.bincount([c["n"] for c in unit_to_configs(space, U)], minlength=6)[1:]
    assert counts.tolist() == [200] * 5


def test_on_bounds_flags_values_on_the_edge_of_the_range():
    space = SearchSpace.from_dict({
        "num_layers": {"type": "int", "bounds": [1, 5]},
        "cutoff": {"type": "float", "bounds": [6.0, 8.0]},
        "lr": {"type": "float", "bounds": [1e-4, 1e-1], "scale": "log"},
        "nodes": {"type": "int", "bounds": [4, 64]},
        "act": {"type": "categorical", "choices": ["tanh", "silu"]},
    })
    flags = on_bounds(space, {"num_layers": 1, "cutoff": 6.007, "lr": 0.095, "nodes": 63, "act": "tanh"})
    assert {f["name"]: f["side"] for f in flags} == {"num_layers": "lower", "cutoff": "lower", "lr": "upper"}
    assert on_bounds(space, {"num_layers": 3, "cutoff": 7.0, "lr": 1e-3, "nodes": 16, "act": "silu"}) == []


def test_curve_trust_sees_agreement_and_reversal_within_learning_curves():
    space = SearchSpace.from_dict({
        "a": {"type": "float", "bounds": [0, 1]},
        "epochs": {"type": "fidelity", "bounds": [1, 16], "target": 16},
    })

    def trials(late_order):
        # Early epochs rank the trials 0 < 1 < ... < 5; the 8th epoch ranks them as late_order says.
        return [Trial(index=i, params={"a": i / 10}, data_fraction=1.0, epochs=8,
                      curve=[1.0 + i] * 4 + [0.5 + late_order[i]] * 4) for i in range(6)]

    agree = curve_trust(space, trials([0, 1, 2, 3, 4, 5]))
    rev = curve_trust(space, trials([5, 4, 3, 2, 1, 0]))
    assert [r["epochs"] for r in agree] == [1, 2, 4] and {r["reference_epochs"] for r in agree} == {8}
    assert all(r["n"] == 6 and r["spearman"] == pytest.approx(1.0) for r in agree)
    assert all(r["spearman"] == pytest.approx(-1.0) for r in rev)
    # Too few trials with two epochs: no rows, not a failure.
    assert curve_trust(space, trials([0, 1, 2, 3, 4, 5])[:3]) == []
