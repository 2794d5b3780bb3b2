"""DEHB and SMAC3 across a process boundary (mfbo.optimize.baselines._peers); skipped without their venv."""

from __future__ import annotations

import pytest

from mfbo.errors import BackendUnavailable, ConfigError
from mfbo.optimize.baselines import get_baseline, peers_python
from mfbo.optimize.problems import get_problem

try:
    PEERS = peers_python()
except BackendUnavailable as exc:
    PEERS, WHY = None, str(exc)
else:
    WHY = ""
needs_peers = pytest.mark.skipif(PEERS is None, reason=f"no DEHB/SMAC3 environment: {WHY}")


class Counting:
    """A problem wrapper that counts the calls made in this (the parent) process."""

    def __init__(self, problem):
        self.problem = problem
        self.full_fidelity_cost = problem.full_fidelity_cost
        self.calls = []

    def __call__(self, params, data_fraction, epochs):
        self.calls.append((dict(params), data_fraction, epochs))
        return self.problem(params, data_fraction, epochs)


def test_missing_interpreter_is_one_clear_line(tmp_path):
    with pytest.raises(BackendUnavailable, match=r"setup-peers\.sh"):
        peers_python(tmp_path / "nope" / "python")
    p = get_problem("hartmann6_mf")
    with pytest.raises(BackendUnavailable):
        get_baseline("dehb")(p, p.space, 1.0, python=str(tmp_path / "nope"))


@needs_peers
@pytest.mark.parametrize("method", ["dehb", "smac-mf"])
def test_peer_evaluates_the_problem_in_this_process_within_budget(method):
    prob = get_problem("learning_curve", seed=0)
    obj = Counting(prob)
    res = get_baseline(method)(obj, prob.space, 3.0, seed=1)
    # every evaluation the peer asked for ran here, through the same objective (and its noise stream)
    assert len(obj.calls) == len(res.trials) > 3
    assert {c[1] for c in obj.calls} == {1.0}  # the data fraction stays at target
    epochs = {c[2] for c in obj.calls}
    assert min(epochs) < prob.space["epochs"].high and epochs <= set(range(1, 82))
    assert 3.0 <= res.cost_spent < 3.0 + 1.0 + 1e-9  # overshoot below one full-fidelity evaluation
    assert res.history and all(prob.space.validate(h["recommended"]) for h in res.history)
    assert res.info["peer_versions"].get("numpy", "").startswith("1.")
    again = get_baseline(method)(Counting(get_problem("learning_curve", seed=0)), prob.space, 3.0, seed=1)
    assert [t.params for t in again.trials] == [t.params for t in res.trials]  # seed-reproducible


@needs_peers
def test_peer_refuses_constraints_and_spaces_without_epochs():
    p = get_problem("learning_curve")
    with pytest.raises(ConfigError, match="constraints"):
        get_baseline("dehb")(p, p.space, 1.0, constraints=[object()])
    space = {"x": {"type": "float", "bounds": [0.0, 1.0]}}
    with pytest.raises(ConfigError, match="epochs"):
        get_baseline("dehb")(lambda params, f, e: {"curve": [params["x"]], "cost": 1.0}, space, 1.0)
