"""Conformance suite for :class:`mfbo.priors.Prior` plug-ins.

Two ways to run it::

    from mfbo.testing import check_prior
    check_prior(MyPrior(), space)            # raises PriorConformanceError listing every failure

    from mfbo.testing import PriorConformance
    class TestMyPrior(PriorConformance):     # pytest collects one test per check
        def make_prior(self): return MyPrior()
        def make_space(self): return {...}   # plain dict or SearchSpace
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mfbo.errors import PriorError

__all__ = ["PriorConformanceError", "check_prior", "prior_checks", "PriorConformance"]


class PriorConformanceError(AssertionError):
    """A prior breaks the Prior contract; the message lists each failed check."""


def _space(space: Any):
    from mfbo.optimize import SearchSpace

    return SearchSpace.from_dict(space)


def _configs(space, n: int, seed: int) -> list[dict]:
    return space.sample(n, seed=seed)


def _log_prob(prior, configs) -> np.ndarray:
    out = prior.log_prob(configs)
    if not isinstance(out, np.ndarray):
        raise PriorConformanceError(f"log_prob must return a numpy ndarray, got {type(out).__name__}")
    return out


def _check_is_prior(prior, space, constraints, n, seed) -> None:
    from mfbo.priors import Prior

    if not isinstance(prior, Prior):
        raise PriorConformanceError(f"{type(prior).__name__} is not a subclass of mfbo.priors.Prior")
    if type(prior).log_prob is Prior.log_prob:
        raise PriorConformanceError(f"{type(prior).__name__} does not implement log_prob(configs)")


def _check_shape_and_values(prior, space, constraints, n, seed) -> None:
    configs = _configs(space, n, seed)
    lp = _log_prob(prior, configs)
    if lp.shape != (n,):
        raise PriorConformanceError(f"log_prob of {n} configurations must have shape ({n},), got {lp.shape}")
    if not np.issubdtype(lp.dtype, np.floating):
        raise PriorConformanceError(f"log_prob must return floats, got dtype {lp.dtype}")
    if np.isnan(lp).any():
        raise PriorConformanceError(f"log_prob returned NaN for {int(np.isnan(lp).sum())} of {n} in-bounds "
                                    "configurations; return -inf to rule a configuration out")
    if np.isposinf(lp).any():
        raise PriorConformanceError("log_prob returned +inf; a log density must be finite or -inf")
    if not np.isfinite(lp).any():
        raise PriorConformanceError(f"log_prob is -inf on all {n} quasi-random in-bounds configurations; the "
                                    "prior puts no mass in the search space")


def _check_empty(prior, space, constraints, n, seed) -> None:
    lp = _log_prob(prior, [])
    if lp.shape != (0,):
        raise PriorConformanceError(f"log_prob([]) must have shape (0,), got {lp.shape}")


def _check_deterministic(prior, space, constraints, n, seed) -> None:
    configs = _configs(space, n, seed)
    a, b = _log_prob(prior, configs), _log_prob(prior, configs)
    if not np.array_equal(a, b, equal_nan=True):
        raise PriorConformanceError("log_prob gave different values for the same configurations twice")


def _check_rowwise(prior, space, constraints, n, seed) -> None:
    configs = _configs(space, n, seed)
    full = _log_prob(prior, configs)
    rev = _log_prob(prior, configs[::-1])[::-1]
    if not np.allclose(full, rev, rtol=1e-9, atol=1e-9, equal_nan=True):
        raise PriorConformanceError("log_prob depends on the order of the batch (reversed input did not give the "
                                    "reversed output)")
    for k in sorted({0, n // 2, n - 1}):
        single = _log_prob(prior, [configs[k]])
        if single.shape != (1,) or not np.allclose(single[0], full[k], rtol=1e-9, atol=1e-9, equal_nan=True):
            raise PriorConformanceError(f"log_prob of configuration {k} alone ({single}) differs from its value in "
                                        f"the batch ({full[k]}); rows must be independent")


def _check_no_mutation(prior, space, constraints, n, seed) -> None:
    configs = _configs(space, n, seed)
    before = copy.deepcopy(configs)
    _log_prob(prior, configs)
    if configs != before:
        raise PriorConformanceError("log_prob modified the configurations it was given")


def _check_extra_keys(prior, space, constraints, n, seed) -> None:
    configs = _configs(space, n, seed)
    targets = space.target_fidelities()
    extra = [dict(c, **targets, _unrelated_key="x") for c in configs]
    if not np.allclose(_log_prob(prior, configs), _log_prob(prior, extra), rtol=1e-9, atol=1e-9, equal_nan=True):
        raise PriorConformanceError("log_prob changed when configurations carried extra keys (fidelities); "
                                    "it must read only design parameters")


def _check_pickle(prior, space, constraints, n, seed) -> None:
    try:
        clone = pickle.loads(pickle.dumps(prior))
    except Exception as exc:  # noqa: BLE001 - any pickling failure is a conformance failure
        raise PriorConformanceError(f"the prior cannot be pickled ({type(exc).__name__}: {exc}); priors are sent "
                                    "to worker processes and stored with studies") from exc
    configs = _configs(space, n, seed)
    if not np.allclose(_log_prob(prior, configs), _log_prob(clone, configs), equal_nan=True):
        raise PriorConformanceError("a pickled-and-restored prior gives different log_prob values")


def _check_sample(prior, space, constraints, n, seed) -> None:
    from mfbo.priors import Prior, parse_constraint

    if type(prior).sample is Prior.sample:
        return  # optional method not implemented: nothing to check
    try:
        draws = prior.sample(n, seed=seed)
    except Exception as exc:  # noqa: BLE001
        raise PriorConformanceError(f"sample({n}, seed) raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(draws, list) or len(draws) != n or not all(isinstance(d, Mapping) for d in draws):
        raise PriorConformanceError(f"sample({n}, seed) must return a list of {n} dicts")
    try:
        for d in draws:
            space.validate(d)
    except Exception as exc:  # noqa: BLE001 - SearchSpaceError and friends
        raise PriorConformanceError(f"sample() returned a configuration outside the search space: {exc}") from exc
    again = prior.sample(n, seed=seed)
    if again != draws:
        raise PriorConformanceError("sample(n, seed) is not reproducible: the same seed gave different draws")
    lp = _log_prob(prior, draws)
    if not np.isfinite(lp).all():
        raise PriorConformanceError("log_prob is not finite on the prior's own samples")
    for c in (parse_constraint(c) for c in constraints):
        bad = ~c.is_satisfied(draws)
        if bad.any():
            raise PriorConformanceError(f"sample() violated constraint {str(c)!r} in {int(bad.sum())} of {n} draws")
    if prior.sample(0, seed=seed) != []:
        raise PriorConformanceError("sample(0) must return []")
    numeric = [p for p in space.design_parameters if p.type == "float"]
    if numeric and n >= 4:
        other = prior.sample(n, seed=seed + 1)
        if all(math.isclose(a[p.name], b[p.name]) for a, b in zip(draws, other) for p in numeric):
            raise PriorConformanceError("sample() ignores its seed: different seeds gave identical draws")


def _check_to_config(prior, space, constraints, n, seed) -> None:
    from mfbo.priors import prior_from_config

    try:
        cfg = prior.to_config()
    except PriorError:
        return  # optional: not storable except by dotted path
    import json

    try:
        json.dumps(cfg)
    except (TypeError, ValueError) as exc:
        raise PriorConformanceError(f"to_config() must be JSON-able: {exc}") from exc
    clone = prior_from_config(cfg)
    configs = _configs(space, n, seed)
    if not np.allclose(_log_prob(prior, configs), _log_prob(clone, configs), equal_nan=True):
        raise PriorConformanceError("prior_from_config(prior.to_config()) gives different log_prob values")


_CHECKS: dict[str, Callable] = {
    "is_prior": _check_is_prior,
    "shape_and_values": _check_shape_and_values,
    "empty_batch": _check_empty,
    "deterministic": _check_deterministic,
    "rowwise": _check_rowwise,
    "no_mutation": _check_no_mutation,
    "extra_keys": _check_extra_keys,
    "pickle": _check_pickle,
    "sample": _check_sample,
    "to_config": _check_to_config,
}


def prior_checks() -> list[str]:
    """Names of the checks :func:`check_prior` runs, in order."""
    return list(_CHECKS)


def check_prior(prior: Any, space: Any, *, constraints: Sequence[Any] = (), n: int = 32, seed: int = 0,
                checks: Sequence[str] | None = None) -> None:
    """Run the Prior conformance checks.

    Args:
        prior: the prior instance.
        space: the search space (plain dict or SearchSpace) the prior is meant for.
        constraints: constraints its ``sample`` must respect (strings or Constraint objects).
        n: configurations per check (quasi-random in the space).
        seed: seed of those configurations and of the samples.
        checks: a subset of :func:`prior_checks` (default: all).

    Raises:
        PriorConformanceError: one or more checks failed (every failure listed).
    """
    space = _space(space)
    names = list(checks) if checks is not None else list(_CHECKS)
    unknown = [c for c in names if c not in _CHECKS]
    if unknown:
        raise ValueError(f"unknown checks {unknown}; available: {list(_CHECKS)}")
    failures = []
    for name in names:
        try:
            _CHECKS[name](prior, space, tuple(constraints), int(n), int(seed))
        except PriorConformanceError as exc:
            failures.append(f"{name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - any crash is a failure to report, with its type
            failures.append(f"{name}: raised {type(exc).__name__}: {exc}")
        if name == "is_prior" and failures:
            break
    if failures:
        raise PriorConformanceError(f"{type(prior).__name__} fails {len(failures)} conformance check(s):\n  "
                                    + "\n  ".join(failures))


class PriorConformance:
    """pytest mix-in: subclass it as ``TestSomething`` and implement :meth:`make_prior` and :meth:`make_space`
    (optionally :meth:`make_constraints`); each conformance check becomes one test."""

    n: int = 32
    seed: int = 0

    def make_prior(self) -> Any:
        raise NotImplementedError("implement make_prior() to return the prior under test")

    def make_space(self) -> Any:
        raise NotImplementedError("implement make_space() to return the search space (dict or SearchSpace)")

    def make_constraints(self) -> Sequence[Any]:
        return ()

    def _run(self, name: str) -> None:
        check_prior(self.make_prior(), self.make_space(), constraints=self.make_constraints(), n=self.n,
                    seed=self.seed, checks=[name])

    def test_is_prior(self):
        self._run("is_prior")

    def test_shape_and_values(self):
        self._run("shape_and_values")

    def test_empty_batch(self):
        self._run("empty_batch")

    def test_deterministic(self):
        self._run("deterministic")

    def test_rowwise(self):
        self._run("rowwise")

    def test_no_mutation(self):
        self._run("no_mutation")

    def test_extra_keys(self):
        self._run("extra_keys")

    def test_pickle(self):
        self._run("pickle")

    def test_sample(self):
        self._run("sample")

    def test_to_config(self):
        self._run("to_config")
