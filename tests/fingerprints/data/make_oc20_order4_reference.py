"""Build ``oc20_test1_gmp_o4_c6.npz``: an ill-conditioned GMP reference cell.

The cell is OC20 ``test.traj`` image 1 (76 atoms, Al36Sc36 slab with a C/H2/O adsorbate). With
scheme ``gmp``, orders 0-4 (all groups), sigmas 0.25/0.75/1.5/2.5 Å and cutoff 6 Å its order-4
group-2 feature at sigma 2.5 Å is ~9e-4 on five Sc atoms while single neighbours contribute ~4e3
(the near-symmetric environment cancels them), and Al's valence fit holds two ~8.9e5 e/Å^3
Gaussians of opposite sign whose exponents differ by 1e-4 relative. A float64 sum taken term by
term is then off by up to 1e-4 relative.

Two steps (AMPTorch is GPL and lives in its own environment, never in mfbo):

    # 1. AMPTorch's output (an AMPTorch master 02e5af3 environment, see shared/vendor/README.md):
    /path/to/amptorch-venv/bin/python make_oc20_order4_reference.py amptorch \\
        ../shared/data/oc20/test.traj /tmp/amptorch_features.npy
    # 2. the exact values (50-digit mpmath) and the .npz (mfbo's environment):
    python make_oc20_order4_reference.py build ../shared/data/oc20/test.traj \\
        /tmp/amptorch_features.npy tests/fingerprints/data/oc20_test1_gmp_o4_c6.npz

The exact values use ASE's neighbour list, the MCSH polynomials of ``mfbo.fingerprints._mcsh``
(exact integers, checked against AMPTorch on the public reference) and Gaussian moments in
mpmath; nothing of mfbo's float64 engine. Keys: ``numbers``, ``positions`` (Å, as stored),
``cell``, ``pbc``, ``amptorch`` (AMPTorch's no-derivative features, rows in atom order, columns in
descriptor order), ``exact``, and ``fp_params`` (JSON).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

INDEX = 1
SIGMAS = [0.25, 0.75, 1.5, 2.5]
FP_PARAMS = {
    "MCSHs": {
        "0": {"groups": [1], "sigmas": SIGMAS},
        "1": {"groups": [1], "sigmas": SIGMAS},
        "2": {"groups": [1, 2], "sigmas": SIGMAS},
        "3": {"groups": [1, 2, 3], "sigmas": SIGMAS},
        "4": {"groups": [1, 2, 3, 4], "sigmas": SIGMAS},
    },
    "cutoff": 6,
}
VALENCE = Path(__file__).resolve().parents[3] / "mfbo" / "fingerprints" / "valence_gaussians"


def _density_files() -> dict[str, str]:
    return {p.name.split("_")[0]: str(p) for p in VALENCE.glob("*_pseudodensity_*.g")}


def run_amptorch(traj: str, out: str) -> None:
    """AMPTorch's no-derivative GMP features of the image (needs AMPTorch importable)."""
    from amptorch.descriptor.GMP import GMP
    from ase.io import read

    atoms = read(traj, INDEX)
    elements = sorted(set(atoms.get_chemical_symbols()))
    files = _density_files()
    desc = GMP({**FP_PARAMS, "atom_gaussians": {e: files[e] for e in elements}}, elements)
    symbols = np.array(atoms.get_chemical_symbols())
    feats = np.zeros((len(atoms), desc.params_set["num"]))
    for e in elements:
        feats[symbols == e] = desc.calculate_fingerprints(atoms, e, calc_derivatives=False, log=False)[1]
    np.save(out, feats)


def exact_features(atoms) -> np.ndarray:
    """Features in 50-digit arithmetic, rounded to float64 at the end."""
    import mpmath as mp
    from ase.neighborlist import primitive_neighbor_list

    from mfbo.fingerprints._mcsh import cartesian_polynomial, group_members

    mp.mp.dps = 50
    files = _density_files()
    gauss = {}
    for e in set(atoms.get_chemical_symbols()):
        rows = [line.split()[:2] for line in Path(files[e]).read_text().splitlines() if line.strip()]
        gauss[e] = [(mp.mpf(float(b)), mp.mpf(float(be))) for b, be in rows]
    cutoff = float(FP_PARAMS["cutoff"])
    ii, jj, dd = primitive_neighbor_list("ijD", atoms.pbc, atoms.cell.array, atoms.positions, cutoff)
    keep = np.einsum("ij,ij->i", dd, dd) < cutoff * cutoff
    ii, jj, dd = ii[keep], jj[keep], dd[keep]
    n = len(atoms)
    ii = np.concatenate([np.arange(n), ii])
    jj = np.concatenate([np.arange(n), jj])
    dd = np.concatenate([np.zeros((n, 3)), dd])
    symbols = atoms.get_chemical_symbols()
    columns = []  # (order, group, sigma)
    for order in sorted(FP_PARAMS["MCSHs"], key=int):
        spec = FP_PARAMS["MCSHs"][order]
        columns += [(int(order), g, s) for g in spec["groups"] for s in spec["sigmas"]]
    comps = {}  # (order, group) -> [polynomial of each member]
    for o, g, _ in columns:
        comps[(o, g)] = [cartesian_polynomial(m, solid=False) for m in group_members(o, g)]

    def moments(mean, var):  # E[X^a], a = 0..4, X ~ N(mean, var)
        return [1, mean, mean**2 + var, mean**3 + 3 * mean * var, mean**4 + 6 * mean**2 * var + 3 * var**2]

    out = np.zeros((n, len(columns)))
    for s in SIGMAS:
        sig = mp.mpf(s)
        alpha = 1 / (2 * sig * sig)
        A = 1 / (sig * mp.sqrt(2 * mp.pi))
        sums = {key: np.zeros((n, len(polys)), dtype=object) for key, polys in comps.items()}
        for key in sums:
            sums[key][:] = mp.mpf(0)
        for i, j, d in zip(ii, jj, dd):
            x, y, z = (mp.mpf(float(v)) for v in d)
            r2 = x * x + y * y + z * z
            for B, beta in gauss[symbols[j]]:
                gamma = alpha + beta
                lam, var = beta / gamma, 1 / (2 * gamma)
                w = A * B * (mp.pi / gamma) ** mp.mpf(1.5) * mp.exp(-alpha * beta / gamma * r2)
                mx, my, mz = moments(lam * x, var), moments(lam * y, var), moments(lam * z, var)
                for key, polys in comps.items():
                    for m, poly in enumerate(polys):
                        val = sum(c * mx[a] * my[b] * mz[cc] for (a, b, cc), c in poly.items())
                        sums[key][i, m] += w * val
        for col, (o, g, cs) in enumerate(columns):
            if cs != s:
                continue
            members = sums[(o, g)]
            for i in range(n):
                if members.shape[1] == 1:
                    out[i, col] = float(members[i, 0])
                else:
                    out[i, col] = float(mp.sqrt(sum(v * v for v in members[i])))
    return out


def build(traj: str, amptorch_npy: str, out: str) -> None:
    from ase.io import read

    atoms = read(traj, INDEX)
    np.savez_compressed(
        out,
        numbers=atoms.numbers.astype(np.int64),
        positions=atoms.positions,
        cell=atoms.cell.array,
        pbc=atoms.pbc,
        amptorch=np.load(amptorch_npy),
        exact=exact_features(atoms),
        fp_params=np.array(json.dumps({"fp_scheme": "gmp", **FP_PARAMS})),
    )


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "amptorch":
        run_amptorch(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "build":
        build(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
