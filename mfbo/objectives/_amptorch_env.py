"""AMPTorch's own interpreter: finding it, running the worker there, and the smoke check.

AMPTorch needs numpy < 1.24 and skorch 0.10 while mfbo needs numpy >= 1.24, so AMPTorch runs in
a second Python environment (docs/amptorch.md: the two-environment set-up). Its interpreter is,
in this order: the ``python`` option of the objective (``[objective.options] python = PATH``),
the environment variable ``MFBO_AMPTORCH_PYTHON``, or the environment ``.ci/setup-amptorch.sh``
builds (``$MFBO_AMPTORCH_ENV``, default ``~/.cache/mfbo/amptorch-02e5af3``, interpreter
``venv/bin/python``).

"Fails at once": :func:`smoke_check` trains one epoch on two tiny images in that interpreter,
through the same worker as every trial, and turns any failure into one line naming the
interpreter and AMPTorch's exact error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mfbo.errors import BackendUnavailable, ObjectiveError, TrainingDiverged

__all__ = [
    "AMPTORCH_INSTALL_HELP",
    "ENV_VAR",
    "amptorch_available",
    "default_env_dir",
    "find_python",
    "require_amptorch",
    "run_worker",
    "smoke_check",
    "tiny_images",
]

ENV_VAR = "MFBO_AMPTORCH_PYTHON"

AMPTORCH_INSTALL_HELP = (
    "AMPTorch runs in its own Python environment (it needs numpy < 1.24, skorch 0.10, setuptools < 81, "
    "torch-geometric and torch-scatter or a stand-in; AMPTorch itself from its GitHub repository "
    "github.com/ulissigroup/amptorch with `pip install -e .`): build one as docs/amptorch.md describes "
    "(.ci/setup-amptorch.sh does it from a source archive), then name its interpreter with "
    "`python = PATH` in the study's [objective.options] or the environment variable MFBO_AMPTORCH_PYTHON. "
    "Or use mfbo's built-in trainer (backend = \"builtin\"), which needs none of this."
)

# The mfbo checkout/installation the worker imports its few mfbo modules from.
_MFBO_ROOT = str(Path(__file__).resolve().parents[2])
# Smoke fits that passed in this process: (interpreter, config JSON) -> what it reported.
_SMOKE_PASSED: dict[tuple[str, str], dict[str, Any]] = {}


def default_env_dir() -> Path:
    """Where ``.ci/setup-amptorch.sh`` builds AMPTorch's environment (``$MFBO_AMPTORCH_ENV`` overrides)."""
    env = os.environ.get("MFBO_AMPTORCH_ENV")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mfbo" / "amptorch-02e5af3"


