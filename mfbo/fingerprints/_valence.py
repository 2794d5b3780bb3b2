"""Valence-density Gaussian files (``.g``): reading, validation, the bundled set.

A ``.g`` file describes an element's valence pseudo-density as a sum of
Gaussians, one per line ``B beta`` (whitespace separated; AMPTorch reads only the
first two columns):

    rho(r) = sum_g B_g * exp(-beta_g * r^2)     B in e/Å^3, beta in 1/Å^2.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from mfbo.errors import ValenceDensityError

__all__ = ["ValenceDensity", "read_valence_density", "bundled_valence_dir", "bundled_valence_files"]

_BUNDLED_DIR = Path(__file__).resolve().parent / "valence_gaussians"
_BUNDLED_NAME = re.compile(r"^([A-Z][a-z]?)_pseudodensity_(\d+)\.g$")


@dataclass(frozen=True)
class ValenceDensity:
    """One element's valence density as Gaussians.

    Attributes:
        element: chemical symbol.
        B: amplitudes (n_gaussians,), e/Å^3.
        beta: exponents (n_gaussians,), 1/Å^2, all > 0.
        source: the file it was read from.
        sha256: hash of the file's bytes (part of the parameter cache key).
    """

    element: str
    B: tuple[float, ...]
    beta: tuple[float, ...]
    source: str
    sha256: str

    @property
    def n_gaussians(self) -> int:
        return len(self.B)

    @property
    def electrons(self) -> float:
        """Integral of rho over space (number of valence electrons represented)."""
        return sum(b * (math.pi / be) ** 1.5 for b, be in zip(self.B, self.beta))


def read_valence_density(path: str | Path, element: str) -> ValenceDensity:
    """Read and validate a ``.g`` file.

    Args:
        path: file path.
        element: the element it describes (used in messages).

    Returns:
        The parsed :class:`ValenceDensity`.

    Raises:
        ValenceDensityError: the file is missing or unreadable, a line does not hold two numbers,
            a beta is not positive or a value is not finite, or the file holds no Gaussian.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValenceDensityError(
            f"cannot read the valence-density file for {element}: {path} ({exc.strerror or exc})"
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValenceDensityError(
            f"valence-density file {path} (element {element}) is not a text file"
        ) from None
    bs: list[float] = []
    betas: list[float] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue  # blank lines carry nothing
        if len(fields) < 2:
            raise ValenceDensityError(
                f"{path}:{lineno}: expected two numbers 'B beta' for {element}, got {line.strip()!r}"
            )
        try:
            b, beta = float(fields[0]), float(fields[1])
        except ValueError:
            raise ValenceDensityError(
                f"{path}:{lineno}: expected two numbers 'B beta' for {element}, got {line.strip()!r}"
            ) from None
        if not (math.isfinite(b) and math.isfinite(beta)):
            raise ValenceDensityError(f"{path}:{lineno}: non-finite value in {line.strip()!r} ({element})")
        if beta <= 0:
            raise ValenceDensityError(
                f"{path}:{lineno}: exponent beta must be > 0 (1/Å^2), got {beta} ({element})"
            )
        bs.append(b)
        betas.append(beta)
    if not bs:
        raise ValenceDensityError(f"valence-density file {path} for {element} holds no Gaussian lines")
    return ValenceDensity(element, tuple(bs), tuple(betas), str(path), hashlib.sha256(data).hexdigest())


def bundled_valence_dir() -> Path:
    """Directory of the bundled valence-density files (Medford group fits)."""
    return _BUNDLED_DIR


@lru_cache(maxsize=1)
def bundled_valence_files() -> dict[str, Path]:
    """Map element symbol -> bundled ``<El>_pseudodensity_<N>.g`` path."""
    out: dict[str, Path] = {}
    if _BUNDLED_DIR.is_dir():
        for p in sorted(_BUNDLED_DIR.iterdir()):
            m = _BUNDLED_NAME.match(p.name)
            if m:
                out[m.group(1)] = p
    return out


@lru_cache(maxsize=1)
def bundled_digest() -> str:
    """Hash of every bundled ``.g`` file's name and bytes (a cache-key ingredient)."""
    h = hashlib.sha256()
    for el, p in sorted(bundled_valence_files().items()):
        h.update(el.encode())
        h.update(p.read_bytes())
    return h.hexdigest()
