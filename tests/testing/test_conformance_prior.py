"""The prior conformance suite passes good priors and rejects broken ones."""

from pathlib import Path

import numpy as np
import pytest

from mfbo.priors import Prior, ProductPrior, load_prior_file
from mfbo.testing import PriorConformance, PriorConformanceError, check_prior, prior_checks

REPO = Path(__file__).resolve().parents[2]

SPACE = {
    "lr": {"type": "float", "bounds": [1e-4, 1e-1], "scale": "log"},
    "layers": {"type": "int", "bounds": [1, 6]},
    "act": {"type": "categorical", "choices": ["tanh", "silu"]},
    "epochs": {"type": "fidelity", "bounds": [1, 30]},
}


class GoodPrior(Prior):
    """Prefers lr near 1e-3 and few layers; samples by rejection from the space."""

    def log_prob(self, configs):
        lr = np.array([c["lr"] for c in configs], dtype=float)
        layers = np.array([c["layers"] for c in configs], dtype=float)
        return -0.5 * np.log10(lr / 1e-3) ** 2 - 0.3 * layers

    def sample(self, n, seed=0):
        from mfbo.optimize import SearchSpace

        return SearchSpace.from_dict(SPACE).sample(n, seed=seed)


class NaNPrior(GoodPrior):
    def log_prob(self, configs):
        out = super().log_prob(configs)
        out[::3] = np.nan
        return out


class WrongShapePrior(GoodPrior):
    def log_prob(self, configs):
        return super().log_prob(configs)[:, None]


class ListPrior(GoodPrior):
    def log_prob(self, configs):
        return list(super().log_prob(configs))


class CrossTalkPrior(GoodPrior):
    """Normalises over the batch: a row's value depends on the other rows."""

    def log_prob(self, configs):
        out = super().log_prob(configs)
        return out - np.log(np.exp(out).sum()) if len(out) else out


class RandomPrior(GoodPrior):
    def log_prob(self, configs):
        return np.random.default_rng().normal(size=len(configs))


class MutatingPrior(GoodPrior):
    def log_prob(self, configs):
        for c in configs:
            c["lr"] = float(c["lr"])
            c["seen"] = True
        return super().log_prob(configs)


class StrictKeysPrior(GoodPrior):
    def log_prob(self, configs):
        if any(set(c) != set(("lr", "layers", "act")) for c in configs):
            raise KeyError("unexpected key")
        return super().log_prob(configs)


class OutOfBoundsSampler(GoodPrior):
    def sample(self, n, seed=0):
        draws = super().sample(n, seed)
        return [dict(d, lr=1.0) for d in draws]


class UnseededSampler(GoodPrior):
    def sample(self, n, seed=0):
        return super().sample(n, seed=int(np.random.default_rng().integers(1_000_000)))


class UnpicklablePrior(GoodPrior):
    def __init__(self):
        self.fn = lambda x: x


class NotSubclass:
    def log_prob(self, configs):
        return np.zeros(len(configs))


def test_good_priors_pass():
    check_prior(GoodPrior(), SPACE)
    spec = load_prior_file("bundled:nn_defaults")
    check_prior(spec.prior, spec.space, constraints=spec.constraints)
    gmp = load_prior_file(REPO / "priors" / "gmp_physics.toml")
    check_prior(gmp.prior, gmp.space, constraints=gmp.constraints, n=16)


@pytest.mark.parametrize("prior,failed", [
    (NaNPrior(), "shape_and_values"),
    (WrongShapePrior(), "shape_and_values"),
    (ListPrior(), "numpy ndarray"),
    (CrossTalkPrior(), "rowwise"),
    (RandomPrior(), "deterministic"),
    (MutatingPrior(), "no_mutation"),
    (StrictKeysPrior(), "extra_keys"),
    (OutOfBoundsSampler(), "sample: sample() returned a configuration outside the search space"),
    (UnseededSampler(), "not reproducible"),
    (UnpicklablePrior(), "pickle"),
    (NotSubclass(), "is_prior"),
], ids=lambda x: type(x).__name__ if not isinstance(x, str) else "")
def test_broken_priors_are_rejected(prior, failed):
    with pytest.raises(PriorConformanceError, match="fails") as info:
        check_prior(prior, SPACE)
    assert failed in str(info.value)


def test_sampler_must_respect_constraints():
    constraints = ["layers <= 2"]
    with pytest.raises(PriorConformanceError, match="violated constraint 'layers <= 2'"):
        check_prior(GoodPrior(), SPACE, constraints=constraints, checks=["sample"])
    prior = ProductPrior(SPACE, constraints)
    check_prior(prior, SPACE, constraints=constraints)


def test_unknown_check_name():
    assert "rowwise" in prior_checks()
    with pytest.raises(ValueError, match="unknown checks"):
        check_prior(GoodPrior(), SPACE, checks=["nope"])


class TestGoodPriorWithMixin(PriorConformance):
    """What a user writes: pytest collects one test per check."""

    def make_prior(self):
        return GoodPrior()

    def make_space(self):
        return SPACE
