"""Test errors of the potentials mfbo hands over, beside trivial baselines and published models.

For each dataset, two potentials are scored on the dataset's test set:

* **defaults**: ``mfbo train`` with only the data given (every hyperparameter at its default);
* **study**: ``mfbo init TRAIN --test TEST --wall-time S`` then ``mfbo run`` (the study searches,
  then retrains its recommendation at full fidelity), read back with ``mfbo best --json``.

Both run the real CLI in subprocesses. Beside them: the per-element linear fit of energy on
composition and zero forces (fitted on the same training images, scored on the same test images),
and for the mlearn sets the errors published by Zuo et al. (2020) for GAP, MTP, NNP and SNAP.

Datasets: ``si`` (bundled with mfbo), ``mo`` (``../shared/data/mlearn``; skipped when absent) and
``oc20`` (the bundled 569-image pool and its 300 test images). Energy errors are MAE per atom
(meV/atom in the table), force errors MAE per Cartesian component (eV/Å) over all atoms, and over
free atoms (not fixed by FixAtoms) where it differs (OC20).

Usage::

    python analysis/bench_potential_quality.py [--datasets si mo oc20] [--wall-time 1200]
        [--skip-study] [--skip-defaults] [--out analysis/potential_quality]

Writes ``OUT/results.json``, ``OUT/potential_quality.png`` and prints the table; finished
datasets are kept in results.json and not rerun (delete an entry to redo it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

# Zuo et al., J. Phys. Chem. A 124, 731 (2020), on the official test splits:
# (energy MAE meV/atom, force MAE eV/Å).
PUBLISHED = {
    "si": {"GAP": (2.91, 0.07), "MTP": (2.21, 0.06), "NNP": (5.63, 0.109), "SNAP": (6.44, 0.133)},
    "mo": {"GAP": (2.24, 0.09), "MTP": (2.83, 0.09), "NNP": (3.65, 0.125), "SNAP": (5.48, 0.207)},
}


def datasets() -> dict[str, tuple[Path, Path]]:
    from mfbo.datasets import OC20_TEST, OC20_TRAIN_POOL, SI_TEST, SI_TRAIN

    return {
        "si": (SI_TRAIN, SI_TEST),
        "mo": (SHARED / "mlearn" / "Mo_training.extxyz", SHARED / "mlearn" / "Mo_test.extxyz"),
        "oc20": (OC20_TRAIN_POOL, OC20_TEST),
    }


def _cli(*args, cwd: Path, log: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "a") as fh:
        fh.write(f"$ mfbo {' '.join(map(str, args))}\n")
        fh.flush()
        proc = subprocess.run([sys.executable, "-m", "mfbo.cli", *map(str, args)], cwd=cwd, env=env,
                              stdout=subprocess.PIPE, stderr=fh, text=True)
        fh.write(proc.stdout)
    if proc.returncode:
        raise SystemExit(f"mfbo {args[0]} failed (exit {proc.returncode}); see {log}")
    return proc


def run_defaults(train: Path, test: Path, work: Path, log: Path) -> dict:
    """``mfbo train`` with only the data: test metrics, baselines and wall time (s)."""
    run_file = work / "defaults.json"
    run_file.write_text(json.dumps({"train": str(train), "test": str(test), "cache_dir": str(work / "cache")}))
    start = time.perf_counter()
    _cli("train", run_file, "--output", work / "defaults", "--no-progress", cwd=work, log=log)
    record = json.loads((work / "defaults" / "record.json").read_text())
    return {"test_metrics": record["test_metrics"], "test_baselines": record["test_baselines"],
            "best_epoch": record.get("best_epoch"),
            "wall_time_s": time.perf_counter() - start}


def run_study(train: Path, test: Path, work: Path, wall_time: float, log: Path) -> dict:
    """``mfbo init`` + ``mfbo run`` + ``mfbo best``: the study's final potential on the test set."""
    start = time.perf_counter()
    plan = json.loads(_cli("init", train, "--test", test, "--out", work / "study.toml", "--wall-time",
                           int(wall_time), "--json", cwd=work, log=log).stdout)
    _cli("run", work / "study.toml", "--no-progress", cwd=work, log=log)
    # mfbo init writes the study's output folder as runs/<name> beside the study file.
    best = json.loads(_cli("best", work / "runs" / plan["name"], "--json", cwd=work, log=log).stdout)
    return {"test_metrics": best["test_metrics"], "test_baselines": best.get("test_baselines"),
            "params": best.get("params"), "fidelity": best.get("fidelity"), "plan": plan,
            "wall_time_s": time.perf_counter() - start}


