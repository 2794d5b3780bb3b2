"""The optimiser's own time in the quickstart study, with the driver's torch threads limited or not.

    .venv/bin/python analysis/bench_driver_threads.py [--wall-time 200] [--repeats 2] [--out DIR]

Runs ``studies/quickstart.toml`` (mlearn Si, two local workers) through the ``mfbo`` CLI, in
subprocesses, ``--repeats`` times per setting, the two settings alternating so that both see the same
machine: ``execution.driver_threads = "auto"`` (the default: with local workers, the cores they leave
free, at least one) against ``driver_threads = <cpu count>`` (torch's default in the driver). Each run
has ``--wall-time`` seconds of search, no final retraining, and an empty fingerprint cache of its own.
It reads ``mfbo status --json`` after each run and prints, per setting, the median optimiser's own time
(s), its share of the search's wall time, seconds per trial and trials finished, and the ratios of
"auto" to the default. With ``--out`` it writes them as JSON.

The numbers are only comparable on an otherwise idle machine: the point is how the driver competes with
the workers for the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "studies" / "quickstart.toml"


def study_file(out_dir: Path, wall_time: float, driver_threads: str | int) -> str:
    """The quickstart study file, writing to ``out_dir``, with the given wall time and driver threads."""
    text = QUICKSTART.read_text()
    edits = [
        (r'(?m)^output = .*$', f'output = "{out_dir}"'),
        (r'"\.\./priors/', f'"{ROOT / "priors"}/'),
        (r'(?m)^wall_time = .*$', f"wall_time = {wall_time:g}"),
        (r'(?m)^workers = (\d+)$', rf'workers = \1\ndriver_threads = {json.dumps(driver_threads)}'),
        (r'(?m)^enabled = true$', "enabled = false"),
    ]
    for pattern, repl in edits:
        text, n = re.subn(pattern, repl, text)
        if n != 1:
            raise SystemExit(f"{QUICKSTART}: expected one match of {pattern!r}, found {n}; update this script")
    return text


def run_once(work: Path, label: str, wall_time: float, driver_threads: str | int) -> dict:
    out_dir = work / label
    path = work / f"{label}.toml"
    path.write_text(study_file(out_dir, wall_time, driver_threads))
    env = dict(os.environ, MFBO_CACHE_DIR=str(work / f"{label}-cache"))
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "mfbo.cli", "run", str(path), "--no-progress"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    status = json.loads(subprocess.run([sys.executable, "-m", "mfbo.cli", "status", str(out_dir), "--json"],
                                       check=True, capture_output=True, text=True).stdout)
    budget = status["budget"]
    trials = status["trials"]
    return {"setting": str(driver_threads), "optimizer_s": budget["optimizer_s"],
            "optimizer_share": budget["optimizer_share"], "optimizer_s_per_trial": budget["optimizer_s_per_trial"],
            "finished_trials": trials["completed"] + trials["failed"], "process_wall_s": wall}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wall-time", type=float, default=200.0, help="seconds of search per run (default 200)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per setting (default 2)")
    ap.add_argument("--out", type=Path, help="write the runs and medians here as JSON")
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    settings = ["auto", cores]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="mfbo-bench-threads-") as tmp:
        for r in range(args.repeats):
            for s in settings:
                run = run_once(Path(tmp), f"{s}-{r}", args.wall_time, s)
                runs.append(run)
                print(f"repeat {r}, driver_threads={s}: optimiser {run['optimizer_s']:.1f} s "
                      f"({100 * run['optimizer_share']:.1f} % of the wall time, {run['optimizer_s_per_trial']:.2f} s "
                      f"per trial), {run['finished_trials']} trials", flush=True)
    med = {}
    for s in settings:
        mine = [r for r in runs if r["setting"] == str(s)]
        med[str(s)] = {k: statistics.median(r[k] for r in mine)
                       for k in ("optimizer_s", "optimizer_share", "optimizer_s_per_trial", "finished_trials")}
    auto, base = med["auto"], med[str(cores)]
    ratios = {k: auto[k] / base[k] for k in auto if base[k]}
    print(f"\n{cores} cores, 2 workers, {args.wall_time:g} s of search, {args.repeats} runs per setting (medians):")
    for s in settings:
        m = med[str(s)]
        print(f"  driver_threads={s!s:>5}: optimiser {m['optimizer_s']:.1f} s, {100 * m['optimizer_share']:.1f} % of "
              f"the wall time, {m['optimizer_s_per_trial']:.2f} s per trial, {m['finished_trials']:g} trials")
    print("  ratio auto / default: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"cores": cores, "wall_time_s": args.wall_time, "repeats": args.repeats,
                                        "runs": runs, "medians": med, "ratios": ratios}, indent=1) + "\n")


if __name__ == "__main__":
    main()
