"""Tabular benchmarks: replay learning curves recorded on a full-factorial grid (LCBench / NAS-Bench style).

:class:`TabularProblem` reads a table of recorded training runs -- every configuration of a grid, at every
level of a data-fraction ladder, trained for ``max_epochs`` with the validation metrics and the seconds of
every epoch recorded -- and answers the :class:`~mfbo.optimize.problems.Problem` API by lookup. Anyone can
point it at their own recorded curves (``get_problem("tabular", table="my_table.json")``); ``oc20_gmp`` is
the table recorded by ``analysis/benchmarks/oc20_gmp/exhaustive.py`` (GMP + SingleNN on OC20).

Design parameters, one per grid axis, chosen so every lookup is exact:

- an axis of consecutive integers (e.g. ``mcsh_order`` 0, 1, 2) is an ``int`` parameter of that name;
- any other numeric axis (e.g. ``lr`` 1e-3, 3e-3, 1e-2) is an ``int`` parameter ``<name>_level`` whose
  value ``k`` indexes the axis' values sorted ascending, so a surrogate sees the order;
- an axis of strings or booleans is a ``categorical`` parameter of that name.

:meth:`TabularProblem.hyperparameters` maps parameters back to the recorded values.

Fidelities:

- ``data_fraction`` over ``[lowest recorded fraction, highest]`` (target: the highest). A fraction
  between two recorded levels is snapped UP to the next recorded level (a run on more data is what the
  caller can be sure covers what it asked for); the returned curve and cost are those of that level.
- ``epochs``: integer ``1 .. max_epochs`` (target ``max_epochs``); the curve is the recorded run's
  first ``epochs`` values (the recorded trainer's schedule makes a shorter run a prefix of a longer one).

Cost of a call = recorded ``featurize_s + setup_s + sum(epoch_s[:epochs])`` of the snapped run, on the
table's clock (``"cpu"``: process CPU seconds of one thread, the default of ``oc20_gmp`` because it is
insensitive to other load on the recording machine; or ``"wall"``). ``featurize_s`` is the cold
featurisation cost (no fingerprint cache), so every configuration is charged as if it were the first of
its fingerprint setting. 1 FFE (``full_fidelity_cost``) = the median over configurations of the cost at
target fidelity.

``value_at_target(params)`` = the recorded final value at the highest fraction and ``max_epochs``;
``optimum_value`` = the minimum of that over the whole table, exact because the table is exhaustive.
Tables are deterministic (one recorded run per cell): ``seed`` is accepted and ignored.

Table format (JSON, optionally gzipped ``.json.gz``)::

    {"format": "mfbo-tabular-1",
     "axes": [{"name": "mcsh_order", "values": [0, 1, 2]}, {"name": "lr", "values": [0.001, 0.01]}, ...],
     "fractions": [0.125, 0.25, 0.5, 1.0],     # one level is fine too (then no data fidelity)
     "max_epochs": 20,
     "metrics": ["val_loss", ...],              # the recorded curves' names
     "default_metric": "val_loss",              # or {"name": weight, ...}; optional (first metric)
     "default_clock": "cpu",                    # optional
     "runs": [{"config": {"mcsh_order": 0, "lr": 0.001, ...}, "fraction": 0.125,
               "curves": {"val_loss": [max_epochs floats], ...},
               "epoch_s": [max_epochs seconds] or {"cpu": [...], "wall": [...]},
               "featurize_s": s or {"cpu": s, "wall": s},   # optional (0)
               "setup_s": s or {"cpu": s, "wall": s}},      # optional (0)
              ...]}                             # every configuration x every fraction, exactly once

Any other keys (description, environment, timing) are kept in :attr:`TabularProblem.table_meta`.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mfbo.errors import ConfigError, DataError, TrainingDiverged
from mfbo.optimize._space import SearchSpace
from mfbo.optimize.problems._base import Problem

__all__ = ["TabularProblem", "OC20GMP", "TableError", "default_oc20_gmp_table", "TABLE_FORMAT"]

TABLE_FORMAT = "mfbo-tabular-1"
OC20_GMP_REGENERATE = "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python analysis/benchmarks/oc20_gmp/exhaustive.py"


class TableError(DataError):
    """A tabular benchmark's table file is missing or malformed (the message names the file and the fault)."""


