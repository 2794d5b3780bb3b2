"""Maxwell-Cartesian spherical harmonics (MCSH) and their Gaussian moments.

A component with Cartesian index pattern (a, b, c), n = a + b + c, is

    T_abc(x, y, z) = (-1)^n r^(2n+1) d^a/dx^a d^b/dy^b d^c/dz^c (1/r),

a polynomial written in x, y, z and R = r^2. The *solid* form keeps R = x^2+y^2+z^2
(homogeneous, harmonic); the *surface* form (AMPTorch's GMP class always, GMPOrderNorm
with ``solid_harmonics=False``) replaces R by r_s^2 = 1 Å^2, which mixes in lower-degree
terms. Groups are permutation classes of the pattern; members are its distinct
permutations. Everything here is exact integer/rational arithmetic done once per
parameter set; the heavy lifting is in :mod:`mfbo.fingerprints._engine`.

The integral of a monomial x^a y^b z^c against the probe Gaussian times one neighbour
Gaussian is a product of raw moments of independent normals with mean l = lambda*d
and variance v = 1/(2 gamma):

    E[x^a] = sum_m a! / ((a-2m)! m! 2^m) * l^(a-2m) * v^m,

so every component is a sum of terms coef * lambda^k * v^M * (d-monomial of degree k).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import cache, lru_cache
from itertools import permutations
from math import factorial

__all__ = ["GROUP_PATTERNS", "MAX_ORDER", "n_groups", "group_members", "group_coefficient", "MomentTables"]

# AMPTorch's group numbering: group g of order n is the g-th pattern below.
GROUP_PATTERNS: dict[int, tuple[tuple[int, int, int], ...]] = {
    0: ((0, 0, 0),),
    1: ((1, 0, 0),),
    2: ((2, 0, 0), (1, 1, 0)),
    3: ((3, 0, 0), (2, 1, 0), (1, 1, 1)),
    4: ((4, 0, 0), (3, 1, 0), (2, 2, 0), (2, 1, 1)),
}
MAX_ORDER = max(GROUP_PATTERNS)


def n_groups(order: int) -> int:
    return len(GROUP_PATTERNS[order])


def group_members(order: int, group: int) -> list[tuple[int, int, int]]:
    """Distinct permutations of the group's exponent pattern (sorted, deterministic)."""
    pattern = GROUP_PATTERNS[order][group - 1]
    return sorted(set(permutations(pattern)), reverse=True)


def group_coefficient(order: int, group: int) -> int:
    """GMPOrderNorm weight n!/(a!b!c!): the number of index permutations of the pattern."""
    a, b, c = GROUP_PATTERNS[order][group - 1]
    return factorial(order) // (factorial(a) * factorial(b) * factorial(c))


# Polynomials are dicts {(a, b, c, r): coefficient} meaning x^a y^b z^c R^r.
Poly = dict


def _d(poly: Poly, axis: int) -> Poly:
    """Partial derivative along an axis, with dR/dx_axis = 2 x_axis."""
    out: dict = {}
    for (a, b, c, r), coef in poly.items():
        e = [a, b, c]
        if e[axis]:
            k = list(e)
            k[axis] -= 1
            key = (*k, r)
            out[key] = out.get(key, 0) + coef * e[axis]
        if r:
            k = list(e)
            k[axis] += 1
            key = (*k, r - 1)
            out[key] = out.get(key, 0) + coef * 2 * r
    return {k: v for k, v in out.items() if v}


def _mul(p: Poly, q: Poly) -> Poly:
    out: dict = {}
    for (a1, b1, c1, r1), x in p.items():
        for (a2, b2, c2, r2), y in q.items():
            key = (a1 + a2, b1 + b2, c1 + c2, r1 + r2)
            out[key] = out.get(key, 0) + x * y
    return {k: v for k, v in out.items() if v}


def _add(p: Poly, q: Poly, scale: int = 1) -> Poly:
    out = dict(p)
    for k, v in q.items():
        out[k] = out.get(k, 0) + scale * v
    return {k: v for k, v in out.items() if v}