def find_python(python: str | os.PathLike | None = None) -> str:
    """The interpreter AMPTorch runs in: ``python``, else ``$MFBO_AMPTORCH_PYTHON``, else the default env.

    Raises:
        BackendUnavailable: the named interpreter does not exist, or none is named and the
            default environment is absent (the message says how to build one).
    """
    for value, origin in ((python, "objective option python"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if value:
            path = Path(value).expanduser()
            if not (path.is_file() and os.access(path, os.X_OK)):
                raise BackendUnavailable(
                    f"objective backend 'amptorch': {origin} = {value} is not an executable Python "
                    f"interpreter. {AMPTORCH_INSTALL_HELP}"
                )
            return str(path)
    default = default_env_dir() / "venv" / "bin" / "python"
    if default.is_file():
        return str(default)
    raise BackendUnavailable(
        f"objective backend 'amptorch': no AMPTorch interpreter named ({ENV_VAR} is unset and {default} "
        f"does not exist). {AMPTORCH_INSTALL_HELP}"
    )


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # A trial killed by its time limit must not leave AMPTorch training on as an orphan.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def worker_env(threads: int = 1) -> dict[str, str]:
    """Environment of the worker process: mfbo importable, ``threads`` OpenMP/MKL threads.

    ``PYTHONPATH`` is mfbo's root only: paths of mfbo's own environment must not leak numpy 2
    into AMPTorch's.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = _MFBO_ROOT
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(int(threads))
    env["PYTHONWARNINGS"] = "ignore"  # skorch 0.10's pkg_resources warning etc. would fill the log
    return env


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def run_worker(python: str, request: Mapping[str, Any], workdir: str | os.PathLike,
               timeout: float | None = None) -> dict[str, Any]:
    """Run one request through ``python -m mfbo.objectives._amptorch_worker``; return its result.

    Args:
        python: AMPTorch's interpreter.
        request: the worker's request (``result`` is filled in); see ``_amptorch_worker``.
        workdir: folder for the request, the result and the worker's log (``worker.log``).
        timeout: seconds before the worker is killed (None: no limit of its own; a study's
            trial or final time limit kills it with the trial, as it dies with its parent).

    Raises:
        TrainingDiverged: AMPTorch's run diverged (epoch and last finite record carried over).
        ObjectiveError: any other failure, in one line: AMPTorch's exception type and message,
            or the worker's last output line when it died without a result.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    req = dict(request)
    req["result"] = str(workdir / "result.json")
    req_path = workdir / "request.json"
    req_path.write_text(json.dumps(req))
    log_path = workdir / "worker.log"
    cmd = [python, "-m", "mfbo.objectives._amptorch_worker", str(req_path)]
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.run(cmd, cwd=workdir, env=worker_env(int(req.get("threads") or 1)), stdout=log,
                                  stderr=subprocess.STDOUT, timeout=timeout,
                                  preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    except subprocess.TimeoutExpired:
        raise ObjectiveError(f"AMPTorch worker ({python}) timed out after {timeout:g} s") from None
    except OSError as exc:
        raise ObjectiveError(f"cannot start AMPTorch's interpreter {python}: {exc}") from None
    result_path = Path(req["result"])
    if not result_path.is_file():
        out = log_path.read_text(errors="replace") if log_path.is_file() else ""
        raise ObjectiveError(f"AMPTorch worker ({python}) exited with code {proc.returncode} without a result: "
                             f"{_last_line(out)}")
    result = json.loads(result_path.read_text())
    if not result.get("ok"):
        message = result.get("message") or "unknown error"
        if result.get("error_type") == "TrainingDiverged":
            raise TrainingDiverged(message, epoch=int(result.get("epoch") or 0),
                                   last_metrics=result.get("last_metrics"))
        raise ObjectiveError(f"AMPTorch failed: {result.get('error_type')}: {message}")
    return result


def tiny_images(elements: Sequence[str], n: int = 2) -> list:
    """``n`` tiny images holding each element once (a zig-zag chain 1.5 Å apart, in a 10 Å box).

    Energies (eV) and forces (eV/Å) are made up but differ between images, so that AMPTorch's
    target and feature scalers see a spread. For the smoke fit only.
    """
    import numpy as np
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    symbols = sorted(set(elements)) or ["H"]
    if len(symbols) == 1:
        symbols = symbols * 2
    images = []
    for k in range(n):
        positions = np.array([[1.5 * i + 0.1 * k, 0.4 * (i % 2), 0.05 * k * i] for i in range(len(symbols))]) + 3.0
        atoms = Atoms(symbols, positions=positions, cell=[10.0 + 1.5 * len(symbols)] * 3, pbc=False)
        forces = np.sin(np.arange(3 * len(symbols), dtype=float) + k).reshape(-1, 3) * 0.1
        atoms.calc = SinglePointCalculator(atoms, energy=-1.0 * len(symbols) - 0.3 * k, forces=forces)
        images.append(atoms)
    return images


def smoke_config(config: Mapping[str, Any], elements: Sequence[str], run_dir: str) -> dict[str, Any]:
    """``config`` (JSON form) cut down to a 1-epoch, batch-of-1, 2-image run in ``run_dir``."""
    out = json.loads(json.dumps(config))
    out["optim"]["epochs"] = 1
    out["optim"]["batch_size"] = 1
    out["optim"]["gpus"] = 0
    if out["optim"].get("scheduler", {}).get("policy") == "CosineAnnealingLR":
        out["optim"]["scheduler"]["params"]["T_max"] = 1
    out["dataset"]["raw_data"] = "<smoke images>"
    out["dataset"]["val_split"] = 0.75  # int(2 * 0.75) = 1 image held out (the worker's tail split)
    out["dataset"]["val_split_mode"] = "inorder"
    out["dataset"]["save_fps"] = False
    out["dataset"]["elements"] = sorted(set(elements))
    out["cmd"]["run_dir"] = run_dir
    out["cmd"]["debug"] = True
    out["cmd"]["logger"] = False
    return out


def smoke_check(python: str, config: Mapping[str, Any], elements: Sequence[str] | None = None,
                *, threads: int = 1, cache: bool = True) -> dict[str, Any]:
    """Train ``config`` for one epoch on two tiny images in AMPTorch's interpreter ``python``.

    Args:
        python: AMPTorch's interpreter.
        config: an AtomsTrainer config in JSON form (dotted torch names); its data, epochs and
            batch size are replaced.
        elements: elements of the tiny images (default: the config's ``elements``, else its
            ``atom_gaussians`` elements).
        threads: torch threads.
        cache: skip the run when the same interpreter passed with the same config before in
            this process.

    Returns:
        ``{"python", "seconds", "versions"}`` (AMPTorch, numpy, skorch, torch, Python).

    Raises:
        BackendUnavailable: one line naming the interpreter and AMPTorch's exact error.
    """
    key = (python, json.dumps(config, sort_keys=True, default=str))
    if cache and key in _SMOKE_PASSED:
        return _SMOKE_PASSED[key]
    import ase.io

    dataset = config.get("dataset", {})
    elements = list(elements or dataset.get("elements") or dataset.get("fp_params", {}).get("atom_gaussians", {})
                    or ["H", "O"])
    t0 = time.perf_counter()
    folder = tempfile.mkdtemp(prefix="mfbo-amptorch-smoke-")
    try:
        images_path = os.path.join(folder, "images.traj")
        ase.io.write(images_path, tiny_images(elements))
        request = {"config": smoke_config(config, elements, os.path.join(folder, "run")), "raw_data": images_path,
                   "n_val": 1, "divergence_factor": 1e12, "threads": threads}
        try:
            result = run_worker(python, request, folder, timeout=600)
        except ObjectiveError as exc:
            raise BackendUnavailable(f"objective backend 'amptorch': the 1-epoch smoke fit in {python} failed: "
                                     f"{exc}. {AMPTORCH_INSTALL_HELP}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    info = {"python": python, "seconds": time.perf_counter() - t0, "versions": result.get("versions", {})}
    _SMOKE_PASSED[key] = info
    return info


def _default_smoke_config() -> dict[str, Any]:
    from mfbo.objectives._amptorch_config import build_amptorch_config, config_to_jsonable

    images = tiny_images(["H", "O"])
    config = build_amptorch_config({}, None, train_images=images[:1], val_images=images[1:], epochs=1,
                                   torch_objects=False)
    config["dataset"]["raw_data"] = "<smoke images>"
    return config_to_jsonable(config)


def require_amptorch(python: str | os.PathLike | None = None) -> str:
    """Find AMPTorch's interpreter and run the smoke fit there; return the interpreter's path.

    Raises:
        BackendUnavailable: no interpreter, or the smoke fit failed (one line, AMPTorch's error).
    """
    path = find_python(python)
    smoke_check(path, _default_smoke_config())
    return path


def amptorch_available(python: str | os.PathLike | None = None) -> bool:
    """True when an AMPTorch interpreter is found and its smoke fit passes."""
    try:
        require_amptorch(python)
    except BackendUnavailable:
        return False
    return True
