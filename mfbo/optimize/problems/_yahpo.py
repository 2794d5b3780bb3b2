"""Real-world surrogate benchmarks from YAHPO Gym, evaluated directly with onnxruntime.

YAHPO Gym (Pfisterer, Schneider, Moosbauer, Binder & Bischl, 2022; Apache-2.0,
https://github.com/slds-lmu/yahpo_gym) ships each scenario as an ONNX surrogate plus
``encoding.json`` and ``config_space.json``. The ``yahpo-gym`` package itself pins
``ConfigSpace<=0.6.1`` and, through it, ``numpy<2``, which would break this environment, so these
problems feed the surrogate directly in YAHPO's own input layout (categoricals integer-encoded with
``encoding.json``, numeric inputs in their natural units, inactive ones as 0 / ``#na#``).

Scenarios (data directory: the ``data_dir`` argument, else ``$MFBO_YAHPO_DATA``, else
``../shared/data/yahpo`` next to the repository):

- ``yahpo_lcbench``: LCBench (Zimmer, Lindauer & Hutter 2021) MLP on OpenML task ``189906`` by default;
  7 hyperparameters; iteration fidelity ``epochs`` 1-52 (no data fidelity); minimise validation
  cross-entropy; cost = the surrogate's predicted runtime ``time`` (s).
- ``yahpo_rbv2_xgboost``: rbv2 XGBoost (Binder, Pfisterer & Bischl 2020) on OpenML task ``1489`` by
  default; 12 hyperparameters incl. the ``booster`` categorical; data fidelity ``data_fraction`` =
  YAHPO's ``trainsize`` 0.03-1; iteration fidelity ``epochs`` 1-30 where epoch ``e`` means
  ``nrounds = round(2981 * e / 30)`` boosting rounds; minimise log-loss; cost = predicted ``timetrain`` (s);
  ``repl`` fixed to 10 and ``num.impute.selected.cpo`` to ``impute.median``.

The surrogates are deterministic, so ``value_at_target`` equals the last curve point at target fidelity.
``optimum_value`` is the best value found by the search in ``analysis/benchmarks/yahpo_optimum.py``
(best-known, not proven).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mfbo.errors import BackendUnavailable, ConfigError, DataError
from mfbo.optimize._space import SearchSpace
from mfbo.optimize.problems._base import Problem

__all__ = ["YahpoLCBench", "YahpoRBv2XGBoost", "default_yahpo_dir", "BEST_KNOWN"]

# Best-known values at target fidelity, from analysis/benchmarks/yahpo_optimum.py
# (random search + local refinement; see analysis/benchmarks/results/yahpo_optima.json).
BEST_KNOWN: dict[tuple[str, str], float] = {
    ("yahpo_lcbench", "189906"): 0.13219669461250305,  # 131072 Sobol points + 30 Nelder-Mead refinements
    ("yahpo_rbv2_xgboost", "1489"): 0.08606785535812378,
}


def default_yahpo_dir() -> Path:
    """``$MFBO_YAHPO_DATA`` if set, else ``../shared/data/yahpo`` beside the repository."""
    env = os.environ.get("MFBO_YAHPO_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "yahpo"


class _YahpoProblem(Problem):
    scenario: str = ""
    cont_names: tuple[str, ...] = ()
    cat_names: tuple[str, ...] = ()
    y_names: tuple[str, ...] = ()
    instance_name: str = ""
    metric: str = ""
    runtime_name: str = ""

    def __init__(self, seed: int = 0, task_id: str | None = None, data_dir: str | os.PathLike | None = None,
                 optimum_value: float | None = None):
        super().__init__(seed)
        try:
            import onnxruntime  # noqa: F401
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise BackendUnavailable(
                f"{self.name} needs onnxruntime: pip install onnxruntime (or mfbo[bench])") from exc
        self.data_dir = Path(data_dir) if data_dir is not None else default_yahpo_dir()
        folder = self.data_dir / self.scenario
        for fname in ("model.onnx", "encoding.json"):
            if not (folder / fname).is_file():
                raise DataError(
                    f"{self.name}: {folder / fname} not found; pass data_dir= or set MFBO_YAHPO_DATA to the "
                    "folder holding YAHPO Gym's surrogate data (one sub-folder per scenario)")
        self.model_path = str(folder / "model.onnx")
        self.encoding = json.loads((folder / "encoding.json").read_text())
        self.task_id = str(task_id if task_id is not None else self.default_task)
        if self.task_id not in self.encoding[self.instance_name]:
            known = sorted(k for k in self.encoding[self.instance_name] if k != "#na#")
            raise ConfigError(f"{self.name}: unknown task_id {self.task_id!r}; choose one of {known}")
        self._session = None
        self.space = self._make_space()
        self.full_fidelity_cost = self._reference_cost()
        if optimum_value is None:
            optimum_value = BEST_KNOWN.get((self.name, self.task_id), math.nan)
        self.optimum_value = float(optimum_value)

    default_task = ""

    # -- onnxruntime session: not picklable, so it is rebuilt lazily in each process ----------------
    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    @property
    def session(self):
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            # One thread: benchmarks run many problems in parallel processes.
            opts.intra_op_num_threads = 1
            opts.inter_op_num_threads = 1
            self._session = ort.InferenceSession(self.model_path, sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        return self._session

    def predict(self, rows: list[Mapping[str, Any]]) -> np.ndarray:
        """Raw surrogate outputs for YAHPO-layout rows: ``(n, len(y_names))``."""
        x_cat = np.array([[self.encoding[c][str(r.get(c, "#na#"))] for c in self.cat_names] for r in rows],
                         dtype=np.int32)
        x_cont = np.array([[float(r.get(c, 0.0)) for c in self.cont_names] for r in rows], dtype=np.float32)
        return self.session.run(None, {"x_cat": x_cat, "x_cont": x_cont})[0].astype(float)

    def _rows(self, params: Mapping[str, Any], data_fraction: float, epochs: int) -> list[dict]:
        raise NotImplementedError

    def _evaluate(self, params, data_fraction, epochs, rng):
        out = self.predict(self._rows(params, data_fraction, epochs))
        curve = out[:, self.y_names.index(self.metric)]
        # Runtime of a run to `epochs`: the last row's predicted cumulative time (clipped positive).
        cost = max(float(out[-1, self.y_names.index(self.runtime_name)]), 1e-3)
        return curve, cost

    def value_at_target(self, params: Mapping[str, Any]) -> float:
        return float(self.values_at_target([params])[0])

    def values_at_target(self, configs: list[Mapping[str, Any]]) -> np.ndarray:
        """Noise-free target-fidelity values of many configurations at once: ``(n,)``."""
        df, ep = self._fidelities(None, None)
        rows = [self._rows(self.space.validate(c), df, ep)[-1] for c in configs]
        return self.predict(rows)[:, self.y_names.index(self.metric)]

    def cost(self, data_fraction: float, epochs: int) -> float:
        raise NotImplementedError("YAHPO costs depend on the configuration; use the 'cost' a call returns")

    def _reference_cost(self) -> float:
        # 1 FFE = the median predicted runtime of 256 quasi-random configurations at target fidelity.
        df, ep = self._fidelities(None, None)
        rows = [self._rows(c, df, ep)[-1] for c in self.space.sample(256, seed=12345)]
        out = self.predict(rows)
        return float(np.median(np.maximum(out[:, self.y_names.index(self.runtime_name)], 1e-3)))


class YahpoLCBench(_YahpoProblem):
    """YAHPO Gym ``lcbench`` (see the module docstring)."""

    name = "yahpo_lcbench"
    scenario = "lcbench"
    default_task = "189906"
    instance_name = "OpenML_task_id"
    cont_names = ("epoch", "batch_size", "learning_rate", "momentum", "weight_decay", "num_layers",
                  "max_units", "max_dropout")
    cat_names = ("OpenML_task_id",)
    y_names = ("time", "val_accuracy", "val_cross_entropy", "val_balanced_accuracy", "test_cross_entropy",
               "test_balanced_accuracy")
    metric = "val_cross_entropy"
    runtime_name = "time"

    def _make_space(self) -> SearchSpace:
        return SearchSpace.from_dict({
            "batch_size": {"type": "int", "bounds": [16, 512], "scale": "log"},
            "learning_rate": {"type": "float", "bounds": [1e-4, 1e-1], "scale": "log"},
            "momentum": {"type": "float", "bounds": [0.1, 0.99]},
            "weight_decay": {"type": "float", "bounds": [1e-5, 0.1]},
            "num_layers": {"type": "int", "bounds": [1, 5]},
            "max_units": {"type": "int", "bounds": [64, 1024], "scale": "log"},
            "max_dropout": {"type": "float", "bounds": [0.0, 1.0]},
            "epochs": {"type": "fidelity", "bounds": [1, 52], "target": 52},
        })

    def _rows(self, params, data_fraction, epochs):
        base = dict(params)
        base["OpenML_task_id"] = self.task_id
        return [{**base, "epoch": float(t)} for t in range(1, epochs + 1)]


class YahpoRBv2XGBoost(_YahpoProblem):
    """YAHPO Gym ``rbv2_xgboost`` (see the module docstring)."""

    name = "yahpo_rbv2_xgboost"
    scenario = "rbv2_xgboost"
    default_task = "1489"
    instance_name = "task_id"
    max_rounds = 2981
    n_steps = 30
    cont_names = ("nrounds", "eta", "gamma", "lambda", "alpha", "subsample", "max_depth", "min_child_weight",
                  "colsample_bytree", "colsample_bylevel", "rate_drop", "skip_drop", "trainsize", "repl")
    cat_names = ("task_id", "booster", "num.impute.selected.cpo")
    y_names = ("acc", "bac", "auc", "brier", "f1", "logloss", "timetrain", "timepredict", "memory")
    metric = "logloss"
    runtime_name = "timetrain"

    def _make_space(self) -> SearchSpace:
        lo, hi = math.exp(-7), math.exp(7)
        return SearchSpace.from_dict({
            "booster": {"type": "categorical", "choices": ["gblinear", "gbtree", "dart"]},
            "eta": {"type": "float", "bounds": [math.exp(-7), 1.0], "scale": "log"},
            "gamma": {"type": "float", "bounds": [math.exp(-10), math.exp(2)], "scale": "log"},
            "lambda": {"type": "float", "bounds": [lo, hi], "scale": "log"},
            "alpha": {"type": "float", "bounds": [lo, hi], "scale": "log"},
            "subsample": {"type": "float", "bounds": [0.1, 1.0]},
            "max_depth": {"type": "int", "bounds": [1, 15]},
            "min_child_weight": {"type": "float", "bounds": [math.e, math.exp(5)], "scale": "log"},
            "colsample_bytree": {"type": "float", "bounds": [0.01, 1.0]},
            "colsample_bylevel": {"type": "float", "bounds": [0.01, 1.0]},
            "rate_drop": {"type": "float", "bounds": [0.0, 1.0]},
            "skip_drop": {"type": "float", "bounds": [0.0, 1.0]},
            "data_fraction": {"type": "fidelity", "bounds": [0.03, 1.0], "target": 1.0},
            "epochs": {"type": "fidelity", "bounds": [1, self.n_steps], "target": self.n_steps},
        })

    def nrounds(self, epoch: int) -> int:
        """Boosting rounds after ``epoch`` steps of the iteration fidelity."""
        return int(round(self.max_rounds * epoch / self.n_steps))

    def _rows(self, params, data_fraction, epochs):
        base = {"task_id": self.task_id, "booster": params["booster"], "num.impute.selected.cpo": "impute.median",
                "subsample": params["subsample"], "lambda": params["lambda"], "alpha": params["alpha"],
                "trainsize": float(data_fraction), "repl": 10.0}
        # Conditional hyperparameters (YAHPO's config space): inactive ones are fed as 0, as YAHPO does.
        if params["booster"] in ("gbtree", "dart"):
            for k in ("eta", "gamma", "max_depth", "min_child_weight", "colsample_bytree", "colsample_bylevel"):
                base[k] = params[k]
        if params["booster"] == "dart":
            base["rate_drop"] = params["rate_drop"]
            base["skip_drop"] = params["skip_drop"]
        return [{**base, "nrounds": float(self.nrounds(t))} for t in range(1, epochs + 1)]
