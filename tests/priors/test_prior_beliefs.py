import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from mfbo.errors import PriorError
from mfbo.optimize import SearchSpace
from mfbo.priors import Belief, ProductPrior, prior_from_config


def param(spec, name="x"):
    return SearchSpace.from_dict({name: spec}).parameters[0]


@pytest.mark.parametrize("spec,belief", [
    ({"type": "float", "bounds": [0.0, 4.0]}, {"dist": "normal", "mean": 1.0, "std": 0.7}),
    ({"type": "float", "bounds": [1e-4, 1e-1], "scale": "log"}, {"dist": "lognormal", "median": 1e-3, "log_std": 1}),
    ({"type": "float", "bounds": [1e-4, 1e-1], "scale": "log"}, {"dist": "normal", "mean": 0.02, "std": 0.02}),
    ({"type": "float", "bounds": [0.5, 1.0]}, {"dist": "beta", "a": 5, "b": 2}),
    ({"type": "float", "bounds": [0.1, 10.0], "scale": "log"}, {"dist": "beta", "a": 2, "b": 2}),
])
def test_float_densities_are_normalised_on_the_parameters_own_scale(spec, belief):
    b = Belief(param(spec), belief)
    lo, hi = spec["bounds"]
    if spec.get("scale") == "log":  # density w.r.t. log(x)
        total = integrate.quad(lambda t: math.exp(b.log_prob([math.exp(t)])[0]), math.log(lo), math.log(hi),
                               limit=200)[0]
    else:
        total = integrate.quad(lambda x: math.exp(b.log_prob([x])[0]), lo, hi, limit=200)[0]
    assert total == pytest.approx(1.0, rel=1e-4)
    below = lo / 2 if spec.get("scale") == "log" else lo - 0.1 * (hi - lo)
    assert b.log_prob([below, hi * 1.01]).tolist() == [-np.inf, -np.inf]


def test_integer_masses_sum_to_one_and_match_scipy():
    b = Belief(param({"type": "int", "bounds": [1, 6]}), {"dist": "normal", "mean": 2.0, "std": 1.5})
    p = np.exp(b.log_prob(list(range(1, 7))))
    assert p.sum() == pytest.approx(1.0)
    d = stats.norm(2.0, 1.5)
    z = d.cdf(6.5) - d.cdf(0.5)
    assert p[1] == pytest.approx((d.cdf(2.5) - d.cdf(1.5)) / z)
    assert b.log_prob([0, 7, 2.5]).tolist() == [-np.inf, -np.inf, -np.inf]


def test_samples_follow_the_belief():
    rng = np.random.default_rng(0)
    b = Belief(param({"type": "float", "bounds": [1e-5, 1.0], "scale": "log"}),
               {"dist": "lognormal", "median": 1e-3, "log_std": 0.5})
    x = np.array(b.sample(4000, rng))
    assert np.median(x) == pytest.approx(1e-3, rel=0.05)
    assert np.std(np.log(x)) == pytest.approx(0.5, rel=0.05)
    c = Belief(param({"type": "categorical", "choices": [True, False]}), {"dist": "categorical", "weights": [3, 1]})
    draws = c.sample(4000, rng)
    assert np.mean([d is True for d in draws]) == pytest.approx(0.75, abs=0.03)
    assert c.log_prob([True, False, "True", 1]).tolist()[:2] == pytest.approx([math.log(0.75), math.log(0.25)])
    assert c.log_prob(["True"])[0] == -np.inf


