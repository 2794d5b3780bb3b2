"""Physics-derived GMP priors: from the structures' bond lengths and radial-distribution shells.

The GMP probe around each atom is a Gaussian ``exp(-r^2 / (2 sigma^2))`` (r in Å). Its reach sets
what a feature sees, which ties the fingerprint hyperparameters to distances in the data:

- ``sigma_min``: the narrowest probe should resolve the shortest bonds, i.e. be a fraction of them
  (at ``sigma = d_short / 4`` a neighbour at ``d_short`` carries weight ``exp(-8)``).
- ``sigma_max``: the widest probe should reach the 2nd-3rd coordination shell (weight ``exp(-2)`` at
  ``r2`` when ``sigma = r2 / 2``; ``exp(-1.1)`` at ``r3`` when ``sigma = r3 / 1.5``).
- ``cutoff``: at least through the 2nd shell and at least ``3 sigma_max`` (the probe is below 1.1 % at
  the cutoff), and not beyond where the widest allowed probe has fallen below 1e-3 (``3.72 sigma``):
  atoms there change nothing but the cost.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mfbo.errors import DataError, PriorError
from mfbo.priors._file import PriorSpec, dump_prior_spec, parse_prior_dict, write_prior_file

__all__ = ["StructureStats", "DerivedPrior", "structure_stats", "derive_gmp_prior"]

# exp(-r^2 / (2 sigma^2)) = 1e-3  <=>  r = sigma * sqrt(2 ln 1000)
_NEGLIGIBLE_RATIO = math.sqrt(2 * math.log(1000.0))


@dataclass
class StructureStats:
    """Distance statistics of a dataset.

    Attributes:
        r: bin centres, Å, shape ``(n_bins,)``.
        rdf: radial number density around an atom, atoms/Å^3, ``(n_bins,)`` (no bulk-density normalisation:
            slabs with vacuum have none).
        rdf_smooth: the same smoothed with a 0.06 Å Gaussian (what peaks are found on).
        pair_nn: ``{"O-H": distances}``: for each atom of the first element, the distance to the nearest atom
            of the second, Å.
        nn: every atom's nearest-neighbour distance, Å.
        shells: RDF shell positions ``[r1, r2, r3]``, Å.
        shell_source: "rdf peaks" or a note on the fallback used.
        d_short: shortest bonds (5th percentile of nearest-neighbour distances), Å.
        elements: element symbols present.
        n_images, n_images_total, n_atoms: images used (after subsampling), in the file, atoms used.
        r_max: neighbour-list radius, Å.
    """

    r: np.ndarray
    rdf: np.ndarray
    rdf_smooth: np.ndarray
    pair_nn: dict[str, np.ndarray]
    nn: np.ndarray
    shells: list[float]
    shell_source: str
    d_short: float
    elements: list[str]
    n_images: int
    n_images_total: int
    n_atoms: int
    r_max: float


def _neighbours(atoms, r_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Full neighbour list (i, j, distance) within r_max, periodic images included."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = np.asarray(atoms.cell.array, dtype=float)
    usable = pbc.all() or (not pbc.any())
    if usable:
        try:
            from vesin import NeighborList

            box = cell if pbc.any() else np.zeros((3, 3))
            nl = NeighborList(cutoff=float(r_max), full_list=True)
            i, j, d = nl.compute(np.asarray(atoms.positions, dtype=float), box, bool(pbc.any()), quantities="ijd")
            return np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64), np.asarray(d, dtype=float)
        except Exception:  # noqa: BLE001 - vesin refuses some cells; ASE handles every case
            pass
    from ase.neighborlist import neighbor_list

    i, j, d = neighbor_list("ijd", atoms, float(r_max))
    return i.astype(np.int64), j.astype(np.int64), d.astype(float)


def _load(source: Any) -> tuple[list, str]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise DataError(f"{path}: no such file; give a structure file ASE can read (e.g. .traj, .xyz)")
        from mfbo.training._images import read_all

        try:
            images = read_all(path)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - ASE raises many types for unreadable files
            raise DataError(f"{path}: ASE cannot read it as structures ({type(exc).__name__}: {exc})") from exc
        label = str(path)
    else:
        images = list(source)
        label = f"{len(images)} structures"
    if not images:
        raise DataError(f"{label}: contains no structures")
    return images, label


def structure_stats(source: Any, *, max_images: int = 200, seed: int = 0, r_max: float = 8.0,
                    bin_width: float = 0.02, progress: bool = False) -> StructureStats:
    """Nearest-neighbour distances per element pair and the radial distribution of a dataset.

    Args:
        source: path of an ASE-readable file, or a list of ``ase.Atoms``.
        max_images: at most this many images are used, chosen at random with ``seed`` (all when fewer).
        seed: seed of the subsample.
        r_max: neighbour-list radius, Å (PBC-aware).
        bin_width: RDF bin width, Å.
        progress: show a tqdm bar on stderr.

    Returns:
        :class:`StructureStats`.
    """
    from ase.data import chemical_symbols
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    images, label = _load(source)
    n_total = len(images)
    if max_images and n_total > max_images:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(n_total, size=int(max_images), replace=False))
        images = [images[k] for k in idx]
    edges = np.arange(0.0, r_max + bin_width / 2, bin_width)
    counts = np.zeros(len(edges) - 1)
    n_centres = 0
    nn_all: list[np.ndarray] = []
    pair: dict[tuple[int, int], list[np.ndarray]] = {}
    elements: set[str] = set()
    iterator = images
    if progress:
        from tqdm import tqdm

        iterator = tqdm(images, desc="neighbour lists", unit="image", leave=False)
    for atoms in iterator:
        n = len(atoms)
        if n == 0:
            continue
        z = np.asarray(atoms.numbers)
        elements.update(chemical_symbols[k] for k in set(z.tolist()))
        i, j, d = _neighbours(atoms, r_max)
        keep = d > 1e-8
        i, j, d = i[keep], j[keep], d[keep]
        counts += np.histogram(d, edges)[0]
        n_centres += n
        m = np.full(n, np.inf)
        np.minimum.at(m, i, d)
        nn_all.append(m[np.isfinite(m)])
        # nearest atom of element zj to each atom i, per (zi, zj)
        zs = np.unique(z)
        slot = np.searchsorted(zs, z[j])
        mm = np.full((n, len(zs)), np.inf)
        np.minimum.at(mm, (i, slot), d)
        for za in zs:
            rows = z == za
            for b_pos, zb in enumerate(zs):
                v = mm[rows, b_pos]
                v = v[np.isfinite(v)]
                if len(v):
                    pair.setdefault((int(za), int(zb)), []).append(v)
    nn = np.concatenate(nn_all) if nn_all else np.zeros(0)
    if len(nn) == 0:
        raise DataError(f"{label}: no two atoms lie within {r_max} Å of each other; cannot derive distances")
    r = 0.5 * (edges[1:] + edges[:-1])
    rdf = counts / (n_centres * 4 * np.pi * r ** 2 * bin_width)
    smooth = gaussian_filter1d(rdf, sigma=0.06 / bin_width)
    pair_nn = {f"{chemical_symbols[a]}-{chemical_symbols[b]}": np.concatenate(v) for (a, b), v in pair.items()}
    d_short = float(np.percentile(nn, 5))
    r1 = float(np.median(nn))
    # Shells beyond the first: RDF maxima clearly past the typical bond.
    peaks, _ = find_peaks(smooth, prominence=0.03 * float(smooth.max()))
    later = [float(r[p]) for p in peaks if r[p] > 1.25 * r1 and r[p] < r_max - 0.5]
    if len(later) >= 2:
        shells, source_note = [r1, later[0], later[1]], "rdf peaks"
    else:
        beyond = counts * (r > 1.25 * r1)
        if beyond.sum() > 0:
            cdf = np.cumsum(beyond) / beyond.sum()
            q = [float(r[np.searchsorted(cdf, x)]) for x in (0.25, 0.75)]
            r2 = later[0] if later else q[0]
            r3 = q[1] if q[1] > r2 else r2 + 0.25 * r1
            shells = [r1, r2, r3]
            source_note = ("fewer than two RDF peaks past the first shell: 2nd/3rd shell taken as the 25th/75th "
                           "percentile of distances beyond 1.25 x the typical bond")
        else:
            shells = [r1, 1.5 * r1, 2.0 * r1]
            source_note = "no distances past the first shell: 2nd/3rd shell set to 1.5x and 2x the typical bond"
    return StructureStats(r=r, rdf=rdf, rdf_smooth=smooth, pair_nn=pair_nn, nn=nn, shells=shells,
                          shell_source=source_note, d_short=d_short, elements=sorted(elements),
                          n_images=len(images), n_images_total=n_total, n_atoms=int(n_centres), r_max=float(r_max))


def _r(x: float, nd: int = 3) -> float:
    return float(round(x, nd))


@dataclass
class DerivedPrior:
    """A prior derived from data, with the numbers behind it.

    Attributes:
        spec: the :class:`PriorSpec` (with comments explaining each choice).
        stats: the :class:`StructureStats` it came from.
        ranges: the chosen ranges, Å: ``{"sigma_min": (lo, hi), "sigma_max": ..., "cutoff": ...}``.
    """

    spec: PriorSpec
    stats: StructureStats
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_toml(self) -> str:
        return dump_prior_spec(self.spec)

    def write(self, path: str | Path) -> Path:
        return write_prior_file(self.spec, path)

    def plot(self, path: str | Path) -> Path:
        """A PNG of the RDF with shells and chosen ranges marked, and the probe Gaussians vs the cutoff."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        s = self.stats
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
        ax.plot(s.r, s.rdf, color="0.75", lw=0.8, label="radial density (raw)")
        ax.plot(s.r, s.rdf_smooth, color="k", lw=1.5, label="smoothed")
        for k, (x, ls) in enumerate(zip(s.shells, ("-", "--", ":"))):
            ax.axvline(x, color="tab:blue", ls=ls, lw=1.2, label=f"shell {k + 1}: {x:.2f} Å")
        ax.axvline(s.d_short, color="tab:red", lw=1.2, label=f"shortest bonds (5th pct): {s.d_short:.2f} Å")
        colours = {"sigma_min": "tab:red", "sigma_max": "tab:green", "cutoff": "tab:purple"}
        for name, (lo, hi) in self.ranges.items():
            ax.axvspan(lo, hi, color=colours.get(name, "0.5"), alpha=0.15, label=f"{name} range [{lo:.2f}, {hi:.2f}] Å")
        ax.set_ylabel("neighbours per Å$^3$ around an atom")
        ax.set_title(f"{self.spec.name}: RDF of {s.n_images} images, {s.n_atoms} atoms ({len(s.elements)} elements)",
                     fontsize=10)
        ax.legend(fontsize=7, loc="upper right")
        ax.set_ylim(0, float(np.percentile(s.rdf_smooth, 99.5)) * 1.3 or 1.0)
        lo_c, hi_c = self.ranges["cutoff"]
        r = np.linspace(0.0, max(s.r_max, hi_c) * 1.05, 400)
        for name, ls in (("sigma_min", ":"), ("sigma_max", "-")):
            lo, hi = self.ranges[name]
            for sig, lab in ((lo, "low"), (hi, "high")):
                ax2.plot(r, np.exp(-r ** 2 / (2 * sig ** 2)), ls=ls, color=colours[name],
                         alpha=0.6 if lab == "low" else 1.0, label=f"probe, {name} {lab} = {sig:.2f} Å")
        lo, hi = self.ranges["cutoff"]
        ax2.axvspan(lo, hi, color=colours["cutoff"], alpha=0.15, label="cutoff range")
        ax2.axhline(1e-3, color="0.4", lw=0.8, ls="--", label="negligible (1e-3)")
        ax2.set_yscale("log")
        ax2.set_ylim(1e-5, 1.5)
        ax2.set_xlabel("r (Å)")
        ax2.set_ylabel("probe weight exp(-r²/2σ²)")
        ax2.legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path