def default_oc20_gmp_table() -> Path:
    """``$MFBO_OC20_GMP_TABLE`` if set, else ``analysis/benchmarks/oc20_gmp/table.json`` of the repository
    this package was imported from (present in a source checkout, not in an installed wheel)."""
    env = os.environ.get("MFBO_OC20_GMP_TABLE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "analysis" / "benchmarks" / "oc20_gmp" / "table.json"


def _read_table(path: Path, regenerate: str | None) -> dict:
    if not path.is_file():
        how = f"; regenerate it with `{regenerate}`" if regenerate else ""
        raise TableError(f"benchmark table {path} not found{how} (or pass table=PATH)")
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return json.load(fh)
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TableError(f"benchmark table {path} is not readable JSON: {exc}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


class _Axis:
    """One grid axis and its design parameter (see the module docstring)."""

    def __init__(self, name: str, values: list, where: str):
        if len(values) < 2:
            raise TableError(f"{where}: axis {name!r} needs at least two values, got {values} (record a fixed "
                             "setting outside 'axes')")
        if len({json.dumps(v) for v in values}) != len(values):
            raise TableError(f"{where}: axis {name!r} has duplicate values {values}")
        self.name = name
        if all(_is_number(v) for v in values):
            self.values = sorted(values)
            ints = all(_is_int(v) for v in self.values)
            if ints and all(b - a == 1 for a, b in zip(self.values, self.values[1:])):
                self.kind, self.param = "int", name
            else:
                self.kind, self.param = "level", f"{name}_level"
        elif all(isinstance(v, (str, bool)) for v in values):
            self.values = list(values)
            self.kind, self.param = "categorical", name
        else:
            raise TableError(f"{where}: axis {name!r} mixes types or holds non-finite numbers: {values}")

    def spec(self) -> dict:
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.values)}
        if self.kind == "int":
            return {"type": "int", "bounds": [int(self.values[0]), int(self.values[-1])]}
        return {"type": "int", "bounds": [0, len(self.values) - 1]}

    def index_of_value(self, value: Any) -> int | None:
        for k, v in enumerate(self.values):
            if isinstance(v, (str, bool)) or isinstance(value, (str, bool)):
                if type(v) is type(value) and v == value:
                    return k
            elif _is_number(value) and math.isclose(float(v), float(value), rel_tol=1e-9):
                return k
        return None

    def index_of_param(self, x: Any) -> int:
        if self.kind == "categorical":
            return self.values.index(x)
        if self.kind == "int":
            return int(x) - int(self.values[0])
        return int(x)

    def param_of_index(self, k: int) -> Any:
        if self.kind == "categorical":
            return self.values[k]
        if self.kind == "int":
            return int(self.values[k])
        return int(k)


