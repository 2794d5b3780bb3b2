"""The numerical parts on inputs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from mfbo.inspect._analysis import fidelity_trust, saltelli, sobol_indices
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
