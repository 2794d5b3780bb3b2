"""Helpers shared across test folders: the real ``mfbo`` CLI in a subprocess, tiny study files on the
bundled water data for the trainer backends (builtin, amptorch), and whether a process has ended."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WATER = REPO / "mfbo" / "datasets" / "water_2d.traj"

# Small fingerprints (2 sigmas x orders 0-1, cutoff 4 Å) keep featurisation quick in both backends.
TINY_FP = {"cutoff": 4.0, "MCSHs": {"0": {"groups": [1], "sigmas": [0.4, 1.0]},
                                    "1": {"groups": [1], "sigmas": [0.4, 1.0]}}}
# A cheap initial design, then a few model-based asks.
TINY_STUDY_OPTIMIZER = {"n_initial": 2, "raw_samples": 64, "num_restarts": 1}


def load_analysis_script(relative: str, name: str | None = None):
    """A script under ``analysis/`` (not a package) imported as a module named ``name`` (default: its stem)."""
    import importlib.util

    path = REPO / "analysis" / relative
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cli_env(drop: Iterable[str] = (), **extra: str) -> dict:
    """The environment of a CLI subprocess: one torch/OpenMP thread, this checkout first on the path.

    Args:
        drop: variables to remove (e.g. ``MFBO_AMPTORCH_PYTHON``, to test what happens without it).
        extra: variables to set.
    """
    env = {k: v for k, v in os.environ.items() if k not in set(drop)}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", "")})
    env.update(extra)
    return env


def run_cli(*args, cwd=None, env=None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m mfbo.cli ARGS`` in a subprocess (text output captured)."""
    return subprocess.run([sys.executable, "-m", "mfbo.cli", *map(str, args)], cwd=cwd, env=env or cli_env(),
                          capture_output=True, text=True, timeout=timeout)


def water_study(path: Path, *, backend: str = "builtin", name: str | None = None, train: str = "bundled:water",
                data: dict | None = None, options: dict | None = None, metric: str | None = "val_energy_mae_per_atom",
                base_config: dict | None = None, space: dict | None = None, epochs=(1, 3),
                data_fraction=(0.5, 1.0), budget_ffe: float = 0.5, execution: dict | None = None,
                final: dict | None = None, priors: list | None = None, optimizer: dict | None = TINY_STUDY_OPTIMIZER,
                seed: int = 3) -> Path:
    """Write a small study of a trainer backend on the bundled water data and return its path.

    Args:
        path: the study file (TOML) to write; the study's output is ``run`` beside it.
        train: ``data.train``; ``data`` adds or overrides other ``[data]`` fields (test, subsample, ...).
        options: ``objective.options`` (e.g. the amptorch backend's ``python``).
        metric: ``objective.metric`` (None: the backend's default).
        base_config: ``objective.base_config`` (default: batch size 8 and :data:`TINY_FP`; ``{}``: none).
        space: the ``[space]`` table (default: learning rate and width).
        priors: ``priors.files``; ``optimizer``: ``optimizer.options`` (None: the defaults).
    """
    import tomli_w

    objective: dict = {"backend": backend}
    if metric is not None:
        objective["metric"] = metric
    if options:
        objective["options"] = options
    base_config = {"batch_size": 8, "fp_params": TINY_FP} if base_config is None else base_config
    if base_config:
        objective["base_config"] = base_config
    doc: dict = {
        "study": {"name": name or path.stem, "output": "run", "seed": seed},
        "data": {"train": train, **(data or {})},
        "objective": objective,
        "space": space if space is not None else {
            "lr": {"type": "float", "bounds": [1e-3, 1e-2], "scale": "log"},
            "num_nodes": {"type": "int", "bounds": [4, 12]},
        },
        "fidelity": {"data_fraction": list(data_fraction), "epochs": list(epochs)},
        "budget": {"ffe": budget_ffe},
    }
    if execution:
        doc["execution"] = execution
    if final:
        doc["final"] = final
    if priors:
        doc["priors"] = {"files": [str(p) for p in priors]}
    if optimizer is not None:
        doc["optimizer"] = {"options": optimizer}
    path.write_text(tomli_w.dumps(doc))
    return path


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed child of an orphaned process may
    linger as one until init reaps it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def process_gone(pid: int, deadline_s: float = 30.0) -> bool:
    """Wait up to ``deadline_s`` (a hang guard, not a timing assertion) for ``pid`` to end; whether it did."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.05)
    return False
