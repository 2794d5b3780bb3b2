"""Constraints between hyperparameters, parsed from strings such as ``"cutoff >= 3 * sigma_max"``.

A tiny recursive-descent parser (never ``eval``): names, numbers, quoted strings,
``+ - * /``, parentheses, unary minus, comparisons ``< <= > >= == !=`` (chains such as
``0.1 <= x <= 1`` allowed) and ``and`` / ``or`` / ``not``. Names are hyperparameters
of the search space or derived quantities (see :data:`DERIVED`), e.g. ``n_features``,
the fingerprint length implied by ``fp_scheme``, ``mcsh_order`` and ``n_sigmas``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from mfbo.errors import PriorError

__all__ = ["Constraint", "DERIVED", "ConstraintError", "parse_constraint"]


class ConstraintError(PriorError):
    """A constraint string is malformed or names an unknown hyperparameter."""


def _n_features(cfg: Mapping[str, Any]) -> float:
    from mfbo.priors._gmp_space import n_gmp_features

    missing = [k for k in ("mcsh_order", "n_sigmas") if k not in cfg]
    if missing:
        raise ConstraintError(f"'n_features' needs hyperparameter(s) {missing} in the configuration")
    return float(n_gmp_features(cfg.get("fp_scheme", "gmp"), int(cfg["mcsh_order"]), int(cfg["n_sigmas"])))


# Quantities computable from a configuration that constraints may name besides the hyperparameters.
# Each maps a config to a number and names the hyperparameters it reads.
DERIVED: dict[str, tuple[Callable[[Mapping[str, Any]], float], tuple[str, ...]]] = {
    "n_features": (_n_features, ("mcsh_order", "n_sigmas")),
}

_TOKEN = re.compile(
    r"\s*(?:(?P<num>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[A-Za-z_][A-Za-z_0-9]*)"
    r"|(?P<str>\"[^\"]*\"|'[^']*')"
    r"|(?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\)))"
)
_COMPARE = ("<", "<=", ">", ">=", "==", "!=")


def _tokenize(text: str) -> list[tuple[str, Any]]:
    tokens: list[tuple[str, Any]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise ConstraintError(f"constraint {text!r}: unexpected character {text[pos:].lstrip()[:1]!r} "
                                  f"at position {pos + 1}")
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "num":
            tokens.append(("num", float(value)))
        elif kind == "str":
            tokens.append(("str", value[1:-1]))
        elif kind == "name" and value in ("and", "or", "not", "true", "false"):
            tokens.append(("kw", value))
        else:
            tokens.append((kind, value))
        pos = m.end()
    return tokens


class _Parser:
    """Grammar: or := and ('or' and)*; and := not ('and' not)*; not := 'not' not | cmp;
    cmp := sum (CMP sum)*; sum := prod (('+'|'-') prod)*; prod := unary (('*'|'/') unary)*;
    unary := '-' unary | atom; atom := NUM | STR | NAME | 'true' | 'false' | '(' or ')'."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> tuple[str, Any]:
        tok = self.peek()
        if tok is None:
            raise ConstraintError(f"constraint {self.text!r}: unexpected end of expression")
        self.pos += 1
        return tok

    def parse(self) -> tuple:
        if not self.tokens:
            raise ConstraintError("constraint is empty")
        node = self.or_()
        if self.peek() is not None:
            raise ConstraintError(f"constraint {self.text!r}: unexpected {self.peek()[1]!r} after a complete "
                                  "expression")
        return node

    def or_(self) -> tuple:
        node = self.and_()
        while self.peek() == ("kw", "or"):
            self.take()
            node = ("or", node, self.and_())
        return node

    def and_(self) -> tuple:
        node = self.not_()
        while self.peek() == ("kw", "and"):
            self.take()
            node = ("and", node, self.not_())
        return node

    def not_(self) -> tuple:
        if self.peek() == ("kw", "not"):
            self.take()
            return ("not", self.not_())
        return self.cmp()

    def cmp(self) -> tuple:
        first = self.sum_()
        terms = [first]
        ops = []
        while self.peek() is not None and self.peek()[0] == "op" and self.peek()[1] in _COMPARE:
            ops.append(self.take()[1])
            terms.append(self.sum_())
        if not ops:
            return first
        return ("cmp", tuple(ops), tuple(terms))

    def sum_(self) -> tuple:
        node = self.prod()
        while self.peek() in (("op", "+"), ("op", "-")):
            op = self.take()[1]
            node = (op, node, self.prod())
        return node

    def prod(self) -> tuple:
        node = self.unary()
        while self.peek() in (("op", "*"), ("op", "/")):
            op = self.take()[1]
            node = (op, node, self.unary())
        return node

    def unary(self) -> tuple:
        if self.peek() == ("op", "-"):
            self.take()
            return ("neg", self.unary())
        if self.peek() == ("op", "+"):
            self.take()
            return self.unary()
        return self.atom()

    def atom(self) -> tuple:
        kind, value = self.take()
        if kind == "num":
            return ("num", value)
        if kind == "str":
            return ("str", value)
        if kind == "name":
            return ("name", value)
        if kind == "kw" and value in ("true", "false"):
            return ("num", 1.0 if value == "true" else 0.0)
        if (kind, value) == ("op", "("):
            node = self.or_()
            if self.take() != ("op", ")"):
                raise ConstraintError(f"constraint {self.text!r}: missing ')'")
            return node
        raise ConstraintError(f"constraint {self.text!r}: unexpected {value!r}")


