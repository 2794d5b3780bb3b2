"""Recommendation rules: holding the evaluated rule's recommendation until the model prefers another."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from mfbo.errors import OptimizerError
from mfbo.optimize import MultiFidelityOptimizer
from mfbo.optimize._recommend import hold_or_switch, recommend_evaluated

from .test_optimizer import FAST, SPACE, _run, toy, toy_value


def _opt(hold: float = 1.0, n: int = 10) -> MultiFidelityOptimizer:
    opt = MultiFidelityOptimizer(SPACE, seed=0, recommendation_hold=hold, **FAST)
    _run(opt, toy, n)
    return opt


def _p_better(opt, surrogate, a: dict, b: dict, n: int = 20000) -> float:
    """Monte-Carlo probability, from joint posterior samples at target fidelity, that ``a`` beats ``b``."""
    X = np.ones((2, opt.encoder.dim))
    X[:, : opt.encoder.d] = opt.space.encode([a, b])
    torch.manual_seed(0)
    with torch.no_grad():
        f = surrogate.model.posterior(torch.as_tensor(X)).rsample(torch.Size([n])).squeeze(-1)
    return float((f[:, 0] > f[:, 1]).float().mean())


def test_hold_switches_exactly_when_the_joint_posterior_prefers_the_challenger():
    opt = _opt()
    completed = opt._completed()
    surrogate = opt._fit(completed)
    challenger = recommend_evaluated(opt, surrogate, completed)
    others = [t.params for t in completed if opt._design_key(t.params) != opt._design_key(challenger)]
    others += opt.space.sample(64, seed=3)
    kept = switched = 0
    for hold in (0.5, 1.0, 2.0):
        for held in others:
            p = _p_better(opt, surrogate, challenger, held)
            if abs(p - norm.cdf(hold)) < 0.03:  # too close to the threshold for a Monte-Carlo check
                continue
            got = hold_or_switch(opt, surrogate, held, challenger, hold)
            assert got == (challenger if p > norm.cdf(hold) else held), (hold, p)
            kept += got == held
            switched += got == challenger
    # both branches were exercised
    assert kept > 0 and switched > 0


def test_hold_zero_or_nothing_held_gives_the_challenger():
    opt = _opt()
    completed = opt._completed()
    surrogate = opt._fit(completed)
    challenger = recommend_evaluated(opt, surrogate, completed)
    other = next(t.params for t in completed if t.params != challenger)
    assert hold_or_switch(opt, surrogate, other, challenger, 0.0) == challenger
    assert hold_or_switch(opt, surrogate, None, challenger, 5.0) == challenger
    assert hold_or_switch(opt, surrogate, dict(challenger), challenger, 5.0) == challenger


def test_held_recommendation_survives_refits_and_yields_to_target_evidence():
    opt = _opt(hold=2.0, n=8)
    first = opt.recommend()
    # the optimiser remembers its recommendation, and a rebuilt optimiser continues from it
    state = opt.state_dict()
    assert state["settings"]["recommendation_hold"] == 2.0
    assert state["incumbent"]["params"] == first
    rebuilt = MultiFidelityOptimizer.from_state_dict(state)
    assert rebuilt.recommendation_hold == 2.0 and rebuilt._incumbent == first
    # a poor held design is dropped once runs at target fidelity show how poor it is
    poor = {"x": 0.95, "lr": 1e-4, "act": "tanh"}
    good = {"x": 0.3, "lr": 10 ** -2.5, "act": "silu"}
    for p in (poor, good):
        for _ in range(2):
            idx = opt.attach(p, 1.0, 20)
            opt.tell(idx, toy_value(p), 10.0)
    opt._incumbent = dict(poor)
    assert opt.recommend() != poor
    # with the hold off, the evaluated rule's own choice every time
    plain = MultiFidelityOptimizer.from_state_dict(opt.state_dict())
    plain.recommendation_hold = 0.0
    completed = plain._completed()
    assert plain.recommend() == recommend_evaluated(plain, plain._fit(completed), completed)


@pytest.mark.parametrize("bad", [-1.0, True, "1", float("inf"), float("nan")])
def test_recommendation_hold_is_validated(bad):
    with pytest.raises(OptimizerError, match="recommendation_hold"):
        MultiFidelityOptimizer(SPACE, recommendation_hold=bad)


def test_recommendation_hold_needs_the_evaluated_rule():
    with pytest.raises(OptimizerError, match="recommendation='evaluated' only"):
        MultiFidelityOptimizer(SPACE, recommendation="target", recommendation_hold=1.0)
    assert MultiFidelityOptimizer(SPACE, recommendation="target").recommendation_hold == 0.0