class TabularProblem(Problem):
    """Replay a recorded table of learning curves (see the module docstring for the format and rules).

    Args:
        seed: accepted for the Problem API; the table is deterministic.
        table: path of the table (``.json`` or ``.json.gz``) or the table as a dict.
        metric: a recorded curve's name or ``{name: weight}`` (weighted sum); default: the table's
            ``default_metric`` (else its first metric).
        clock: ``"cpu"`` or ``"wall"`` seconds for the cost; default: the table's ``default_clock``
            (else ``"cpu"``). Ignored for tables that record one number per cost entry.
        name: registry name reported by the problem (default: the table's ``name``, else "tabular").

    Attributes (besides Problem's):
        axes: the grid axes (name, values, parameter); ``fractions``; ``max_epochs``;
        values: ``(n_configs, n_fractions, max_epochs)`` metric curves; ``costs``: cumulative costs, same shape;
        configs: the design configurations (parameter dicts), in table order;
        optimizer_location: the configuration with the lowest target value; table_meta: the table's other keys.
    """

    name = "tabular"
    regenerate: str | None = None  # the command that rebuilds the default table (error messages)

    def __init__(self, seed: int = 0, table: str | os.PathLike | Mapping | None = None,
                 metric: str | Mapping[str, float] | None = None, clock: str | None = None,
                 name: str | None = None):
        super().__init__(seed)
        if table is None:
            raise ConfigError("the tabular problem needs table=PATH (a recorded table, see mfbo.optimize."
                              "problems._tabular)")
        if isinstance(table, Mapping):
            data, self.table_path, where = dict(table), None, "benchmark table (dict)"
        else:
            self.table_path = Path(table)
            data, where = _read_table(self.table_path, self.regenerate), f"benchmark table {self.table_path}"
        if name is not None:
            self.name = str(name)
        elif isinstance(data.get("name"), str) and type(self).name == "tabular":
            self.name = data["name"]
        self._load(data, where, metric, clock)

    # -- parsing --------------------------------------------------------------------------------------
    def _load(self, data: dict, where: str, metric, clock) -> None:
        if not isinstance(data, dict):
            raise TableError(f"{where}: expected a JSON object at the top level")
        if data.get("format") != TABLE_FORMAT:
            raise TableError(f"{where}: field 'format' must be {TABLE_FORMAT!r}, got {data.get('format')!r}")
        for key in ("axes", "fractions", "max_epochs", "metrics", "runs"):
            if key not in data:
                raise TableError(f"{where}: missing field {key!r}")
        axes = data["axes"]
        if not isinstance(axes, list) or not axes:
            raise TableError(f"{where}: field 'axes' must be a non-empty list of {{name, values}}")
        self.axes: list[_Axis] = []
        for a in axes:
            if not isinstance(a, dict) or not isinstance(a.get("name"), str) or not isinstance(a.get("values"), list):
                raise TableError(f"{where}: every axis needs a 'name' (string) and 'values' (list), got {a!r}")
            self.axes.append(_Axis(a["name"], a["values"], where))
        if len({a.param for a in self.axes} | {a.name for a in self.axes}) < len(self.axes):
            raise TableError(f"{where}: duplicate axis names")
        fractions = data["fractions"]
        if (not isinstance(fractions, list) or not fractions or not all(_is_number(f) for f in fractions)
                or not all(0 < f <= 1 for f in fractions) or len(set(fractions)) != len(fractions)):
            raise TableError(f"{where}: field 'fractions' must be distinct numbers in (0, 1], got {fractions!r}")
        self.fractions = sorted(float(f) for f in fractions)
        T = data["max_epochs"]
        if not _is_int(T) or T < 1:
            raise TableError(f"{where}: field 'max_epochs' must be a positive integer, got {T!r}")
        self.max_epochs = int(T)
        names = data["metrics"]
        if not isinstance(names, list) or not names or not all(isinstance(m, str) for m in names):
            raise TableError(f"{where}: field 'metrics' must be a non-empty list of curve names")
        self.metric_names = list(names)
        weights = self._metric_weights(metric if metric is not None else data.get("default_metric", names[0]))
        self.metric = weights
        clock = clock if clock is not None else data.get("default_clock", "cpu")
        if clock not in ("cpu", "wall"):
            raise ConfigError(f"{self.name}: clock must be 'cpu' or 'wall', got {clock!r}")
        self.clock = clock

        shape = tuple(len(a.values) for a in self.axes)
        n_cfg, n_f = int(np.prod(shape)), len(self.fractions)
        values = np.full((n_cfg, n_f, self.max_epochs), np.nan)
        costs = np.full((n_cfg, n_f, self.max_epochs), np.nan)
        self.diverged = np.zeros((n_cfg, n_f), dtype=int)  # epoch at which a recorded run blew up (0: never)
        seen = np.zeros((n_cfg, n_f), dtype=bool)
        runs = data["runs"]
        if not isinstance(runs, list):
            raise TableError(f"{where}: field 'runs' must be a list")
        for i, run in enumerate(runs):
            here = f"{where}: runs[{i}]"
            if not isinstance(run, dict) or not isinstance(run.get("config"), dict):
                raise TableError(f"{here}: each run needs a 'config' object")
            c = self._cell(run["config"], here)
            fk = self._fraction_index(run.get("fraction"), here)
            if seen[c, fk]:
                raise TableError(f"{here}: duplicate run for config {run['config']} at fraction {run['fraction']}")
            seen[c, fk] = True
            curves = run.get("curves")
            if not isinstance(curves, dict):
                raise TableError(f"{here}: missing 'curves' object")
            diverged = run.get("diverged_at")
            n = self.max_epochs if diverged is None else int(diverged) - 1
            if diverged is not None and not 1 <= int(diverged) <= self.max_epochs:
                raise TableError(f"{here}: 'diverged_at' must be an epoch in 1..{self.max_epochs}")
            total = np.zeros(self.max_epochs)
            for m, w in self.metric.items():
                curve = self._numbers(curves.get(m), f"{here}: curve {m!r}")
                if len(curve) < n:
                    raise TableError(f"{here}: curve {m!r} has {len(curve)} values, expected {n} (max_epochs)")
                total[:n] += w * curve[:n]
            epoch_s = self._numbers(self._clocked(run.get("epoch_s"), f"{here}: 'epoch_s'"), f"{here}: 'epoch_s'")
            if len(epoch_s) < n:
                raise TableError(f"{here}: 'epoch_s' has {len(epoch_s)} values, expected {n}")
            fixed = 0.0
            for key in ("featurize_s", "setup_s"):
                if run.get(key) is not None:
                    v = self._clocked(run[key], f"{here}: {key!r}")
                    if not _is_number(v) or v < 0:
                        raise TableError(f"{here}: {key!r} must be a non-negative number, got {v!r}")
                    fixed += float(v)
            if np.any(epoch_s[:n] < 0):
                raise TableError(f"{here}: 'epoch_s' holds negative seconds")
            values[c, fk, :n] = total[:n]
            costs[c, fk, :n] = fixed + np.cumsum(epoch_s[:n])
            if diverged is not None:
                self.diverged[c, fk] = int(diverged)
                values[c, fk, n:] = np.inf
        if not seen.all():
            c, fk = map(int, np.argwhere(~seen)[0])
            raise TableError(f"{where}: the grid is incomplete: no run for config "
                             f"{self.hyperparameters(self._config_of_cell(c))} at fraction {self.fractions[fk]} "
                             f"({int((~seen).sum())} of {seen.size} cells missing)")
        self.values, self.costs = values, costs
        self._shape = shape
        self.configs = [self._config_of_cell(c) for c in range(n_cfg)]
        self.table_meta = {k: v for k, v in data.items() if k != "runs"}

        spec: dict[str, Any] = {a.param: a.spec() for a in self.axes}
        if len(self.fractions) > 1:
            spec["data_fraction"] = {"type": "fidelity", "bounds": [self.fractions[0], self.fractions[-1]],
                                     "target": self.fractions[-1]}
        if self.max_epochs > 1:
            spec["epochs"] = {"type": "fidelity", "bounds": [1, self.max_epochs], "target": self.max_epochs}
        self.space = SearchSpace.from_dict(spec)
        target = self.values[:, -1, -1]
        best = int(np.argmin(target))
        if not np.isfinite(target[best]):
            raise TableError(f"{where}: every run diverged before max_epochs at the highest fraction")
        self.optimum_value = float(target[best])
        self.optimizer_location = dict(self.configs[best])
        target_cost = self.costs[:, -1, -1]
        self.full_fidelity_cost = float(np.median(target_cost[np.isfinite(target_cost)]))

    def _metric_weights(self, metric) -> dict[str, float]:
        weights = {metric: 1.0} if isinstance(metric, str) else dict(metric) if isinstance(metric, Mapping) else None
        if not weights:
            raise ConfigError(f"{self.name}: metric {metric!r} must be a curve name or a dict of name -> weight")
        for m, w in weights.items():
            if m not in self.metric_names:
                raise ConfigError(f"{self.name}: metric {m!r} is not recorded in the table; choose from "
                                  f"{self.metric_names}")
            if not _is_number(w):
                raise ConfigError(f"{self.name}: metric weight of {m!r} must be a finite number, got {w!r}")
        return {m: float(w) for m, w in weights.items()}

    def _clocked(self, v, where: str):
        if isinstance(v, dict):
            if self.clock not in v:
                raise TableError(f"{where} has no {self.clock!r} entry (clocks recorded: {sorted(v)})")
            return v[self.clock]
        return v

    @staticmethod
    def _numbers(v, where: str) -> np.ndarray:
        if not isinstance(v, list) or not all(_is_number(x) for x in v):
            raise TableError(f"{where} must be a list of finite numbers")
        return np.asarray(v, dtype=float)

    def _cell(self, config: Mapping, where: str) -> int:
        if set(config) != {a.name for a in self.axes}:
            raise TableError(f"{where}: config keys {sorted(config)} differ from the axes "
                             f"{[a.name for a in self.axes]}")
        idx = []
        for a in self.axes:
            k = a.index_of_value(config[a.name])
            if k is None:
                raise TableError(f"{where}: {a.name}={config[a.name]!r} is not one of the axis values {a.values}")
            idx.append(k)
        return int(np.ravel_multi_index(idx, tuple(len(a.values) for a in self.axes)))

    def _fraction_index(self, f, where: str) -> int:
        if _is_number(f):
            for k, g in enumerate(self.fractions):
                if math.isclose(float(f), g, rel_tol=1e-9):
                    return k
        raise TableError(f"{where}: fraction {f!r} is not one of the table's fractions {self.fractions}")

    def _config_of_cell(self, c: int) -> dict:
        idx = np.unravel_index(c, tuple(len(a.values) for a in self.axes))
        return {a.param: a.param_of_index(int(k)) for a, k in zip(self.axes, idx)}

    # -- lookups --------------------------------------------------------------------------------------
    def cell(self, params: Mapping[str, Any]) -> int:
        """Row of ``values``/``costs`` of a (validated) design configuration."""
        idx = [a.index_of_param(params[a.param]) for a in self.axes]
        return int(np.ravel_multi_index(idx, self._shape))

    def hyperparameters(self, params: Mapping[str, Any]) -> dict:
        """The recorded hyperparameter values of a configuration (``lr_level=2`` -> ``lr=0.01``)."""
        return {a.name: a.values[a.index_of_param(params[a.param])] for a in self.axes}

    def snap_fraction(self, data_fraction: float) -> float:
        """The recorded fraction a run at ``data_fraction`` replays: the smallest level >= it."""
        return self.fractions[self._level(data_fraction)]

    def _level(self, data_fraction: float) -> int:
        for k, g in enumerate(self.fractions):
            if data_fraction <= g + 1e-9:
                return k
        return len(self.fractions) - 1

    def _evaluate(self, params, data_fraction, epochs, rng):
        c, k = self.cell(params), self._level(data_fraction)
        d = int(self.diverged[c, k])
        if d and epochs >= d:
            raise TrainingDiverged(f"{self.name}: the recorded run of {self.hyperparameters(params)} at fraction "
                                   f"{self.fractions[k]} diverged at epoch {d}", epoch=d)
        return self.values[c, k, :epochs].copy(), float(self.costs[c, k, epochs - 1])

    def value_at_target(self, params: Mapping[str, Any]) -> float:
        return float(self.values[self.cell(self.space.validate(params)), -1, -1])

    def values_at_target(self, configs: list[Mapping[str, Any]]) -> np.ndarray:
        """Target-fidelity values of many configurations: ``(n,)`` (inf for a run that diverged)."""
        return np.array([self.value_at_target(c) for c in configs], dtype=float)

    def cost(self, data_fraction: float, epochs: int) -> float:
        """Median over the table's configurations of the cost at these fidelities (calls report their own)."""
        df, ep = self._fidelities(data_fraction, epochs)
        return float(np.nanmedian(self.costs[:, self._level(df), ep - 1]))


class OC20GMP(TabularProblem):
    """``oc20_gmp``: GMP + SingleNN on 128 OC20 training images, replayed from the exhaustive grid in
    ``analysis/benchmarks/oc20_gmp/table.json`` (see that folder's README and ``docs/benchmarks.md``).

    Args:
        seed: ignored (deterministic table).
        table: table path (default :func:`default_oc20_gmp_table`).
        metric: default: energy MAE per atom (eV/atom) + free-atom force MAE (eV/A) on the validation set;
            any recorded curve (``val_energy_mae_per_atom``, ``val_energy_mae``, ``val_force_mae``,
            ``val_force_mae_free``) or a weighted dict of them.
        clock: ``"cpu"`` (default) or ``"wall"`` seconds.
    """

    name = "oc20_gmp"
    regenerate = OC20_GMP_REGENERATE

    def __init__(self, seed: int = 0, table: str | os.PathLike | Mapping | None = None,
                 metric: str | Mapping[str, float] | None = None, clock: str | None = None):
        super().__init__(seed, table=default_oc20_gmp_table() if table is None else table, metric=metric,
                         clock=clock, name="oc20_gmp")