def _names(node: tuple) -> set[str]:
    if node[0] == "name":
        return {node[1]}
    if node[0] in ("num", "str"):
        return set()
    if node[0] == "cmp":
        return set().union(*(_names(t) for t in node[2]))
    return set().union(*(_names(c) for c in node[1:]))


def _value(cfg: Mapping[str, Any], name: str, cache: dict) -> Any:
    if name in cfg:
        v = cfg[name]
        return float(v) if isinstance(v, (bool, int, float, np.number)) else v
    if name in DERIVED:
        if name not in cache:
            cache[name] = DERIVED[name][0](cfg)
        return cache[name]
    raise ConstraintError(f"configuration lacks hyperparameter {name!r} named in a constraint")


def _eval(node: tuple, cfg: Mapping[str, Any], cache: dict) -> Any:
    tag = node[0]
    if tag in ("num", "str"):
        return node[1]
    if tag == "name":
        return _value(cfg, node[1], cache)
    if tag == "neg":
        return -_arith(_eval(node[1], cfg, cache))
    if tag == "not":
        return not _eval(node[1], cfg, cache)
    if tag == "and":
        return bool(_eval(node[1], cfg, cache)) and bool(_eval(node[2], cfg, cache))
    if tag == "or":
        return bool(_eval(node[1], cfg, cache)) or bool(_eval(node[2], cfg, cache))
    if tag == "cmp":
        ops, terms = node[1], node[2]
        vals = [_eval(t, cfg, cache) for t in terms]
        for op, a, b in zip(ops, vals[:-1], vals[1:]):
            if not _compare(op, a, b):
                return False
        return True
    a, b = _arith(_eval(node[1], cfg, cache)), _arith(_eval(node[2], cfg, cache))
    if tag == "+":
        return a + b
    if tag == "-":
        return a - b
    if tag == "*":
        return a * b
    if tag == "/":
        return a / b if b != 0 else math.copysign(math.inf, a) if a != 0 else math.nan
    raise ConstraintError(f"internal: unknown node {tag!r}")  # pragma: no cover


def _arith(v: Any) -> float:
    if isinstance(v, str):
        raise ConstraintError(f"cannot do arithmetic on the string {v!r} in a constraint")
    return float(v)


def _compare(op: str, a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        if op not in ("==", "!="):
            raise ConstraintError(f"strings can only be compared with == or !=, got {a!r} {op} {b!r}")
        return (a == b) == (op == "==")
    return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b, "==": a == b, "!=": a != b}[op]


class Constraint:
    """A constraint between hyperparameters, e.g. ``Constraint("cutoff >= 3 * sigma_max")``.

    Args:
        expression: the constraint text (see the module docstring for the grammar).

    Raises:
        ConstraintError: the text does not parse.
    """

    def __init__(self, expression: str):
        if not isinstance(expression, str):
            raise ConstraintError(f"a constraint must be a string, got {type(expression).__name__}")
        self.expression = expression.strip()
        self._tree = _Parser(self.expression).parse()
        if self._tree[0] not in ("cmp", "and", "or", "not"):
            raise ConstraintError(f"constraint {self.expression!r} is not a comparison "
                                  "(write e.g. 'cutoff >= 3 * sigma_max')")

    @property
    def names(self) -> frozenset[str]:
        """Hyperparameter and derived names the constraint reads."""
        return frozenset(_names(self._tree))

    def required_hyperparameters(self) -> frozenset[str]:
        """Hyperparameters needed to evaluate it (derived names expanded)."""
        out: set[str] = set()
        for n in self.names:
            out.update(DERIVED[n][1] if n in DERIVED else (n,))
        return frozenset(out)

    def check_names(self, available: Sequence[str]) -> None:
        """Raise ConstraintError if the constraint reads a name not in ``available`` (nor derivable)."""
        avail = set(available)
        unknown = sorted(n for n in self.names if n not in avail and n not in DERIVED)
        if unknown:
            raise ConstraintError(f"constraint {self.expression!r} names unknown hyperparameter(s) {unknown}; "
                                  f"known: {sorted(avail)} and derived {sorted(DERIVED)}")
        missing = sorted(n for n in self.required_hyperparameters() if n not in avail)
        if missing:
            raise ConstraintError(f"constraint {self.expression!r} needs hyperparameter(s) {missing} "
                                  "in the search space")

    def is_satisfied(self, configs: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Evaluate on configurations (natural units).

        Args:
            configs: n configurations (dicts of hyperparameter values).

        Returns:
            bool ndarray of shape ``(n,)``; NaN arithmetic counts as violated.
        """
        return np.array([bool(_eval(self._tree, cfg, {})) for cfg in configs], dtype=bool).reshape(-1)

    def __call__(self, config: Mapping[str, Any]) -> bool:
        return bool(self.is_satisfied([config])[0])

    def __repr__(self) -> str:
        return f"Constraint({self.expression!r})"

    def __str__(self) -> str:
        return self.expression

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Constraint) and other._tree == self._tree

    def __hash__(self) -> int:
        return hash(self._tree)

    def __reduce__(self):
        return (Constraint, (self.expression,))


def parse_constraint(c: str | Constraint) -> Constraint:
    """A Constraint from a string (a Constraint passes through)."""
    return c if isinstance(c, Constraint) else Constraint(c)