@pytest.mark.parametrize("spec,belief,match", [
    ({"type": "float", "bounds": [0, 1]}, {"dist": "normal", "mean": 50, "std": 0.1}, "no mass"),
    ({"type": "float", "bounds": [0, 1]}, {"dist": "normal", "mean": 0.5}, "needs field 'std'"),
    ({"type": "float", "bounds": [0, 1]}, {"dist": "normal", "mean": 0.5, "std": 1, "sd": 2}, "unknown field"),
    ({"type": "float", "bounds": [0, 1]}, {"dist": "categorical", "weights": [1]}, "categorical parameter"),
    ({"type": "categorical", "choices": ["a", "b"]}, {"dist": "normal", "mean": 0, "std": 1}, "categorical"),
    ({"type": "categorical", "choices": ["a", "b"]}, {"dist": "categorical", "weights": [1, -1]}, "non-negative"),
    ({"type": "categorical", "choices": ["a", "b"]}, {"dist": "categorical", "weights": [1]}, "2 choices"),
    ({"type": "float", "bounds": [0, 1]}, {"dist": "beta", "a": 0, "b": 1}, "'a' must be > 0"),
])
def test_bad_beliefs_are_refused(spec, belief, match):
    with pytest.raises(PriorError, match=match):
        Belief(param(spec), belief)


SPACE = {
    "sigma_min": {"type": "float", "bounds": [0.1, 0.6], "scale": "log",
                  "prior": {"dist": "lognormal", "median": 0.3, "log_std": 0.5}},
    "sigma_max": {"type": "float", "bounds": [0.5, 3.0], "prior": {"dist": "normal", "mean": 1.0, "std": 1.0}},
    "cutoff": {"type": "float", "bounds": [2.0, 8.0]},
    "mcsh_order": {"type": "int", "bounds": [0, 4], "prior": {"dist": "normal", "mean": 3, "std": 2}},
    "n_sigmas": {"type": "int", "bounds": [2, 12]},
    "fp_scheme": {"type": "categorical", "choices": ["gmp", "gmpordernorm"]},
    "epochs": {"type": "fidelity", "bounds": [1, 20]},
}
CONSTRAINTS = ["sigma_min < sigma_max", "cutoff >= 3 * sigma_max", "n_features <= 30"]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 40))
def test_sampled_candidates_never_violate_constraints(seed, n):
    prior = ProductPrior(SPACE, CONSTRAINTS)
    draws = prior.sample(n, seed=seed)
    assert len(draws) == n
    space = SearchSpace.from_dict(SPACE)
    for d in draws:
        assert space.validate(d) == d
        assert d["sigma_min"] < d["sigma_max"] and d["cutoff"] >= 3 * d["sigma_max"]
        groups = {"gmp": [1, 1, 2, 3, 4][: d["mcsh_order"] + 1]}.get(d["fp_scheme"], [1] * (d["mcsh_order"] + 1))
        assert sum(groups) * d["n_sigmas"] <= 30
    assert np.isfinite(prior.log_prob(draws)).all()
    assert prior.feasible(draws).all()


def test_product_prior_sums_beliefs_ignores_extra_keys_and_stores():
    prior = ProductPrior(SPACE, CONSTRAINTS)
    cfg = {"sigma_min": 0.3, "sigma_max": 1.0, "cutoff": 5.0, "mcsh_order": 3, "n_sigmas": 4, "fp_scheme": "gmp"}
    manual = sum(b.log_prob([cfg[k]])[0] for k, b in prior.beliefs.items())
    assert prior.log_prob([cfg])[0] == pytest.approx(manual)
    assert prior.log_prob([dict(cfg, epochs=3, data_fraction=0.5)])[0] == pytest.approx(manual)
    assert prior.log_prob([dict(cfg, cutoff=9.0)])[0] == -np.inf
    with pytest.raises(PriorError, match="lacks parameter 'cutoff'"):
        prior.log_prob([{k: v for k, v in cfg.items() if k != "cutoff"}])
    for clone in (pickle.loads(pickle.dumps(prior)), prior_from_config(prior.to_config())):
        assert clone.log_prob([cfg])[0] == pytest.approx(manual)
        assert clone.sample(5, seed=2) == prior.sample(5, seed=2)
    assert prior.sample(0) == []
    with pytest.raises(PriorError, match="unknown hyperparameter"):
        ProductPrior(SPACE, ["cutof > 1"])
