"""Drive DEHB or SMAC3 in their own interpreter; the objective is evaluated by the parent process.

This file runs under the peers' virtualenv (``.ci/setup-peers.sh``: numpy < 2, ``dehb``, ``smac``), which
cannot import mfbo, so it uses the standard library and the peer packages only. Protocol, one JSON object
per line:

- parent -> driver, first line: ``{"method": "dehb" | "smac-mf", "space": {name: spec}, "min_epochs",
  "max_epochs", "eta", "seed"}`` (``space`` holds the design parameters in mfbo's dict form);
- driver -> parent: ``{"op": "eval", "config": {...}, "epochs": int}``; the parent answers
  ``{"value": float, "cost": float}`` or ``{"stop": true}`` (budget spent: the driver then ends);
- driver -> parent after every told result: ``{"op": "incumbent", "config": {...} | null}`` (the peer's own
  recommendation);
- driver -> parent at the end: ``{"op": "done"}``; on an error ``{"op": "error", "message": "..."}``.

The peer's stdout is kept for the protocol: anything the packages print goes to stderr.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile

_OUT = sys.stdout


def _send(obj: dict) -> None:
    _OUT.write(json.dumps(obj) + "\n")
    _OUT.flush()


def _receive() -> dict:
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(0)  # the parent went away
    return json.loads(line)


def _configspace(space: dict, seed: int):
    import ConfigSpace as CS

    cs = CS.ConfigurationSpace(seed=seed)
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "categorical":
            cs.add(CS.CategoricalHyperparameter(name, list(spec["choices"])))
        elif kind == "int":
            lo, hi = spec["bounds"]
            cs.add(CS.UniformIntegerHyperparameter(name, int(lo), int(hi), log=spec.get("scale") == "log"))
        elif kind == "float":
            lo, hi = spec["bounds"]
            cs.add(CS.UniformFloatHyperparameter(name, float(lo), float(hi), log=spec.get("scale") == "log"))
        else:
            raise ValueError(f"parameter {name!r}: type {kind!r} is not supported by the peer driver")
    return cs


def _plain(config, space: dict) -> dict:
    out = {}
    for name, spec in space.items():
        v = config[name]
        if spec["type"] == "int":
            v = int(v)
        elif spec["type"] == "float":
            v = float(v)
        elif hasattr(v, "item"):
            v = v.item()
        out[name] = v
    return out


def _evaluate(config: dict, epochs: int) -> dict | None:
    _send({"op": "eval", "config": config, "epochs": int(epochs)})
    reply = _receive()
    return None if reply.get("stop") else reply


def run_dehb(setup: dict) -> None:
    from dehb import DEHB

    space = setup["space"]
    cs = _configspace(space, setup["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        opt = DEHB(cs=cs, dimensions=len(cs.values()), min_fidelity=setup["min_epochs"],
                   max_fidelity=setup["max_epochs"], eta=setup["eta"], n_workers=1, seed=setup["seed"],
                   output_path=tmp, save_freq=None)
        while True:
            job = opt.ask()
            config = _plain(job["config"], space)  # a ConfigSpace Configuration
            epochs = int(round(job["fidelity"]))
            reply = _evaluate(config, epochs)
            if reply is None:
                break
            value = float(reply["value"])
            opt.tell(job, {"fitness": value if math.isfinite(value) else 1e300, "cost": float(reply["cost"])})
            inc, _ = opt.get_incumbents()
            _send({"op": "incumbent", "config": None if inc is None else _plain(inc, space)})


def run_smac_mf(setup: dict) -> None:
    from smac import MultiFidelityFacade, Scenario
    from smac.runhistory.dataclasses import TrialValue

    space = setup["space"]
    cs = _configspace(space, setup["seed"])
    with tempfile.TemporaryDirectory() as tmp:
        scenario = Scenario(cs, n_trials=10 ** 7, min_budget=setup["min_epochs"], max_budget=setup["max_epochs"],
                            seed=setup["seed"], output_directory=tmp)
        intensifier = MultiFidelityFacade.get_intensifier(scenario, eta=setup["eta"])

        def never_called(config, seed: int = 0, budget: float = 0.0) -> float:  # ask/tell only
            raise RuntimeError("the target function is evaluated by the parent process")

        smac = MultiFidelityFacade(scenario, never_called, intensifier=intensifier, overwrite=True,
                                   logging_level=40)
        best = (math.inf, None)
        while True:
            info = smac.ask()
            config = _plain(info.config, space)
            epochs = int(round(info.budget if info.budget is not None else setup["max_epochs"]))
            reply = _evaluate(config, epochs)
            if reply is None:
                break
            value = float(reply["value"])
            smac.tell(info, TrialValue(cost=value if math.isfinite(value) else 1e300, time=float(reply["cost"])))
            if value < best[0]:
                best = (value, config)
            inc = smac.intensifier.get_incumbent()
            _send({"op": "incumbent", "config": _plain(inc, space) if inc is not None else best[1]})


def main() -> int:
    global _OUT
    _OUT = sys.stdout
    sys.stdout = sys.stderr  # whatever the packages print must not reach the protocol stream
    setup = json.loads(sys.stdin.readline())
    try:
        {"dehb": run_dehb, "smac-mf": run_smac_mf}[setup["method"]](setup)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it as an OptimizerError
        _send({"op": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    _send({"op": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
