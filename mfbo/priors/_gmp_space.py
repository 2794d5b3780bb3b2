"""GMP search-space parameterisation -> the fingerprint engine's (AMPTorch-layout) parameters.

The optimiser searches a few physically meaningful numbers instead of raw sigma lists:
``sigma_min``, ``sigma_max`` (Å), ``n_sigmas``, ``sigma_spacing`` ("log" or "linear"),
``mcsh_order`` (maximum MCSH order; ``gmp`` takes every group of orders 0..max),
``fp_scheme`` ("gmp" or "gmpordernorm"), ``cutoff`` (Å) and ``solid_harmonics``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mfbo.errors import FingerprintError

__all__ = ["gmp_fp_params", "gmp_sigmas", "n_gmp_features", "GMP_GROUPS_PER_ORDER", "GMP_HYPERPARAMETERS"]

# Number of MCSH groups (permutation classes of the Cartesian exponent pattern) per order in AMPTorch's GMP.
GMP_GROUPS_PER_ORDER = {0: 1, 1: 1, 2: 2, 3: 3, 4: 4}
_MAX_ORDER = {"gmp": 4, "gmpordernorm": 9}
GMP_HYPERPARAMETERS = ("fp_scheme", "sigma_min", "sigma_max", "n_sigmas", "sigma_spacing", "mcsh_order",
                       "cutoff", "solid_harmonics")


def _scheme(fp_scheme: Any) -> str:
    if fp_scheme not in _MAX_ORDER:
        raise FingerprintError(f"fp_scheme must be 'gmp' or 'gmpordernorm', got {fp_scheme!r}")
    return str(fp_scheme)


def _order(fp_scheme: str, mcsh_order: Any) -> int:
    if isinstance(mcsh_order, bool) or not float(mcsh_order).is_integer():
        raise FingerprintError(f"mcsh_order must be an integer, got {mcsh_order!r}")
    order = int(mcsh_order)
    if not 0 <= order <= _MAX_ORDER[fp_scheme]:
        raise FingerprintError(f"mcsh_order must be in 0..{_MAX_ORDER[fp_scheme]} for {fp_scheme!r}, got {order}")
    return order


def n_gmp_features(fp_scheme: str, mcsh_order: int, n_sigmas: int) -> int:
    """Fingerprint length per atom.

    Args:
        fp_scheme: "gmp" (one column per order, group and sigma) or "gmpordernorm" (per order and sigma).
        mcsh_order: maximum MCSH order (all orders 0..max are used).
        n_sigmas: number of probe widths.

    Returns:
        the number of feature columns.
    """
    scheme = _scheme(fp_scheme)
    order = _order(scheme, mcsh_order)
    if scheme == "gmp":
        return sum(GMP_GROUPS_PER_ORDER[o] for o in range(order + 1)) * int(n_sigmas)
    return (order + 1) * int(n_sigmas)


def gmp_sigmas(sigma_min: float, sigma_max: float, n_sigmas: int, spacing: str = "log") -> list[float]:
    """Probe widths from ``sigma_min`` to ``sigma_max`` (Å), ``n_sigmas`` of them.

    Args:
        sigma_min, sigma_max: smallest and largest width, Å (``0 < sigma_min < sigma_max``; equal allowed
            only when ``n_sigmas == 1``).
        n_sigmas: how many (>= 1; 1 gives ``[sigma_min]``).
        spacing: "log" (geometric, finer at small widths where short bonds are resolved) or "linear".

    Returns:
        list of ``n_sigmas`` floats, ascending, rounded to 10 decimals (as the trainer does) so cache keys are stable.
    """
    if isinstance(n_sigmas, bool) or not float(n_sigmas).is_integer() or int(n_sigmas) < 1:
        raise FingerprintError(f"n_sigmas must be an integer >= 1, got {n_sigmas!r}")
    n = int(n_sigmas)
    lo, hi = float(sigma_min), float(sigma_max)
    if not (math.isfinite(lo) and lo > 0):
        raise FingerprintError(f"sigma_min must be a positive number of Å, got {sigma_min!r}")
    if n == 1:
        return [round(lo, 10)]
    if not (math.isfinite(hi) and hi > lo):
        raise FingerprintError(f"sigma_max must exceed sigma_min when n_sigmas > 1, got sigma_min={lo}, "
                               f"sigma_max={sigma_max!r}")
    if spacing not in ("log", "linear"):
        raise FingerprintError(f"sigma_spacing must be 'log' or 'linear', got {spacing!r}")
    # The trainer's grid, so priors, export and training agree on sigmas and cache keys.
    from mfbo.training._config import make_sigmas

    return make_sigmas(lo, hi, n, spacing)


def gmp_fp_params(params: Mapping[str, Any], base: Mapping[str, Any] | None = None) -> tuple[str, dict]:
    """Map GMP hyperparameters to the engine's AMPTorch-layout ``fp_params``.

    Args:
        params: hyperparameters ``sigma_min``, ``sigma_max`` (Å), ``n_sigmas``, ``mcsh_order``, ``cutoff`` (Å);
            optional ``fp_scheme`` (default "gmp"), ``sigma_spacing`` (default "log"), ``solid_harmonics``
            (gmpordernorm only, default True). Other keys are ignored.
        base: optional existing fp_params whose other keys (e.g. ``atom_gaussians``) are kept.

    Returns:
        ``(fp_scheme, fp_params)``; for gmp ``{"MCSHs": {"0": {"groups": [1], "sigmas": [...]}, "1": ...,
        "2": {"groups": [1, 2], ...}}, "cutoff": c}``, for gmpordernorm ``{"MCSHs": {"orders": [0..max],
        "sigmas": [...]}, "cutoff": c, "solid_harmonics": b}``.

    Raises:
        FingerprintError: a value is missing or out of range (the message names it).
    """
    missing = [k for k in ("sigma_min", "sigma_max", "n_sigmas", "mcsh_order", "cutoff") if k not in params]
    if missing:
        raise FingerprintError(f"GMP hyperparameters lack {missing}; need sigma_min, sigma_max, n_sigmas, "
                               "mcsh_order and cutoff")
    scheme = _scheme(params.get("fp_scheme", "gmp"))
    order = _order(scheme, params["mcsh_order"])
    sigmas = gmp_sigmas(params["sigma_min"], params["sigma_max"], params["n_sigmas"],
                        params.get("sigma_spacing", "log"))
    cutoff = float(params["cutoff"])
    if not (math.isfinite(cutoff) and cutoff > 0):
        raise FingerprintError(f"cutoff must be a positive number of Å, got {params['cutoff']!r}")
    out: dict[str, Any] = {k: v for k, v in (base or {}).items()
                           if k not in ("MCSHs", "cutoff", "solid_harmonics", "fp_scheme")}
    if scheme == "gmp":
        out["MCSHs"] = {str(o): {"groups": list(range(1, GMP_GROUPS_PER_ORDER[o] + 1)), "sigmas": list(sigmas)}
                        for o in range(order + 1)}
    else:
        out["MCSHs"] = {"orders": list(range(order + 1)), "sigmas": list(sigmas)}
        out["solid_harmonics"] = bool(params.get("solid_harmonics", True))
    out["cutoff"] = cutoff
    return scheme, out
