"""Per-parameter beliefs (normal, log-normal, beta, categorical weights) and their product prior.

A belief is written in a prior file or search-space dict as the parameter's ``prior`` entry, e.g.
``{"dist": "lognormal", "median": 1e-3, "log_std": 1.0}``. Beliefs are truncated to the parameter's
bounds; integer parameters get the mass of ``[k - 1/2, k + 1/2]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import special

from mfbo.errors import PriorError
from mfbo.optimize import Parameter, SearchSpace
from mfbo.priors._base import Prior
from mfbo.priors._expr import Constraint, parse_constraint

__all__ = ["Belief", "make_belief", "ProductPrior", "BELIEF_FIELDS"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)

# dist -> required fields (all numbers unless noted)
BELIEF_FIELDS = {
    "uniform": (),
    "normal": ("mean", "std"),
    "lognormal": ("median", "log_std"),
    "beta": ("a", "b"),
    "categorical": ("weights",),
}


class Belief:
    """A truncated one-dimensional belief about one parameter.

    Args:
        param: the search-space parameter (bounds, scale, type).
        spec: the ``prior`` entry (see module docstring) or None for no opinion (uniform, constant density).

    Raises:
        PriorError: unknown ``dist``, missing/invalid fields, or no mass inside the bounds; the message
            names the parameter and field.
    """

    def __init__(self, param: Parameter, spec: Mapping[str, Any] | None):
        self.param = param
        self.spec = dict(spec) if spec else {"dist": "uniform"}
        dist = self.spec.get("dist")
        where = f"parameter {param.name!r}: prior"
        if dist not in BELIEF_FIELDS:
            raise PriorError(f"{where}: field 'dist' must be one of {sorted(BELIEF_FIELDS)}, got {dist!r}")
        unknown = sorted(set(self.spec) - {"dist", *BELIEF_FIELDS[dist]})
        if unknown:
            raise PriorError(f"{where}: unknown field(s) {unknown} for dist {dist!r} "
                             f"(expected {list(BELIEF_FIELDS[dist])})")
        for f in BELIEF_FIELDS[dist]:
            if f not in self.spec:
                raise PriorError(f"{where}: dist {dist!r} needs field {f!r}")
        self.dist = dist
        if param.type == "categorical":
            if dist not in ("uniform", "categorical"):
                raise PriorError(f"{where}: a categorical parameter takes dist 'categorical' (weights), got {dist!r}")
            self._init_categorical(where)
            return
        if dist == "categorical":
            raise PriorError(f"{where}: dist 'categorical' needs a categorical parameter; {param.name!r} is "
                             f"{param.type}")
        vals = {f: self._number(where, f) for f in BELIEF_FIELDS[dist]}
        for f in ("std", "log_std", "median", "a", "b"):
            if f in vals and vals[f] <= 0:
                raise PriorError(f"{where}: field {f!r} must be > 0, got {vals[f]}")
        lo, hi = param.low, param.high
        self._lt, self._ht = (math.log(lo), math.log(hi)) if param.log else (lo, hi)
        if dist == "normal":
            m, sd = vals["mean"], vals["std"]
            self._cdf = lambda x: special.ndtr((np.asarray(x, dtype=float) - m) / sd)
            self._ppf = lambda u: m + sd * special.ndtri(u)
            self._logpdf = lambda x: -0.5 * ((np.asarray(x, dtype=float) - m) / sd) ** 2 - math.log(sd) - _HALF_LOG_2PI
        elif dist == "lognormal":
            lm, ls = math.log(vals["median"]), vals["log_std"]

            def log_x(x):
                x = np.asarray(x, dtype=float)
                with np.errstate(divide="ignore", invalid="ignore"):
                    return np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), -np.inf)

            self._cdf = lambda x: special.ndtr((log_x(x) - lm) / ls)
            self._ppf = lambda u: np.exp(lm + ls * special.ndtri(u))
            self._logpdf = lambda x: -0.5 * ((log_x(x) - lm) / ls) ** 2 - math.log(ls) - _HALF_LOG_2PI - log_x(x)
        elif dist == "beta":
            a, b = vals["a"], vals["b"]
            span = self._ht - self._lt
            log_norm = float(special.betaln(a, b))

            def to_u(x):
                x = np.asarray(x, dtype=float)
                t = np.log(np.maximum(x, 1e-300)) if param.log else x
                return np.clip((t - self._lt) / span, 0.0, 1.0)

            def ppf(u):
                t = self._lt + special.betaincinv(a, b, u) * span
                return np.exp(t) if param.log else t

            def logpdf(x):
                x = np.asarray(x, dtype=float)
                u = to_u(x)
                with np.errstate(divide="ignore", invalid="ignore"):
                    out = special.xlogy(a - 1, u) + special.xlog1py(b - 1, -u) - log_norm - math.log(span)
                return out - np.log(x) if param.log else out

            self._cdf, self._ppf, self._logpdf = (lambda x: special.betainc(a, b, to_u(x))), ppf, logpdf
        # Truncation interval in x: integers own [k - 1/2, k + 1/2].
        pad = 0.5 if param.is_integer else 0.0
        self._a, self._b = lo - pad, hi + pad
        if dist != "uniform":
            self._ca, self._cb = float(self._cdf(self._a)), float(self._cdf(self._b))
            if not self._cb - self._ca > 1e-12:
                raise PriorError(f"{where}: the belief {self.spec} puts no mass inside bounds [{lo}, {hi}]; "
                                 "centre it inside the bounds")
            self._logz = math.log(self._cb - self._ca)

    def _number(self, where: str, f: str) -> float:
        v = self.spec[f]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise PriorError(f"{where}: field {f!r} must be a finite number, got {v!r}")
        return float(v)

    def _init_categorical(self, where: str) -> None:
        choices = self.param.choices
        if self.dist == "uniform":
            self._weights = np.full(len(choices), 1.0 / len(choices))
            return
        w = self.spec["weights"]
        if isinstance(w, Mapping):
            keys = {_choice_key(c): c for c in choices}
            bad = sorted(k for k in w if str(k) not in keys)
            missing = sorted(k for k in keys if k not in {str(x) for x in w})
            if bad or missing:
                raise PriorError(f"{where}: field 'weights' must give every choice of {list(choices)} "
                                 f"(unknown: {bad}, missing: {missing})")
            raw = [w[next(k for k in w if str(k) == _choice_key(c))] for c in choices]
        elif isinstance(w, Sequence) and not isinstance(w, str):
            if len(w) != len(choices):
                raise PriorError(f"{where}: field 'weights' has {len(w)} entries for {len(choices)} choices "
                                 f"{list(choices)}")
            raw = list(w)
        else:
            raise PriorError(f"{where}: field 'weights' must be a list or a table choice -> weight")
        if any(isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0
               for x in raw) or sum(raw) <= 0:
            raise PriorError(f"{where}: field 'weights' must be non-negative numbers with a positive sum, "
                             f"got {raw}")
        self._weights = np.asarray(raw, dtype=float) / float(sum(raw))

    # -- density --------------------------------------------------------------------------------
    def log_prob(self, values: Sequence[Any]) -> np.ndarray:
        """Log density (w.r.t. the parameter's own scale) of ``values``; ``-inf`` outside the bounds."""
        p = self.param
        if p.type == "categorical":
            out = np.full(len(values), -np.inf)
            for i, v in enumerate(values):
                idx = _index(p.choices, v)
                if idx is not None and self._weights[idx] > 0:
                    out[i] = math.log(self._weights[idx])
            return out
        x = np.array([_as_float(v) for v in values], dtype=float)
        inside = np.isfinite(x) & (x >= p.low - 1e-12 * abs(p.low)) & (x <= p.high + 1e-12 * abs(p.high))
        if p.is_integer:
            inside &= np.abs(x - np.rint(x)) < 1e-9
        out = np.full(len(x), -np.inf)
        if not inside.any():
            return out
        xi = x[inside]
        if self.dist == "uniform":
            out[inside] = 0.0
            return out
        if p.is_integer:
            k = np.rint(xi)
            lo_edge, hi_edge = np.maximum(k - 0.5, self._a), np.minimum(k + 0.5, self._b)
            with np.errstate(divide="ignore"):
                out[inside] = np.log(np.maximum(self._cdf(hi_edge) - self._cdf(lo_edge), 0.0)) - self._logz
        else:
            lp = self._logpdf(xi) - self._logz
            out[inside] = lp + np.log(xi) if p.log else lp
        return out

    def sample(self, n: int, rng: np.random.Generator) -> list[Any]:
        """``n`` independent draws (Python scalars, inside the bounds)."""
        p = self.param
        if p.type == "categorical":
            idx = rng.choice(len(p.choices), size=n, p=self._weights)
            return [p.choices[i] for i in idx]
        u = rng.random(n)
        if self.dist == "uniform":
            x = p.from_unit(u)
        else:
            x = np.asarray(self._ppf(self._ca + u * (self._cb - self._ca)), dtype=float)
            x = np.clip(np.nan_to_num(x, nan=0.5 * (p.low + p.high)), p.low, p.high)
            if p.is_integer:
                x = np.clip(np.rint(x), p.low, p.high)
        return [int(v) if p.is_integer else float(v) for v in x]


def _choice_key(c: Any) -> str:
    return ("true" if c else "false") if isinstance(c, bool) else str(c)


def _index(choices: tuple, v: Any) -> int | None:
    for i, c in enumerate(choices):
        if type(c) is type(v) and c == v:
            return i
    for i, c in enumerate(choices):  # tolerate numpy scalars / int-for-float
        if not isinstance(c, (bool, str)) and not isinstance(v, (bool, str)) and c == v:
            return i
    return None


def _as_float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
        return math.nan
    return float(v)


def make_belief(param: Parameter) -> Belief:
    """The belief stored in ``param.extra["prior"]`` (uniform when absent)."""
    return Belief(param, param.extra.get("prior"))


class ProductPrior(Prior):
    """Independent per-parameter beliefs (from the ``prior`` entries of a search space), with constraints.

    ``log_prob`` is the sum of the per-parameter log densities (constraints are not part of it; the optimiser
    enforces them). ``sample`` draws from the product and keeps only configurations satisfying every
    constraint, giving up with a clear :class:`PriorError` after a bounded number of draws.

    Args:
        space: a SearchSpace or its plain-dict form; design parameters with a ``prior`` entry get that
            belief, the others are uniform on their own scale.
        constraints: constraint strings or :class:`Constraint` objects.
        max_draws_per_sample: rejection-sampling budget per requested configuration.
    """

    name = "product"

    def __init__(self, space: SearchSpace | Mapping[str, Any], constraints: Sequence[str | Constraint] = (),
                 max_draws_per_sample: int = 1000):
        self.space = SearchSpace.from_dict(space)
        self.constraints = tuple(parse_constraint(c) for c in constraints)
        names = [p.name for p in self.space.parameters]
        for c in self.constraints:
            c.check_names(names)
        self.beliefs = {p.name: make_belief(p) for p in self.space.design_parameters}
        self.max_draws_per_sample = int(max_draws_per_sample)

    def log_prob(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        configs = list(configs)
        total = np.zeros(len(configs))
        for name, belief in self.beliefs.items():
            try:
                values = [cfg[name] for cfg in configs]
            except KeyError:
                raise PriorError(f"prior: a configuration lacks parameter {name!r}") from None
            total += belief.log_prob(values)
        return total

    def sample(self, n: int, seed: int = 0) -> list[dict]:
        n = int(n)
        if n < 0:
            raise PriorError(f"sample(n) needs n >= 0, got {n}")
        rng = np.random.default_rng(seed)
        out: list[dict] = []
        draws = 0
        budget = max(self.max_draws_per_sample * n, 1000) if n else 0
        while len(out) < n and draws < budget:
            m = min(max(2 * (n - len(out)), 64), budget - draws)
            cols = {name: b.sample(m, rng) for name, b in self.beliefs.items()}
            batch = [{name: cols[name][i] for name in self.beliefs} for i in range(m)]
            ok = np.ones(m, dtype=bool)
            for c in self.constraints:
                ok &= c.is_satisfied(batch)
            out.extend(cfg for cfg, good in zip(batch, ok) if good)
            draws += m
        if len(out) < n:
            rate = len(out) / max(draws, 1)
            raise PriorError(
                f"prior: only {len(out)} of {n} configurations satisfied the constraints "
                f"{[str(c) for c in self.constraints]} in {draws} draws (acceptance {rate:.2%}); the constraints "
                "are infeasible or nearly so within the bounds and beliefs: widen the bounds or relax them")
        return out[:n]

    def feasible(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """bool ``(n,)``: every constraint satisfied."""
        ok = np.ones(len(configs), dtype=bool)
        for c in self.constraints:
            ok &= c.is_satisfied(configs)
        return ok

    def to_config(self) -> dict:
        return {"class": "product", "options": {"space": self.space.to_dict(),
                                                "constraints": [str(c) for c in self.constraints]}}

    def __repr__(self) -> str:
        beliefs = {k: b.dist for k, b in self.beliefs.items() if b.dist != "uniform"}
        return f"ProductPrior(beliefs={beliefs}, constraints={[str(c) for c in self.constraints]})"

    def __reduce__(self):
        return (_rebuild_product, (self.space.to_dict(), [str(c) for c in self.constraints],
                                   self.max_draws_per_sample))


def _rebuild_product(space: dict, constraints: list[str], max_draws: int) -> ProductPrior:
    return ProductPrior(space, constraints, max_draws)

