"""Can GMP fingerprints express the forces of the OC20 pool's free atoms? In-sample fits, with controls.

Force training can only ever produce forces of the form ``F_i = -sum_j (dE_j / dG_j) . dG_j / dx_i``:
the fingerprint Jacobians are the basis. This script measures how well that basis fits force labels
*on the images it is fitted to* (no generalisation involved), for OC20 and for controls:

1. **Per-element linear energy model**, ``E = sum_j w_{Z_j} . G_j``: its forces are linear in the
   weights, so least squares gives the best in-sample fit exactly, with no optimiser in the way. Rows:
   free-atom force components below ``--cap`` eV/Å (least squares chases the few huge components,
   which the MAE then hides). Reported: the in-sample RMS error (what least squares minimises) over
   that of zero forces on the same rows, beside the same fit on Gaussian random columns of the same
   shape (what any basis of that size gives by counting parameters: about ``sqrt(1 - columns / rows)``),
   and the in-sample MAE over zero forces' MAE.
2. **The same geometries, two labels**: the OC20 pool's images whose elements ASE's EMT covers, with
   their DFT forces and with EMT's forces. This separates "the basis cannot express forces on these
   structures" from "these labels are hard to fit".
3. **The trainer itself, in-sample**: ``mfbo.training.train`` on the first 16 images of a set with a
   force-dominated loss (force coefficient 100, MAE loss, batch 1, 150 epochs, default fingerprints and
   network), its own training images as the test set: test free-atom force MAE over zero forces.
   OC20 pool against mlearn Si.

    OMP_NUM_THREADS=1 .venv/bin/python analysis/oc20_force_learnability.py [--json OUT] [--no-train]

Numbers and what they mean: docs/training.md, "OC20: what the forces of the pool allow".
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OC20 = REPO / "mfbo" / "datasets" / "train_pool.traj"
SI = REPO / "mfbo" / "datasets" / "si_train.extxyz"
EMT_ELEMENTS = {"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt", "H", "C", "N", "O"}


def free_mask(atoms) -> np.ndarray:
    """(n_atoms,) bool: atoms no FixAtoms constraint holds."""
    fixed = np.zeros(len(atoms), bool)
    for c in atoms.constraints:
        if type(c).__name__ == "FixAtoms":
            fixed[c.index] = True
    return ~fixed


def force_design(images, params) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares design of the per-element linear energy model's free-atom forces.

    Returns:
        X: (n_rows, n_elements * n_features): d(-F component) / d(weights), one row per free-atom force
            component (eV/Å per weight unit); y: (n_rows,) DFT (or given) force components, eV/Å.
    """
    from mfbo.fingerprints import featurize

    elements = sorted({int(z) for a in images for z in a.numbers})
    col = {z: k for k, z in enumerate(elements)}
    rows, labels = [], []
    for atoms in images:
        fp = featurize(atoms, params, derivatives=True)
        nf = fp.features.shape[1]
        design = np.zeros((len(atoms), 3, len(elements), nf))
        centre_element = np.array([col[int(z)] for z in atoms.numbers[fp.pair_i]])
        # F_j = -sum_p dfeatures[p]^T w_{Z(pair_i[p])}, summed over the pairs whose neighbour is j
        np.add.at(design, (fp.pair_j, slice(None), centre_element), -np.transpose(fp.dfeatures, (0, 2, 1)))
        free = free_mask(atoms)
        rows.append(design[free].reshape(-1, len(elements) * nf))
        labels.append(atoms.get_forces(apply_constraint=False)[free].ravel())
    return np.concatenate(rows), np.concatenate(labels)


def in_sample_ratio(X: np.ndarray, y: np.ndarray, cap: float, seed: int = 0) -> dict:
    """Least-squares fit on the rows with |y| < cap, and the same on Gaussian random columns.

    Returns the in-sample RMS error over that of zero forces (what least squares minimises; random
    columns give about ``sqrt(1 - columns / rows)``) and the in-sample MAE over zero forces' MAE.
    """
    keep = np.abs(y) < cap
    Xk, yk = X[keep], y[keep]

    def rms(v):
        return float(np.sqrt(np.mean(v**2)))

    w, *_ = np.linalg.lstsq(Xk, yk, rcond=None)
    R = np.random.default_rng(seed).standard_normal(Xk.shape)
    wr, *_ = np.linalg.lstsq(R, yk, rcond=None)
    return {"rows": int(keep.sum()), "rows_dropped": int((~keep).sum()), "columns": int(X.shape[1]),
            "zero_forces_rms": rms(yk), "zero_forces_mae": float(np.abs(yk).mean()),
            "rms_over_zero": rms(Xk @ w - yk) / rms(yk),
            "mae_over_zero": float(np.abs(Xk @ w - yk).mean() / np.abs(yk).mean()),
            "random_columns_rms_over_zero": rms(R @ wr - yk) / rms(yk)}


