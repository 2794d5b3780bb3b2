"""DEHB and SMAC3's multi-fidelity facade, run in their own interpreter across a process boundary.

``dehb`` 0.1.2 requires numpy < 2 and SMAC 2.4 pins ConfigSpace 1.2.0, neither of which this environment
may get, so both live in a separate virtualenv (built by ``.ci/setup-peers.sh``). The peer runs in that
interpreter (:mod:`._peer_driver`) and asks this process to evaluate configurations over JSON lines on
its stdin/stdout; the objective, its noise stream and the budget accounting stay here, exactly as for the
in-process baselines (:class:`~._common.BudgetTracker`).

Interpreter: the ``python=`` option, else ``$MFBO_PEERS_PYTHON``, else
``$MFBO_PEERS_ENV/venv/bin/python`` (default ``~/.cache/mfbo/peers-1``). Absent: :class:`BackendUnavailable`
naming the setup script.

Both peers search the epoch fidelity (data fraction at target, as ``optuna-tpe-hb`` and ``hyperband``),
from the space's lowest epoch count to its target, with eta = 3. A configuration evaluated again at more
epochs is charged only the extra epochs (a checkpoint continuation, as for Hyperband); a new configuration
pays its whole run. The recommendation after every evaluation is the peer's own incumbent.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mfbo.errors import BackendUnavailable, ConfigError, OptimizerError
from mfbo.optimize._types import MinimizeResult
from mfbo.optimize.baselines._common import BudgetTracker

__all__ = ["dehb", "smac_mf", "peers_python", "PEERS_SETUP"]

PEERS_SETUP = ".ci/setup-peers.sh"
DRIVER = Path(__file__).with_name("_peer_driver.py")


def peers_python(python: str | os.PathLike | None = None) -> Path:
    """The peers' interpreter (see the module docstring); BackendUnavailable if it is absent."""
    if python is None:
        python = os.environ.get("MFBO_PEERS_PYTHON")
    if python is None:
        env = Path(os.environ.get("MFBO_PEERS_ENV", Path.home() / ".cache" / "mfbo" / "peers-1"))
        python = env / "venv" / "bin" / "python"
    path = Path(python)
    if not path.is_file():
        raise BackendUnavailable(f"the DEHB/SMAC3 interpreter {path} does not exist; build it with `bash "
                                 f"{PEERS_SETUP}` (or set MFBO_PEERS_PYTHON)")
    return path


def _design_space(space) -> dict:
    out = {}
    for p in space.design_parameters:
        if p.type == "categorical":
            out[p.name] = {"type": "categorical", "choices": list(p.choices)}
        else:
            out[p.name] = {"type": p.type, "bounds": [p.low, p.high], **({"scale": "log"} if p.log else {})}
    return out


