"""GMP parameters in AMPTorch's ``fp_params`` layout, as a typed, hashable object."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mfbo.errors import FingerprintError, ValenceDensityError
from mfbo.fingerprints._mcsh import GROUP_PATTERNS, MAX_ORDER, group_coefficient, n_groups
from mfbo.fingerprints._valence import (
    ValenceDensity,
    bundled_digest,
    bundled_valence_dir,
    bundled_valence_files,
    read_valence_density,
)

__all__ = ["GMPParams", "SCHEMES"]

SCHEMES = ("gmp", "gmpordernorm")
_KNOWN_KEYS = {"MCSHs", "cutoff", "atom_gaussians", "solid_harmonics", "square", "fp_scheme"}


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FingerprintError(f"{where} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise FingerprintError(f"{where} must be finite, got {value!r}")
    return value


def _sigmas(value, where: str) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise FingerprintError(f"{where} must be a list of sigmas in Å, got {value!r}")
    out = tuple(_number(s, where) for s in value)
    if not out:
        raise FingerprintError(f"{where} is empty: give at least one sigma (Å)")
    for s in out:
        if s <= 0:
            raise FingerprintError(f"{where}: sigma must be > 0 Å, got {s}")
    return out


def _order(value, where: str) -> int:
    try:
        order = int(value)
    except (TypeError, ValueError):
        raise FingerprintError(f"{where}: MCSH order must be an integer, got {value!r}") from None
    if isinstance(value, float) and value != order:
        raise FingerprintError(f"{where}: MCSH order must be an integer, got {value!r}")
    if order not in GROUP_PATTERNS:
        raise FingerprintError(
            f"{where}: unsupported MCSH order {value!r}; supported orders are 0..{MAX_ORDER}"
        )
    return order


@dataclass(frozen=True)
class GMPParams:
    """GMP fingerprint parameters (AMPTorch ``fp_params`` semantics).

    Build with :meth:`from_fp_params`. Columns follow AMPTorch's order: orders ascending, then
    (``gmp``) groups as listed, then sigmas as listed.

    Attributes:
        fp_scheme: ``"gmp"`` (one column per order, group, sigma; value = signed component for
            single-member groups, else the root of the group's sum of squares) or ``"gmpordernorm"``
            (one column per order, sigma; value = sum over groups of n!/(a!b!c!) * sum of squares).
        mcsh: per order ``(order, groups, sigmas)``; sigmas in Å.
        cutoff: hard cutoff on neighbour distance, Å (neighbours with r < cutoff count).
        atom_gaussians: ``(element, path)`` pairs, or None for the bundled valence densities.
        solid_harmonics: as given (only ``gmpordernorm`` uses it; AMPTorch's GMP class always uses
            the surface form). None = not given (gmpordernorm default: True).
        square: as given (None = not given; gmpordernorm supports only True, gmp only False).
    """

    fp_scheme: str
    mcsh: tuple[tuple[int, tuple[int, ...], tuple[float, ...]], ...]
    cutoff: float
    atom_gaussians: tuple[tuple[str, str], ...] | None = None
    solid_harmonics: bool | None = None
    square: bool | None = None
    _densities: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_fp_params(cls, fp_params: Mapping, fp_scheme: str | None = "gmp") -> GMPParams:
        """Parse AMPTorch's ``fp_params`` layout.

        Args:
            fp_params: ``{"MCSHs": {"0": {"groups": [1], "sigmas": [...]}, ...}, "cutoff": 8,
                "atom_gaussians": {"H": "H.g", ...}, "solid_harmonics": True}`` for ``gmp``, or
                ``{"MCSHs": {"orders": [0, 1, 2], "sigmas": [...]}, ...}`` for ``gmpordernorm``.
                A ``"fp_scheme"`` key, if present, selects the scheme.
            fp_scheme: ``"gmp"`` or ``"gmpordernorm"``.

        Raises:
            FingerprintError: a field is missing or invalid (the message names it).
            ValenceDensityError: an ``atom_gaussians`` file is missing or malformed.
        """
        if not isinstance(fp_params, Mapping):
            raise FingerprintError(f"fp_params must be a mapping, got {type(fp_params).__name__}")
        if "fp_scheme" in fp_params:
            fp_scheme = fp_params["fp_scheme"]
        fp_scheme = "gmp" if fp_scheme is None else fp_scheme
        if fp_scheme not in SCHEMES:
            raise FingerprintError(f"fp_scheme must be one of {SCHEMES}, got {fp_scheme!r}")
        unknown = sorted(set(fp_params) - _KNOWN_KEYS)
        if unknown:
            raise FingerprintError(
                f"fp_params: unknown key(s) {unknown}; known keys are {sorted(_KNOWN_KEYS - {'fp_scheme'})}"
            )
        if "MCSHs" not in fp_params:
            raise FingerprintError("fp_params: missing 'MCSHs'")
        if "cutoff" not in fp_params:
            raise FingerprintError("fp_params: missing 'cutoff' (Å); mfbo has no default cutoff")
        cutoff = _number(fp_params["cutoff"], "fp_params.cutoff")
        if cutoff <= 0:
            raise FingerprintError(f"fp_params.cutoff must be > 0 Å, got {cutoff}")
        mcshs = fp_params["MCSHs"]
        if not isinstance(mcshs, Mapping):
            raise FingerprintError("fp_params.MCSHs must be a mapping")
        if fp_scheme == "gmp":
            mcsh = cls._parse_gmp(mcshs)
        else:
            mcsh = cls._parse_ordernorm(mcshs)

        solid = fp_params.get("solid_harmonics")
        if solid is not None and not isinstance(solid, bool):
            raise FingerprintError(f"fp_params.solid_harmonics must be true or false, got {solid!r}")
        square = fp_params.get("square")
        if square is not None and not isinstance(square, bool):
            raise FingerprintError(f"fp_params.square must be true or false, got {square!r}")
        if fp_scheme == "gmp" and square:
            raise FingerprintError("fp_params.square=True is not supported for fp_scheme 'gmp'")
        if fp_scheme == "gmpordernorm" and square is False:
            raise FingerprintError(
                "fp_params.square=False is not supported for fp_scheme 'gmpordernorm' (AMPTorch default True)"
            )

        atom_gaussians = None
        densities: dict[str, ValenceDensity] = {}
        ag = fp_params.get("atom_gaussians")
        if ag is not None:
            if not isinstance(ag, Mapping):
                raise FingerprintError("fp_params.atom_gaussians must map element -> .g file path")
            pairs = []
            for el, path in sorted(ag.items()):
                if not isinstance(el, str) or not isinstance(path, (str, Path)):
                    raise FingerprintError(
                        f"fp_params.atom_gaussians: expected element -> path, got {el!r}: {path!r}"
                    )
                densities[el] = read_valence_density(path, el)
                pairs.append((el, str(Path(path))))
            atom_gaussians = tuple(pairs)
        return cls(fp_scheme, mcsh, cutoff, atom_gaussians, solid, square, densities)

    @staticmethod
    def _parse_gmp(mcshs: Mapping):
        if "orders" in mcshs:
            raise FingerprintError(
                "fp_params.MCSHs has 'orders' (the gmpordernorm layout) but fp_scheme is 'gmp'; "
                "set fp_scheme to 'gmpordernorm' or give per-order {'groups', 'sigmas'}"
            )
        entries = {}
        for key, spec in mcshs.items():
            where = f"fp_params.MCSHs[{key!r}]"
            order = _order(key, where)
            if order in entries:
                raise FingerprintError(f"{where}: order {order} given twice")
            if not isinstance(spec, Mapping) or "groups" not in spec or "sigmas" not in spec:
                raise FingerprintError(f"{where} must be {{'groups': [...], 'sigmas': [...]}}")
            groups = spec["groups"]
            if isinstance(groups, (str, bytes)) or not hasattr(groups, "__iter__") or not list(groups):
                raise FingerprintError(f"{where}.groups must be a non-empty list of group numbers")
            gs = []
            for g in groups:
                if isinstance(g, bool) or not isinstance(g, int) or not 1 <= g <= n_groups(order):
                    raise FingerprintError(
                        f"{where}.groups: unsupported group {g!r} for order {order}; "
                        f"order {order} has groups 1..{n_groups(order)}"
                    )
                gs.append(g)
            entries[order] = (order, tuple(gs), _sigmas(spec["sigmas"], f"{where}.sigmas"))
        if not entries:
            raise FingerprintError("fp_params.MCSHs holds no order")
        return tuple(entries[o] for o in sorted(entries))

    @staticmethod
    def _parse_ordernorm(mcshs: Mapping):
        if "orders" not in mcshs or "sigmas" not in mcshs:
            raise FingerprintError(
                "fp_params.MCSHs for 'gmpordernorm' must be {'orders': [...], 'sigmas': [...]}"
            )
        orders = mcshs["orders"]
        if isinstance(orders, (str, bytes)) or not hasattr(orders, "__iter__") or not list(orders):
            raise FingerprintError("fp_params.MCSHs.orders must be a non-empty list of orders")
        sig = _sigmas(mcshs["sigmas"], "fp_params.MCSHs.sigmas")
        seen = []
        for o in orders:
            order = _order(o, "fp_params.MCSHs.orders")
            if order in seen:
                raise FingerprintError(f"fp_params.MCSHs.orders: order {order} given twice")
            seen.append(order)
        extra = sorted(set(mcshs) - {"orders", "sigmas"})
        if extra:
            raise FingerprintError(f"fp_params.MCSHs: unknown key(s) {extra} for 'gmpordernorm'")
        return tuple((o, tuple(range(1, n_groups(o) + 1)), sig) for o in sorted(seen))

    # ------------------------------------------------------------------ views
    @property
    def solid(self) -> bool:
        """Whether the solid form is used (gmpordernorm with solid_harmonics, default True)."""
        return self.fp_scheme == "gmpordernorm" and self.solid_harmonics is not False

    @property
    def columns(self) -> list[dict]:
        """One dict per feature column: ``order``, ``group`` (None for gmpordernorm: all groups
        combined), ``sigma`` (Å), and ``groups`` with their coefficients for gmpordernorm."""
        cols = []
        for order, groups, sigmas in self.mcsh:
            if self.fp_scheme == "gmp":
                for g in groups:
                    for s in sigmas:
                        cols.append({"order": order, "group": g, "sigma": s})
            else:
                coefs = {g: group_coefficient(order, g) for g in groups}
                for s in sigmas:
                    cols.append({"order": order, "group": None, "sigma": s, "group_coefficients": coefs})
        return cols

    @property
    def n_features(self) -> int:
        return sum(len(g if self.fp_scheme == "gmp" else (0,)) * len(s) for _, g, s in self.mcsh)

    @property
    def max_order(self) -> int:
        return max(o for o, _, _ in self.mcsh)

    def to_fp_params(self) -> dict:
        """AMPTorch ``fp_params`` dict (JSON-able) that :meth:`from_fp_params` reads back."""
        if self.fp_scheme == "gmp":
            mcshs = {str(o): {"groups": list(g), "sigmas": list(s)} for o, g, s in self.mcsh}
        else:
            mcshs = {"orders": [o for o, _, _ in self.mcsh], "sigmas": list(self.mcsh[0][2])}
        out: dict = {"MCSHs": mcshs, "cutoff": self.cutoff}
        if self.atom_gaussians is not None:
            out["atom_gaussians"] = dict(self.atom_gaussians)
        if self.solid_harmonics is not None:
            out["solid_harmonics"] = self.solid_harmonics
        if self.square is not None:
            out["square"] = self.square
        return out

    def cache_key(self) -> str:
        """SHA-256 of everything that changes the numbers: scheme, orders/groups/sigmas, cutoff,
        form, and the bytes of the valence-density files (bundled set or the given files)."""
        spec = {
            "v": 2,
            "scheme": self.fp_scheme,
            "mcsh": [[o, list(g), list(s)] for o, g, s in self.mcsh],
            "cutoff": self.cutoff,
            "solid": self.solid,
        }
        if self.atom_gaussians is None:
            spec["densities"] = "bundled:" + bundled_digest()
        else:
            spec["densities"] = {el: self._densities[el].sha256 for el, _ in self.atom_gaussians}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    def density(self, element: str) -> ValenceDensity:
        """The valence density used for ``element``.

        Raises:
            ValenceDensityError: no file for the element (the message says where mfbo looked).
        """
        dens = self._densities.get(element)
        if dens is not None:
            return dens
        if self.atom_gaussians is not None:
            given = ", ".join(el for el, _ in self.atom_gaussians)
            raise ValenceDensityError(
                f"no valence-density file for element {element}: fp_params.atom_gaussians lists only "
                f"[{given}]; add '{element}': 'path/to/{element}.g'"
            )
        path = bundled_valence_files().get(element)
        if path is None:
            raise ValenceDensityError(
                f"no valence-density file for element {element}: looked for "
                f"{element}_pseudodensity_<N>.g in {bundled_valence_dir()}; pass "
                f"fp_params.atom_gaussians with a file for {element}"
            )
        dens = read_valence_density(path, element)
        self._densities[element] = dens
        return dens