def _pair_table(stats: StructureStats, limit: int = 15) -> list[str]:
    rows = []
    for key, v in stats.pair_nn.items():
        a, b = key.split("-")
        if a > b or len(v) < 5:
            continue
        both = np.concatenate([v, stats.pair_nn.get(f"{b}-{a}", np.zeros(0))]) if a != b else v
        rows.append((float(np.percentile(both, 5)), key, len(both), float(np.median(both))))
    rows.sort()
    lines = [f"  {'pair':<8} {'n':>6} {'5th pct':>8} {'median':>8}  (nearest-neighbour distance, Å)"]
    lines += [f"  {k:<8} {n:>6d} {p5:>8.2f} {med:>8.2f}" for p5, k, n, med in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"  ... {len(rows) - limit} more pairs")
    return lines


def derive_gmp_prior(source: Any, *, name: str | None = None, max_images: int = 200, seed: int = 0,
                     r_max: float = 8.0, max_features: int = 96, data_fraction: Sequence[float] = (0.05, 1.0),
                     max_epochs: int = 100, progress: bool = False) -> DerivedPrior:
    """Derive a GMP prior file from structures (see the module docstring for the reasoning).

    Args:
        source: path of an ASE-readable file or a list of ``ase.Atoms``.
        name: the prior's name (default: the file stem + "_physics").
        max_images, seed, r_max: see :func:`structure_stats`.
        max_features: cap on the number of fingerprint features (a constraint).
        data_fraction: bounds of the data-fraction fidelity.
        max_epochs: upper bound and target of the epoch fidelity.
        progress: tqdm bar on stderr.

    Returns:
        :class:`DerivedPrior` (``.spec`` is the prior, ``.write(path)``, ``.plot(png)``).
    """
    stats = structure_stats(source, max_images=max_images, seed=seed, r_max=r_max, progress=progress)
    if name is None:
        name = (Path(source).stem if isinstance(source, (str, Path)) else "data") + "_physics"
    d_short = stats.d_short
    r1, r2, r3 = stats.shells
    smin = (_r(d_short / 10), _r(d_short / 2))
    smin_med = _r(d_short / 4)
    smax = (_r(r2 / 2), _r(max(r3 / 1.5, r2 / 2 * 1.2)))
    if smax[0] <= smin[0]:
        raise PriorError(f"derived sigma_max range {smax} lies below sigma_min's {smin}: the data's shells are "
                         "too close to its shortest bonds to derive a prior")
    smax_med = _r(math.sqrt(smax[0] * smax[1]))
    cut_lo = math.ceil(max(r2 + 0.25 * (r3 - r2), 3 * smax[0]) * 100 - 1e-9) / 100
    cut_hi = _r(max(_NEGLIGIBLE_RATIO * smax[1], cut_lo * 1.25), 2)
    cut_med = _r(min(max(3.2 * smax_med, cut_lo * 1.05), cut_hi * 0.95), 2)
    ranges = {"sigma_min": smin, "sigma_max": smax, "cutoff": (cut_lo, cut_hi)}
    shells_txt = ", ".join(f"{x:.2f}" for x in stats.shells)
    params: dict[str, dict] = {
        "fp_scheme": {"type": "categorical", "choices": ["gmp", "gmpordernorm"],
                      "prior": {"dist": "categorical", "weights": {"gmp": 0.4, "gmpordernorm": 0.6}}},
        "sigma_min": {"type": "float", "bounds": list(smin), "scale": "log",
                      "prior": {"dist": "lognormal", "median": smin_med, "log_std": 0.35}},
        "sigma_max": {"type": "float", "bounds": list(smax), "scale": "log",
                      "prior": {"dist": "lognormal", "median": smax_med,
                                "log_std": _r(max(math.log(smax[1] / smax[0]) / 3, 0.1))}},
        "n_sigmas": {"type": "int", "bounds": [3, 12], "prior": {"dist": "normal", "mean": 8.0, "std": 2.0}},
        "sigma_spacing": {"type": "categorical", "choices": ["log", "linear"],
                          "prior": {"dist": "categorical", "weights": {"log": 0.6, "linear": 0.4}}},
        "mcsh_order": {"type": "int", "bounds": [0, 4], "prior": {"dist": "normal", "mean": 3.5, "std": 1.0}},
        "cutoff": {"type": "float", "bounds": [cut_lo, cut_hi],
                   "prior": {"dist": "lognormal", "median": cut_med, "log_std": 0.2}},
        "solid_harmonics": {"type": "categorical", "choices": [True, False],
                            "prior": {"dist": "categorical", "weights": [0.6, 0.4]}},
    }
    constraints = ["sigma_min < sigma_max", "cutoff >= 3 * sigma_max", f"n_features <= {int(max_features)}"]
    data = {"name": name,
            "description": f"GMP fingerprint prior derived from {stats.n_images} of {stats.n_images_total} images "
                           f"by `mfbo priors derive` (seed {seed}).",
            "constraints": constraints, "parameters": params,
            "fidelities": {"data_fraction": {"bounds": [float(data_fraction[0]), float(data_fraction[1])],
                                             "target": float(data_fraction[1])},
                           "epochs": {"bounds": [1, int(max_epochs)], "target": int(max_epochs)}}}
    spec = parse_prior_dict(data, source=f"derived:{name}")
    src = str(source) if isinstance(source, (str, Path)) else f"{stats.n_images_total} in-memory structures"
    spec.comments = {
        "header": [
            f"{name}: GMP fingerprint prior derived from the data by `mfbo priors derive`.",
            f"Data: {src}; {stats.n_images} of {stats.n_images_total} images (random subsample, seed {seed}), "
            f"{stats.n_atoms} atoms, elements: {' '.join(stats.elements)}.",
            f"Neighbour lists to {stats.r_max:g} Å with periodic images (PBC-aware).",
            "",
            "Per element pair, nearest-neighbour distances (the 15 shortest pairs by 5th percentile):",
            *_pair_table(stats),
            "",
            f"Shortest bonds d_short (5th percentile of every atom's nearest-neighbour distance) = {d_short:.3f} Å.",
            f"Coordination shells r1, r2, r3 = {shells_txt} Å (r1 = median nearest-neighbour distance; "
            f"r2, r3 from {stats.shell_source}).",
            "Probe Gaussian of width sigma: weight exp(-r^2 / (2 sigma^2)) at distance r (Å).",
        ],
        "parameters": {
            "fp_scheme": ["Order-normalised columns (gmpordernorm, one per order and width) are mfbo's default; "
                          "per-group columns (gmp) give",
                          "more features per order and were more accurate on mlearn Mo, less on Si."],
            "sigma_min": [f"Narrowest probe resolves the shortest bonds: bounds d_short/10 .. d_short/2, "
                          f"median d_short/4 = {smin_med} Å",
                          f"(weight exp(-8) at d_short = {d_short:.2f} Å, so the probe sees the atom's own "
                          "environment first)."],
            "sigma_max": [f"Widest probe reaches the 2nd-3rd shell: r2/2 = {smax[0]} Å (weight exp(-2) at r2) to "
                          f"r3/1.5 = {smax[1]} Å (weight exp(-1.1) at r3)."],
            "n_sigmas": ["Widths between sigma_min and sigma_max; 8 is mfbo's default (AMPTorch's seed has 5, "
                         "too few to resolve the shells of bulk metals)."],
            "sigma_spacing": ["Geometric spacing puts more widths where short bonds vary fastest."],
            "mcsh_order": ["Max MCSH order: 0-2 are density, dipole-like and quadrupole-like angular terms "
                           "(AMPTorch's seed stops at 2);",
                           "orders 0-4 at 8 widths (mfbo's default) instead cut mlearn Mo's test energy error "
                           "2.3x, so the belief centres on 3-4."],
            "cutoff": [f"Covers the shells that matter: at least r2 + (r3 - r2)/4 and 3 x sigma_max low "
                       f"({cut_lo} Å),",
                       f"at most where the widest probe (sigma_max high {smax[1]} Å) falls below 1e-3 "
                       f"(3.72 sigma = {cut_hi} Å): atoms beyond change only the cost."],
            "solid_harmonics": ["gmpordernorm only: solid (True) or surface harmonics."],
        },
        "constraints": {
            "sigma_min < sigma_max": "the widths must span a range",
            "cutoff >= 3 * sigma_max": "the widest probe is below 1.1 % at the cutoff, so truncation is harmless",
            f"n_features <= {int(max_features)}": "cap on the fingerprint length (cost of featurisation and "
                                                  "training grows with it)",
        },
        "fidelities": {"data_fraction": ["Training-subset fraction (nested subsets)."],
                       "epochs": ["Training epochs (iteration fidelity)."]},
    }
    return DerivedPrior(spec=spec, stats=stats, ranges=ranges)
