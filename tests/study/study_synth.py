"""A fast synthetic objective for the study tests (loaded by dotted path 'study_synth:make').

The loss decays with epochs towards an asymptote that depends on (x, y) and worsens as the data
fraction shrinks. A *script* makes chosen calls misbehave, in call order (counted across processes
with exclusive file creation): "sigkill" (the worker process kills itself, like an OOM kill),
"diverge" (raises TrainingDiverged), "hang" (sleeps past any trial timeout), "fail" (raises).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from mfbo.errors import TrainingDiverged

SPACE = {
    "x": {"type": "float", "bounds": [0.0, 1.0]},
    "y": {"type": "float", "bounds": [0.0, 1.0]},
}


def loss(params: dict, data_fraction: float, epoch: int) -> float:
    asym = (params["x"] - 0.3) ** 2 + (params["y"] - 0.7) ** 2 + 0.1 + 0.3 * (1.0 - data_fraction)
    return asym + 0.5 / epoch**0.7


class Synth:
    """Args: delay (s per full-fidelity epoch), script_dir (call counter folder), script ({call: action}),
    always_fail (every call raises)."""

    def __init__(self, delay: float = 0.0, script_dir: str | None = None, script: dict | None = None,
                 always_fail: bool = False):
        self.delay = float(delay)
        self.script_dir = script_dir
        self.script = {int(k): v for k, v in (script or {}).items()}
        self.always_fail = always_fail

    def _call_number(self) -> int:
        if not self.script_dir:
            return -1
        d = Path(self.script_dir)
        d.mkdir(parents=True, exist_ok=True)
        i = 0
        while True:
            try:
                fd = os.open(d / f"call_{i:04d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                i += 1
                continue
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            return i

    def evaluate(self, params: dict, data_fraction: float, epochs: int) -> dict:
        n = self._call_number()
        action = self.script.get(n)
        if self.always_fail or action == "fail":
            raise ValueError("synthetic failure: this objective always fails")
        if action == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "hang":
            time.sleep(600)
        if action == "diverge":
            raise TrainingDiverged("loss became nan", epoch=2, last_metrics={"val_energy_mae_per_atom": 1.5})
        t0 = time.perf_counter()
        curve, records = [], []
        for e in range(1, int(epochs) + 1):
            time.sleep(self.delay * data_fraction)
            v = loss(params, data_fraction, e)
            curve.append(v)
            records.append({"epoch": e, "val_energy_mae_per_atom": v, "wall_time": time.perf_counter() - t0})
        return {"curve": curve, "cost": max(time.perf_counter() - t0, 1e-3), "records": records,
                "metadata": {"calls": n}}


def make(**kwargs) -> Synth:
    return Synth(**kwargs)