@cache
def mcsh_polynomial(pattern: tuple[int, int, int]) -> tuple[tuple[tuple[int, int, int, int], int], ...]:
    """T_abc as a polynomial in x, y, z, R (differentiating x first, then y, then z).

    P r^-m -> d/dx: (dP/dx * R - m x P) r^-(m+2), starting from P = 1, m = 1.
    """
    poly: Poly = {(0, 0, 0, 0): 1}
    m = 1
    R: Poly = {(0, 0, 0, 1): 1}
    for axis, count in enumerate(pattern):
        for _ in range(count):
            unit = [0, 0, 0]
            unit[axis] = 1
            xk: Poly = {(*unit, 0): 1}
            poly = _add(_mul(_d(poly, axis), R), _mul(xk, poly), scale=-m)
            m += 2
    n = sum(pattern)
    sign = -1 if n % 2 else 1
    return tuple(sorted((k, sign * v) for k, v in poly.items()))


def cartesian_polynomial(pattern: tuple[int, int, int], solid: bool) -> dict[tuple[int, int, int], int]:
    """T_abc as {(a, b, c): coefficient} in x, y, z: R expanded (solid) or set to 1 (surface)."""
    out: dict[tuple[int, int, int], int] = {}
    for (a, b, c, r), coef in mcsh_polynomial(pattern):
        if not solid:
            key = (a, b, c)
            out[key] = out.get(key, 0) + coef
            continue
        # (x^2+y^2+z^2)^r by the multinomial theorem
        for i in range(r + 1):
            for j in range(r - i + 1):
                k = r - i - j
                mult = factorial(r) // (factorial(i) * factorial(j) * factorial(k))
                key = (a + 2 * i, b + 2 * j, c + 2 * k)
                out[key] = out.get(key, 0) + coef * mult
    return {k: v for k, v in out.items() if v}


def _moment_coef(a: int, m: int) -> Fraction:
    return Fraction(factorial(a), factorial(a - 2 * m) * factorial(m) * 2**m)


def monomials_up_to(degree: int) -> list[tuple[int, int, int]]:
    """All (a, b, c) with a+b+c <= degree, ordered by degree then lexicographically descending."""
    out = []
    for n in range(degree + 1):
        for a in range(n, -1, -1):
            for b in range(n - a, -1, -1):
                out.append((a, b, n - a - b))
    return out


@dataclass(frozen=True)
class MomentTables:
    """Constant tables turning Gaussian moments into MCSH components.

    Attributes:
        components: (order, group, member pattern) per component column, grouped by (order, group).
        dmonos: d-monomial exponents (D, 3) with degree <= max order.
        km: (k, M) pairs: lambda power k, variance power M (K entries).
        W: nested list (D, K, NC): component c = sum_{d, km} W[d][km][c] * S_km * dmono_d.
    """

    components: tuple[tuple[int, int, tuple[int, int, int]], ...]
    dmonos: tuple[tuple[int, int, int], ...]
    km: tuple[tuple[int, int], ...]
    W: tuple


@lru_cache(maxsize=64)
def moment_tables(groups: tuple[tuple[int, int], ...], solid: bool) -> MomentTables:
    """Build the tables for a set of (order, group) pairs.

    Args:
        groups: the (order, group) pairs needed, in column order.
        solid: solid (True) or surface (False) form.
    """
    components = []
    for order, group in groups:
        for member in group_members(order, group):
            components.append((order, group, member))
    max_order = max(o for o, _ in groups)
    dmonos = monomials_up_to(max_order)
    dindex = {m: i for i, m in enumerate(dmonos)}
    entries: dict[tuple[int, int, int], Fraction] = {}  # (d index, (k, M), component) -> coef
    kms: set[tuple[int, int]] = set()
    for ci, (_, _, member) in enumerate(components):
        for (a, b, c), coef in cartesian_polynomial(member, solid).items():
            n = a + b + c
            for m1 in range(a // 2 + 1):
                for m2 in range(b // 2 + 1):
                    for m3 in range(c // 2 + 1):
                        M = m1 + m2 + m3
                        k = n - 2 * M
                        w = coef * _moment_coef(a, m1) * _moment_coef(b, m2) * _moment_coef(c, m3)
                        dm = (a - 2 * m1, b - 2 * m2, c - 2 * m3)
                        key = (dindex[dm], (k, M), ci)
                        entries[key] = entries.get(key, Fraction(0)) + w
                        kms.add((k, M))
    km = sorted(kms)
    kmi = {x: i for i, x in enumerate(km)}
    W = [[[0.0] * len(components) for _ in km] for _ in dmonos]
    for (di, kmv, ci), v in entries.items():
        W[di][kmi[kmv]][ci] = float(v)
    return MomentTables(
        tuple(components), tuple(dmonos), tuple(km), tuple(tuple(tuple(r) for r in row) for row in W)
    )
