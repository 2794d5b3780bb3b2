"""Search spaces: design hyperparameters plus the two fidelity parameters.

The plain-dict form (what :func:`mfbo.minimize` accepts)::

    {"lr": {"type": "float", "bounds": [1e-4, 1e-1], "scale": "log"},
     "layers": {"type": "int", "bounds": [1, 8]},
     "act": {"type": "categorical", "choices": ["tanh", "silu"]},
     "data_fraction": {"type": "fidelity", "bounds": [0.05, 1.0], "target": 1.0},
     "epochs": {"type": "fidelity", "bounds": [1, 100], "target": 100}}

Extra keys (e.g. a ``prior`` entry from :mod:`mfbo.priors`) are kept in
``Parameter.extra`` and ignored here, so prior files may extend the form.

Encoding: design parameters map to the unit cube ``[0, 1]^d_enc`` (log-scaled
ones in log space, categoricals one-hot), which is where surrogates live.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mfbo.errors import SearchSpaceError

__all__ = ["Parameter", "SearchSpace", "ITERATION_NAMES", "sobol"]

_TYPES = ("float", "int", "categorical", "fidelity")
# A fidelity parameter whose name is one of these is the iteration (epoch) fidelity.
ITERATION_NAMES = ("epochs", "epoch", "iterations", "n_epochs")


@dataclass(frozen=True)
class Parameter:
    """One hyperparameter.

    Attributes:
        name: parameter name.
        type: "float", "int", "categorical" or "fidelity".
        low, high: bounds (numeric types), inclusive.
        log: log-scaled (float/int only).
        choices: categorical choices.
        target: target value (fidelity only).
        fidelity_kind: "data" or "iteration" (fidelity only); an iteration fidelity is integer-valued.
        extra: any other keys of the spec entry (e.g. ``prior``), untouched.
    """

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple = ()
    target: float | None = None
    fidelity_kind: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_integer(self) -> bool:
        return self.type == "int" or (self.type == "fidelity" and self.fidelity_kind == "iteration")

    @property
    def encoded_dim(self) -> int:
        return len(self.choices) if self.type == "categorical" else 1

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            d["choices"] = list(self.choices)
        else:
            d["bounds"] = [self.low, self.high]
            if self.log:
                d["scale"] = "log"
        if self.type == "fidelity":
            d["target"] = self.target
            d["kind"] = self.fidelity_kind
        d.update(self.extra)
        return d

    # -- unit-interval maps for numeric parameters ---------------------------------
    def to_unit(self, value: np.ndarray) -> np.ndarray:
        v = np.asarray(value, dtype=float)
        if self.log:
            return (np.log(v) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (v - self.low) / (self.high - self.low)

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        u = np.clip(np.asarray(u, dtype=float), 0.0, 1.0)
        if self.log:
            v = np.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        if self.is_integer:
            v = np.clip(np.rint(v), self.low, self.high)
        return np.clip(v, self.low, self.high)


def _number(name: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SearchSpaceError(f"parameter {name!r}: {key} must be a finite number, got {value!r}")
    return float(value)


def _parse_parameter(name: str, spec: Any) -> Parameter:
    if not isinstance(spec, Mapping):
        raise SearchSpaceError(f"parameter {name!r}: expected a table/dict, got {type(spec).__name__}")
    ptype = spec.get("type")
    if ptype not in _TYPES:
        raise SearchSpaceError(f"parameter {name!r}: field 'type' must be one of {list(_TYPES)}, got {ptype!r}")
    known = {"type", "bounds", "scale", "choices", "target", "kind"}
    extra = {k: v for k, v in spec.items() if k not in known}
    if ptype == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, Sequence) or isinstance(choices, str) or len(choices) < 1:
            raise SearchSpaceError(f"parameter {name!r}: field 'choices' must be a non-empty list")
        if len(set(map(repr, choices))) != len(choices):
            raise SearchSpaceError(f"parameter {name!r}: field 'choices' has duplicates: {list(choices)}")
        return Parameter(name=name, type="categorical", choices=tuple(choices), extra=extra)
    bounds = spec.get("bounds")
    if not isinstance(bounds, Sequence) or isinstance(bounds, str) or len(bounds) != 2:
        raise SearchSpaceError(f"parameter {name!r}: field 'bounds' must be [low, high]")
    low, high = (_number(name, "bounds", b) for b in bounds)
    if not low < high:
        raise SearchSpaceError(
            f"parameter {name!r}: bounds must satisfy low < high, got [{bounds[0]}, {bounds[1]}] "
            "(reversed or empty range)"
        )
    scale = spec.get("scale", "linear")
    if scale not in ("linear", "log"):
        raise SearchSpaceError(f"parameter {name!r}: field 'scale' must be 'linear' or 'log', got {scale!r}")
    log = scale == "log"
    if log and low <= 0:
        raise SearchSpaceError(f"parameter {name!r}: a log-scaled parameter needs low > 0, got {low}")
    if ptype == "int" and (low != int(low) or high != int(high)):
        raise SearchSpaceError(f"parameter {name!r}: int bounds must be integers, got {list(bounds)}")
    target = None
    kind = None
    if ptype == "fidelity":
        kind = spec.get("kind") or ("iteration" if name in ITERATION_NAMES else "data")
        if kind not in ("data", "iteration"):
            raise SearchSpaceError(f"parameter {name!r}: field 'kind' must be 'data' or 'iteration', got {kind!r}")
        target = _number(name, "target", spec.get("target", high))
        if not low <= target <= high:
            raise SearchSpaceError(f"parameter {name!r}: target {target} lies outside bounds [{low}, {high}]")
        if kind == "iteration" and (low != int(low) or high != int(high) or target != int(target)):
            raise SearchSpaceError(f"parameter {name!r}: an iteration fidelity needs integer bounds and target")
        if kind == "iteration" and low < 1:
            raise SearchSpaceError(f"parameter {name!r}: an iteration fidelity starts at 1 or more, got {low}")
    return Parameter(name=name, type=ptype, low=low, high=high, log=log, target=target,
                     fidelity_kind=kind, extra=extra)


class SearchSpace:
    """Design hyperparameters plus at most one data and one iteration fidelity.

    Args:
        parameters: the parameters, in order.
    """

    def __init__(self, parameters: Iterable[Parameter]):
        self.parameters: tuple[Parameter, ...] = tuple(parameters)
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise SearchSpaceError(f"duplicate parameter names in {names}")
        fids = [p for p in self.parameters if p.type == "fidelity"]
        kinds = [p.fidelity_kind for p in fids]
        if len(set(kinds)) != len(kinds):
            raise SearchSpaceError(f"at most one data and one iteration fidelity allowed, got {kinds}")
        if not self.design_parameters:
            raise SearchSpaceError("the search space has no design (non-fidelity) parameter")

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | SearchSpace) -> SearchSpace:
        """Build from the plain-dict form (see module docstring); a SearchSpace passes through."""
        if isinstance(spec, SearchSpace):
            return spec
        if not isinstance(spec, Mapping) or not spec:
            raise SearchSpaceError("a search space must be a non-empty mapping of parameter name -> spec")
        return cls(_parse_parameter(str(name), s) for name, s in spec.items())

    def to_dict(self) -> dict:
        return {p.name: p.to_dict() for p in self.parameters}

    def __getitem__(self, name: str) -> Parameter:
        for p in self.parameters:
            if p.name == name:
                return p
        raise KeyError(name)

    def __repr__(self) -> str:
        return f"SearchSpace({[p.name for p in self.parameters]})"

    # -- views -------------------------------------------------------------------
    @property
    def design_parameters(self) -> tuple[Parameter, ...]:
        return tuple(p for p in self.parameters if p.type != "fidelity")

    @property
    def fidelity_parameters(self) -> tuple[Parameter, ...]:
        return tuple(p for p in self.parameters if p.type == "fidelity")

    @property
    def data_fidelity(self) -> Parameter | None:
        return next((p for p in self.fidelity_parameters if p.fidelity_kind == "data"), None)

    @property
    def iteration_fidelity(self) -> Parameter | None:
        return next((p for p in self.fidelity_parameters if p.fidelity_kind == "iteration"), None)

    def target_fidelities(self) -> dict[str, float]:
        """``{"data_fraction": 1.0, "epochs": 100}``-style mapping (ints for the iteration fidelity)."""
        return {p.name: (int(p.target) if p.is_integer else float(p.target)) for p in self.fidelity_parameters}

    @property
    def encoded_dim(self) -> int:
        return sum(p.encoded_dim for p in self.design_parameters)

    # -- encoding ------------------------------------------------------------------
    def validate(self, params: Mapping[str, Any]) -> dict:
        """Check one design configuration; returns it with Python scalar types."""
        out = {}
        for p in self.design_parameters:
            if p.name not in params:
                raise SearchSpaceError(f"configuration lacks parameter {p.name!r}")
            v = params[p.name]
            if p.type == "categorical":
                if v not in p.choices:
                    raise SearchSpaceError(f"parameter {p.name!r}: {v!r} is not one of {list(p.choices)}")
                out[p.name] = v
            else:
                x = _number(p.name, "value", v)
                if not p.low - 1e-12 * abs(p.low) <= x <= p.high + 1e-12 * abs(p.high):
                    raise SearchSpaceError(f"parameter {p.name!r}: {v} outside bounds [{p.low}, {p.high}]")
                out[p.name] = int(round(x)) if p.is_integer else x
        return out

    def encode(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Design configurations -> unit-cube array of shape ``(n, encoded_dim)``."""
        X = np.zeros((len(configs), self.encoded_dim))
        if not len(configs):
            return X
        col = 0
        # column-wise (vectorised): the optimiser encodes thousands of candidates per round
        for p in self.design_parameters:
            if p.type == "categorical":
                index = {c: k for k, c in enumerate(p.choices)}
                try:
                    hot = [index[cfg[p.name]] for cfg in configs]
                except (KeyError, TypeError):  # unhashable or equal-but-different choice: slow path
                    hot = [p.choices.index(cfg[p.name]) for cfg in configs]
                X[np.arange(len(configs)), col + np.asarray(hot)] = 1.0
            else:
                X[:, col] = p.to_unit(np.array([cfg[p.name] for cfg in configs], dtype=float))
            col += p.encoded_dim
        return X

    def _columns_to_configs(self, columns: list[list]) -> list[dict]:
        names = [p.name for p in self.design_parameters]
        return [dict(zip(names, row)) for row in zip(*columns)]

    def decode(self, X: np.ndarray) -> list[dict]:
        """Unit-cube array ``(n, encoded_dim)`` -> design configurations (ints rounded, argmax one-hot)."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        columns: list[list] = []
        col = 0
        for p in self.design_parameters:
            if p.type == "categorical":
                idx = np.argmax(X[:, col: col + p.encoded_dim], axis=1)
                columns.append([p.choices[int(i)] for i in idx])
            else:
                v = p.from_unit(X[:, col])
                columns.append([int(x) for x in v] if p.is_integer else [float(x) for x in v])
            col += p.encoded_dim
        return self._columns_to_configs(columns)

    def round_encoded(self, X: np.ndarray) -> np.ndarray:
        """Project unit-cube points onto the feasible encodings (rounded ints, exact one-hot)."""
        return self.encode(self.decode(X))

    def sample(self, n: int, seed: int = 0) -> list[dict]:
        """``n`` quasi-random (scrambled Sobol) design configurations."""
        d = len(self.design_parameters)
        U = sobol(d, n, seed)
        if n <= 0:
            return []
        columns: list[list] = []
        for k, p in enumerate(self.design_parameters):
            u = U[:, k]
            if p.type == "categorical":
                idx = np.minimum((u * len(p.choices)).astype(int), len(p.choices) - 1)
                columns.append([p.choices[int(i)] for i in idx])
            else:
                v = p.from_unit(u)
                columns.append([int(x) for x in v] if p.is_integer else [float(x) for x in v])
        return self._columns_to_configs(columns)

def sobol(d: int, n: int, seed: int) -> np.ndarray:
    """``(n, d)`` scrambled Sobol points in ``[0, 1)^d`` (any ``n``; the first ``n`` of a seeded sequence)."""
    import warnings

    from scipy.stats import qmc

    if n <= 0:
        return np.zeros((0, d))
    with warnings.catch_warnings():
        # balance properties need n = 2^k; a prefix of the sequence is still low-discrepancy enough here
        warnings.simplefilter("ignore", UserWarning)
        return qmc.Sobol(d=d, scramble=True, seed=seed).random(n)