def _run_peer(method: str, objective: Any, space: Any, budget: float, seed: int, constraints: Sequence[Any],
              callback: Any, python, eta: int, timeout_s: float) -> MinimizeResult:
    tr = BudgetTracker(objective, space, budget, method, callback)
    if tr.space.iteration_fidelity is None:
        raise ConfigError(f"{method} needs an iteration (epochs) fidelity in the search space")
    if constraints:
        raise ConfigError(f"{method}: constraints are not supported across the process boundary")
    exe = peers_python(python)
    setup = {"method": method, "space": _design_space(tr.space), "min_epochs": tr.min_epochs,
             "max_epochs": tr.target_epochs, "eta": int(eta), "seed": int(seed)}
    # -I: isolated mode, so the driver's folder (whose _random.py would shadow the C module) is not on sys.path.
    # stderr to a file: the peers log freely, and a full pipe would block them
    errfile = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
    proc = subprocess.Popen([str(exe), "-I", str(DRIVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=errfile, text=True, bufsize=1,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""})
    trained: dict[str, int] = {}  # configuration -> epochs it has been trained for
    best_observed = (math.inf, None)
    incumbent = None
    error = None
    try:
        proc.stdin.write(json.dumps(setup) + "\n")
        proc.stdin.flush()
        while True:
            line = proc.stdout.readline()
            if not line:
                error = "the peer process ended without saying done"
                break
            msg = json.loads(line)
            op = msg.get("op")
            if op == "eval":
                if tr.exhausted:
                    proc.stdin.write(json.dumps({"stop": True}) + "\n")
                    proc.stdin.flush()
                    continue
                config = tr.space.validate(msg["config"])
                epochs = int(msg["epochs"])
                curve, cost = tr.call(config, None, epochs)
                key = json.dumps(config, sort_keys=True)
                before = trained.get(key, 0)
                charged = cost * max(epochs - before, 0) / epochs if before < epochs else 0.0
                trained[key] = max(before, epochs)
                tr.record(config, None, epochs, curve, charged, metadata={"continued_from": min(before, epochs)})
                value = float(curve[-1])
                if value < best_observed[0]:
                    best_observed = (value, config)
                proc.stdin.write(json.dumps({"value": value if math.isfinite(value) else 1e300,
                                             "cost": cost}) + "\n")
                proc.stdin.flush()
            elif op == "incumbent":
                if msg.get("config") is not None:
                    incumbent = tr.space.validate(msg["config"])
                tr.note(incumbent or best_observed[1])
            elif op == "done":
                break
            elif op == "error":
                error = msg.get("message", "unknown error")
                break
            else:
                error = f"unexpected message {line.strip()[:200]!r}"
                break
    except (BrokenPipeError, json.JSONDecodeError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        errfile.seek(0)
        err = errfile.read()
        errfile.close()
    if error is not None:
        tail = " | ".join((err or "").strip().splitlines()[-3:])
        raise OptimizerError(f"{method} (in {exe}): {error}" + (f"; its stderr ends: {tail}" if tail else ""))
    versions = _versions(exe)
    return tr.result(incumbent or best_observed[1],
                     {"eta": eta, "peer_python": str(exe), "peer_versions": versions,
                      "best_observed": best_observed[0]})


_VERSIONS: dict[str, dict] = {}


def _versions(exe: Path) -> dict:
    key = str(exe)
    if key not in _VERSIONS:
        code = ("import json, importlib.metadata as m\nout = {}\nfor p in ('dehb', 'smac', 'ConfigSpace', 'numpy'):\n"
                "    try: out[p] = m.version(p)\n    except m.PackageNotFoundError: pass\nprint(json.dumps(out))")
        try:
            res = subprocess.run([str(exe), "-c", code], capture_output=True, text=True, timeout=60)
            _VERSIONS[key] = json.loads(res.stdout) if res.returncode == 0 else {}
        except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
            _VERSIONS[key] = {}
    return _VERSIONS[key]


def dehb(objective: Any, space: Any, budget: float, seed: int = 0, workers: int = 1, prior: Any = None,
         constraints: Sequence[Any] = (), callback: Any = None, python: str | None = None, eta: int = 3,
         timeout_s: float = 60.0) -> MinimizeResult:
    """DEHB (Awad, Mallik & Hutter 2021; ``dehb`` 0.1.2, its defaults: mutation 0.5, crossover 0.5,
    rand1_bin) on the epoch fidelity, in the peers' interpreter.

    Args:
        objective, space, budget, seed, workers, prior, constraints, callback: as in :func:`mfbo.minimize`
            (``workers`` and ``prior`` are ignored; constraints are refused).
        python: the peers' interpreter (default: see :func:`peers_python`).
        eta: DEHB's successive-halving factor.
        timeout_s: seconds to wait for the peer process to exit after the budget is spent.
    """
    return _run_peer("dehb", objective, space, budget, seed, constraints, callback, python, eta, timeout_s)


def smac_mf(objective: Any, space: Any, budget: float, seed: int = 0, workers: int = 1, prior: Any = None,
            constraints: Sequence[Any] = (), callback: Any = None, python: str | None = None, eta: int = 3,
            timeout_s: float = 60.0) -> MinimizeResult:
    """SMAC3's ``MultiFidelityFacade`` (random forest + Hyperband intensifier, its defaults) on the epoch
    fidelity, in the peers' interpreter; arguments as :func:`dehb`."""
    return _run_peer("smac-mf", objective, space, budget, seed, constraints, callback, python, eta, timeout_s)