def emt_copies(images) -> list:
    """The images whose elements EMT covers, relabelled with EMT energies and forces."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    out = []
    for atoms in images:
        b = atoms.copy()
        b.calc = EMT()
        energy, forces = b.get_potential_energy(), b.get_forces(apply_constraint=False)
        b.calc = SinglePointCalculator(b, energy=energy, forces=forces)
        out.append(b)
    return out


def trainer_in_sample(images) -> dict:
    """Train on ``images`` with a force-dominated loss and test on the same images."""
    from mfbo.training import TrainConfig, train

    config = TrainConfig(force_coefficient=100.0, loss="mae", batch_size=1, lr=3e-3, epochs=150,
                         keep_best=False, num_threads=1)
    t0 = time.perf_counter()
    # the validation set only feeds the learning curve here (keep_best is off)
    result = train(config, images, images[:4], data_fraction=1.0, epochs=config.epochs, test_images=images)
    zero = float(np.mean(np.concatenate([np.abs(a.get_forces(apply_constraint=False)[free_mask(a)]).ravel()
                                         for a in images])))
    m = result.test_metrics
    return {"images": len(images), "force_mae_free": m["force_mae_free"], "zero_forces_mae_free": zero,
            "fit_over_zero": m["force_mae_free"] / zero, "energy_mae_per_atom": m["energy_mae_per_atom"],
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-images", type=int, default=64, help="OC20 / Si images in the linear fits")
    ap.add_argument("--cap", type=float, default=1.0, help="force components at or above this (eV/Å) are left out")
    ap.add_argument("--no-train", action="store_true", help="skip the trainer's in-sample runs (about 1 min)")
    ap.add_argument("--json", help="write the numbers to this file")
    args = ap.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from ase.data import chemical_symbols

    from mfbo.training import TrainConfig, load_images
    from mfbo.training._featurize import gmp_params_of

    torch.set_num_threads(1)
    params = gmp_params_of(TrainConfig())
    pool = load_images(OC20, require_forces=True)
    si = load_images(SI, require_forces=True)
    emt_able = [a for a in pool if {chemical_symbols[z] for z in a.numbers} <= EMT_ELEMENTS]
    cases = {
        f"OC20 pool, first {args.n_images} images, DFT forces": pool[: args.n_images],
        f"mlearn Si, first {args.n_images} images, DFT forces": si[: args.n_images],
        f"OC20 pool, the {len(emt_able)} images EMT covers, DFT forces": emt_able,
        f"the same {len(emt_able)} OC20 geometries, EMT forces": emt_copies(emt_able),
    }
    report: dict = {"fingerprints": "TrainConfig() defaults", "cap_eV_per_A": args.cap, "linear": {}, "trainer": {}}
    print(f"In-sample least-squares fit of a per-element linear GMP energy model to free-atom force components "
          f"below {args.cap} eV/Å (default fingerprints):")
    print(f"{'case':<58} {'rows':>6} {'columns':>8} {'zero forces RMS':>16} {'fit RMS / zero':>15} "
          f"{'random RMS / zero':>18} {'fit MAE / zero':>15}")
    for name, images in cases.items():
        X, y = force_design(images, params)
        r = in_sample_ratio(X, y, args.cap)
        report["linear"][name] = r
        print(f"{name:<58} {r['rows']:>6} {r['columns']:>8} {r['zero_forces_rms']:>11.4f} eV/Å "
              f"{r['rms_over_zero']:>15.3f} {r['random_columns_rms_over_zero']:>18.3f} {r['mae_over_zero']:>15.3f}")
    if not args.no_train:
        print("\nThe trainer in-sample (16 images, force coefficient 100, MAE loss, batch 1, 150 epochs):")
        for name, images in {"OC20 pool": pool[:16], "mlearn Si": si[:16]}.items():
            r = trainer_in_sample(images)
            report["trainer"][name] = r
            print(f"  {name:<10} free-atom force MAE {r['force_mae_free']:.4f} eV/Å, zero forces "
                  f"{r['zero_forces_mae_free']:.4f} eV/Å: {r['fit_over_zero']:.3f}x; energy "
                  f"{1000 * r['energy_mae_per_atom']:.1f} meV/atom ({r['seconds']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