def table(results: dict) -> str:
    head = (f"{'dataset':7} {'model':10} {'E meV/atom':>11} {'F eV/Å':>8} {'F free':>8} "
            f"{'E/linear':>9} {'F/zero':>7} {'wall s':>7}")
    lines = [head, "-" * len(head)]
    for name, entry in results.items():
        base = entry.get("baselines")
        if base:
            lin = base["linear_fit"]["energy_mae_per_atom"] * 1e3
            zero = base["zero_forces"]
            lines.append(f"{name:7} {'lin./zero':10} {lin:11.2f} {zero['force_mae']:8.3f} "
                         f"{zero['force_mae_free'] or float('nan'):8.3f} {1:9.2f} {1:7.2f} {'':>7}")
        for model in ("defaults", "study"):
            if model not in entry:
                continue
            m = entry[model]["test_metrics"]
            e = m["energy_mae_per_atom"] * 1e3
            e_ratio = e / lin if base else float("nan")
            f_ratio = m["force_mae"] / zero["force_mae"] if base and zero["force_mae"] else float("nan")
            lines.append(f"{name:7} {model:10} {e:11.2f} {m['force_mae']:8.3f} "
                         f"{m.get('force_mae_free') or float('nan'):8.3f} {e_ratio:9.2f} {f_ratio:7.2f} "
                         f"{entry[model]['wall_time_s']:7.0f}")
        for label, (e, f) in PUBLISHED.get(name, {}).items():
            e_ratio = e / lin if base else float("nan")
            f_ratio = f / zero["force_mae"] if base else float("nan")
            lines.append(f"{name:7} {label:10} {e:11.2f} {f:8.3f} {'':>8} {e_ratio:9.2f} {f_ratio:7.2f} "
                         f"{'(pub.)':>7}")
    return "\n".join(lines)


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, e in results.items() if e.get("baselines")]
    pretty = {"si": "Si (mlearn)", "mo": "Mo (mlearn)", "oc20": "OC20 pool"}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    panels = [("energy", "test energy MAE / linear-fit MAE", "meV/atom"),
              ("force", "test force MAE / zero-force MAE", "eV/Å")]
    for ax, (key, ylabel, unit) in zip(axes, panels):
        width = 0.35
        for k, (model, colour) in enumerate([("defaults", "#8c8c8c"), ("study", "#1f77b4")]):
            for i, n in enumerate(names):
                entry, base = results[n], results[n]["baselines"]
                if model not in entry:
                    continue
                m = entry[model]["test_metrics"]
                if key == "energy":
                    value, shown = m["energy_mae_per_atom"] / base["linear_fit"]["energy_mae_per_atom"], \
                        f"{m['energy_mae_per_atom'] * 1e3:.1f}"
                else:
                    value, shown = m["force_mae"] / base["zero_forces"]["force_mae"], f"{m['force_mae']:.3f}"
                x = i + (k - 0.5) * width
                ax.bar(x, value, width, color=colour, label=f"mfbo {model}" if i == 0 or model not in
                       results[names[0]] else None)
                ax.annotate(shown, (x, value), ha="center", va="bottom", fontsize=8)
        for i, n in enumerate(names):
            base = results[n]["baselines"]
            nnp = PUBLISHED.get(n, {}).get("NNP")
            if nnp is None:
                continue
            value = nnp[0] / 1e3 / base["linear_fit"]["energy_mae_per_atom"] if key == "energy" \
                else nnp[1] / base["zero_forces"]["force_mae"]
            ax.hlines(value, i - width, i + width, color="#d62728", lw=2,
                      label="published NNP (Zuo et al. 2020)" if i == 0 else None)
        ax.axhline(1.0, color="k", lw=0.8, ls="--", label="trivial baseline")
        ax.set_xticks(range(len(names)), [pretty.get(n, n) for n in names])
        ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(f"bar labels: MAE in {unit}", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle("Test error of mfbo potentials relative to trivial baselines (lower is better)")
    fig.savefig(path, dpi=130)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["si", "mo", "oc20"], choices=["si", "mo", "oc20"])
    parser.add_argument("--wall-time", type=float, default=1200.0, help="seconds per study (mfbo init)")
    parser.add_argument("--skip-study", action="store_true")
    parser.add_argument("--skip-defaults", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "analysis" / "potential_quality")
    parser.add_argument("--report-only", action="store_true", help="print the table and redraw the PNG")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    paths = datasets()
    for name in [] if args.report_only else args.datasets:
        train, test = paths[name]
        if not train.is_file() or not test.is_file():
            print(f"{name}: skipped ({train} or {test} is missing)")
            continue
        entry = results.setdefault(name, {})
        with tempfile.TemporaryDirectory(prefix=f"mfbo-quality-{name}-") as tmp:
            work, log = Path(tmp), args.out / f"{name}.log"
            if not args.skip_defaults and "defaults" not in entry:
                print(f"{name}: mfbo train with defaults ...", flush=True)
                entry["defaults"] = run_defaults(train, test, work, log)
                entry["baselines"] = entry["defaults"]["test_baselines"]
            if not args.skip_study and "study" not in entry:
                print(f"{name}: mfbo init --wall-time {args.wall_time:.0f} + mfbo run ...", flush=True)
                entry["study"] = run_study(train, test, work, args.wall_time, log)
                entry.setdefault("baselines", entry["study"]["test_baselines"])
                entry["study"]["requested_wall_time_s"] = args.wall_time
        # Re-read before writing: another process may have finished another part meanwhile.
        current = json.loads(results_path.read_text()) if results_path.is_file() else {}
        current.setdefault(name, {}).update(entry)
        results_path.write_text(json.dumps(current, indent=1))
        results = {**current, **results, name: current[name]}
    print(table({n: results[n] for n in args.datasets if n in results}))
    figure({n: results[n] for n in args.datasets if n in results}, args.out / "potential_quality.png")
    print(f"wrote {results_path} and {args.out / 'potential_quality.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
