"""Study files (TOML): schema, defaults and up-front validation.

Every check happens before anything runs, and every error names the file and the
field (``study file quick.toml: field 'fidelity.epochs': ...``). Paths in a study
file are relative to the folder that holds it. See ``docs/study.md`` for the schema.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mfbo.study._errors import StudyFileError

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

__all__ = ["StudyConfig", "load_study_file", "parse_study_dict", "BUNDLED_PREFIX", "METRICS"]

BUNDLED_PREFIX = "bundled:"
METRICS = ("val_energy_mae_per_atom", "val_energy_mae", "val_force_mae", "val_force_mae_free")
_BUILTIN_BACKENDS = ("builtin", "amptorch")
_EXECUTORS = ("local", "dask")
_DASK_CLUSTERS = ("local", "pbs", "slurm")
# How the builtin objective holds its data (mfbo.training._source.DATA_MODES; the study file's
# [data] key -> mfbo.training._source.DataOptions field).
_DATA_MODES = ("auto", "memory", "stream")
_JACOBIAN_MODES = ("auto", "store", "recompute")
_DATA_OPTION_KEYS = {"data_mode": "mode", "shard_dir": "shard_dir", "featurize_workers": "workers",
                     "shard_size": "shard_size", "data_memory_gb": "memory_limit_gb", "shard_max_gb": "max_gb",
                     "shard_jacobians": "jacobians"}

_SECTIONS = {
    "study": {"name", "output", "seed"},
    "data": {"train", "test", "val_fraction", "subsample", "test_subsample", "data_mode", "shard_dir",
             "featurize_workers", "shard_size", "data_memory_gb", "shard_max_gb", "shard_jacobians"},
    "objective": {"backend", "metric", "options", "base_config", "path"},
    "priors": {"files"},
    "space": None,  # free-form: the search-space plain-dict form
    "fidelity": {"data_fraction", "epochs"},
    "budget": {"ffe", "wall_time"},
    "execution": {"workers", "executor", "trial_timeout", "max_failure_rate", "min_trials_for_failure_rate",
                  "dask", "driver_threads"},
    "storage": {"url"},
    "optimizer": {"factory", "options"},
    "final": {"enabled", "timeout"},
}


@dataclass
class StudyConfig:
    """A validated study description (all paths absolute).

    Attributes:
        name: study name (also the Ax experiment name prefix).
        output: the study directory.
        seed: seed of every random choice (data split, subsampling, optimiser).
        train, test: dataset paths (``None`` when the backend needs no data / no test set).
        val_fraction: fraction of the training images held out as the fixed validation set.
        subsample, test_subsample: use only this many (seeded) training / test images (``None``: all).
        data_options: how the builtin objective holds its data, as
            :class:`mfbo.training._source.DataOptions` fields (``mode``, ``shard_dir`` (absolute),
            ``workers``, ``shard_size``, ``memory_limit_gb``); only those the study file sets
            (empty: the objective's in-memory default).
        backend: "builtin", "amptorch" or a dotted path "pkg.module:factory".
        metric: metric name or ``{name: weight}`` (weighted sum) the objective minimises.
        objective_options: keyword arguments for the objective factory.
        base_config: TrainConfig fields fixed for every trial (builtin backend).
        python_path: folders prepended to ``sys.path`` before the objective is imported (driver and workers).
        prior_files: prior files (``mfbo.priors.load_prior_file``).
        space: inline search space (plain-dict form), merged over the prior files' spaces.
        fidelity: ``{"data_fraction": [lo, hi], "epochs": [lo, hi]}`` (may be empty: from priors/objective).
        budget_ffe: budget in full-fidelity-equivalent trainings (``None``: unlimited).
        budget_wall_time: budget in seconds of study wall time, summed over resumes (``None``: unlimited).
        workers: trials run at once.
        executor: "local" (process pool) or "dask".
        dask: the ``[execution.dask]`` table (``scheduler`` address or ``cluster`` = local/pbs/slurm, ...).
        trial_timeout: seconds after which a trial is killed and recorded failed (``None``: none).
        max_failure_rate: the study stops when more than this fraction of finished trials failed.
        min_trials_for_failure_rate: ...once at least this many trials finished.
        driver_threads: torch threads of the driver's optimiser (``None``, "auto" in the file: with the
            local executor, the cores the workers leave free, at least one; otherwise torch's default).
        storage_url: as written: ``None`` (SQLite in the study dir), a SQLAlchemy URL or ``env:VAR``.
        optimizer_factory: dotted path of the optimiser class/factory (``None``: MultiFidelityOptimizer).
        optimizer_options: keyword arguments for it (e.g. ``n_initial``).
        final_enabled: retrain the recommendation at target fidelity and test it at the end.
        final_timeout: seconds allowed for that run (``None``: none).
        source: the study file it came from (``None`` for objects).
    """

    name: str
    output: Path
    seed: int = 0
    train: Path | None = None
    test: Path | None = None
    val_fraction: float = 0.1
    subsample: int | None = None
    test_subsample: int | None = None
    data_options: dict = field(default_factory=dict)
    backend: str = "builtin"
    metric: Any = "val_energy_mae_per_atom"
    objective_options: dict = field(default_factory=dict)
    base_config: dict = field(default_factory=dict)
    python_path: list[Path] = field(default_factory=list)
    prior_files: list[Path] = field(default_factory=list)
    space: dict = field(default_factory=dict)
    fidelity: dict = field(default_factory=dict)
    budget_ffe: float | None = None
    budget_wall_time: float | None = None
    workers: int = 1
    executor: str = "local"
    dask: dict = field(default_factory=dict)
    trial_timeout: float | None = None
    max_failure_rate: float = 0.5
    min_trials_for_failure_rate: int = 3
    driver_threads: int | None = None
    storage_url: str | None = None
    optimizer_factory: str | None = None
    optimizer_options: dict = field(default_factory=dict)
    final_enabled: bool = True
    final_timeout: float | None = None
    source: Path | None = None

    def to_dict(self) -> dict:
        """JSON-able form (paths as strings); the storage URL is redacted."""
        from mfbo.study._storage import redact_url

        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
        d["python_path"] = [str(p) for p in self.python_path]
        d["prior_files"] = [str(p) for p in self.prior_files]
        d["storage_url"] = redact_url(self.storage_url) if self.storage_url else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StudyConfig:
        d = dict(d)
        for k in ("output", "train", "test", "source"):
            if d.get(k) is not None:
                d[k] = Path(d[k])
        d["python_path"] = [Path(p) for p in d.get("python_path", [])]
        d["prior_files"] = [Path(p) for p in d.get("prior_files", [])]
        return cls(**d)


class _Ctx:
    """Error helper: every message names the file and the field."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, field_name: str, message: str) -> StudyFileError:
        return StudyFileError(f"{self.source}: field '{field_name}': {message}")


def load_study_file(path: str | os.PathLike, *, check_output: bool = True) -> StudyConfig:
    """Read and validate a study file.

    Args:
        path: the TOML file.
        check_output: also check that the output directory can be created and written (nothing is
            created: :meth:`mfbo.Study.run` creates it once every check has passed).

    Returns:
        The validated :class:`StudyConfig`.

    Raises:
        StudyFileError: naming the file and field at fault.
    """
    p = Path(path)
    if not p.is_file():
        raise StudyFileError(f"study file {str(p)!r} not found")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise StudyFileError(f"study file {p}: not valid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyFileError(f"study file {p}: cannot be read: {exc}") from None
    return parse_study_dict(raw, base_dir=p.resolve().parent, source=f"study file {p}",
                            check_output=check_output, source_path=p.resolve())


def _resolve_path(base: Path, value: str) -> Path:
    q = Path(os.path.expanduser(value))
    return q if q.is_absolute() else (base / q)


def _dataset(ctx: _Ctx, base: Path, fname: str, value: Any) -> Path:
    if not isinstance(value, str) or not value:
        raise ctx.fail(fname, f"expected a file path or 'bundled:NAME', got {value!r}")
    if value.startswith(BUNDLED_PREFIX):
        from mfbo.datasets import dataset_path
        from mfbo.errors import DataError

        try:
            return dataset_path(value[len(BUNDLED_PREFIX):])
        except DataError as exc:
            raise ctx.fail(fname, str(exc)) from None
    q = _resolve_path(base, value)
    from mfbo.training._lmdb import is_lmdb_dataset

    if not (q.is_file() or (q.is_dir() and is_lmdb_dataset(q))):
        raise ctx.fail(fname, f"dataset file {value!r} not found (looked for {q}; relative paths are "
                              "resolved against the study file's folder; bundled data: 'bundled:oc20_train_pool')")
    return q


def _pos_number(ctx: _Ctx, fname: str, value: Any, *, integer: bool = False, allow_zero: bool = False):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer and int(value) != value:
        ok = False
    if ok and (value < 0 or (value == 0 and not allow_zero)):
        ok = False
    if not ok:
        kind = "integer" if integer else "number"
        raise ctx.fail(fname, f"expected a {'non-negative' if allow_zero else 'positive'} {kind}, got {value!r}")
    return int(value) if integer else float(value)


def _data_options(ctx: _Ctx, base: Path, data: Mapping, backend: str) -> dict:
    """The ``[data]`` keys that say how the builtin objective holds its data, as DataOptions fields."""
    given = [key for key in _DATA_OPTION_KEYS if key in data]
    if given and backend != "builtin":
        raise ctx.fail(f"data.{given[0]}", f"applies to the builtin backend only (this study uses {backend!r}); "
                                           "remove it")
    out: dict = {}
    if "data_mode" in data:
        out["mode"] = _one_of(ctx, "data.data_mode", data["data_mode"], _DATA_MODES)
    if "shard_dir" in data:
        value = data["shard_dir"]
        if not isinstance(value, str) or not value:
            raise ctx.fail("data.shard_dir", f"expected a folder path, got {value!r}")
        out["shard_dir"] = str(_resolve_path(base, value).resolve())
    if "featurize_workers" in data:
        out["workers"] = _pos_number(ctx, "data.featurize_workers", data["featurize_workers"], integer=True)
    if "shard_size" in data:
        out["shard_size"] = _pos_number(ctx, "data.shard_size", data["shard_size"], integer=True)
    if "data_memory_gb" in data:
        out["memory_limit_gb"] = _pos_number(ctx, "data.data_memory_gb", data["data_memory_gb"])
    if "shard_max_gb" in data:
        out["max_gb"] = _pos_number(ctx, "data.shard_max_gb", data["shard_max_gb"])
    if "shard_jacobians" in data:
        out["jacobians"] = _one_of(ctx, "data.shard_jacobians", data["shard_jacobians"], _JACOBIAN_MODES)
    return out


def _one_of(ctx: _Ctx, fname: str, value: Any, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ctx.fail(fname, f"expected one of {list(options)}, got {value!r}")
    return value


def _check_metric(ctx: _Ctx, metric: Any) -> Any:
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ctx.fail("objective.metric", f"unknown metric {metric!r}; choose one of {list(METRICS)} "
                                               "or a table of weights {name = weight}")
        return metric
    if isinstance(metric, Mapping) and metric:
        out = {}
        for k, w in metric.items():
            if k not in METRICS:
                raise ctx.fail(f"objective.metric.{k}", f"unknown metric; choose among {list(METRICS)}")
            out[k] = _pos_number(ctx, f"objective.metric.{k}", w)
        return out
    raise ctx.fail("objective.metric", f"expected a metric name or a table of weights, got {metric!r}")


def _check_backend(ctx: _Ctx, backend: Any) -> str:
    if not isinstance(backend, str) or not backend:
        raise ctx.fail("objective.backend", f"expected 'builtin', 'amptorch' or 'pkg.module:factory', got {backend!r}")
    if backend in _BUILTIN_BACKENDS:
        return backend
    mod, sep, attr = backend.partition(":")
    if not sep or not mod or not attr or not all(s.isidentifier() for s in mod.split(".") + attr.split(".")):
        raise ctx.fail("objective.backend", f"unknown backend {backend!r}; use 'builtin', 'amptorch' or a dotted "
                                            "path 'pkg.module:factory'")
    return backend


def _check_range(ctx: _Ctx, fname: str, value: Any, *, integer: bool) -> list:
    if (not isinstance(value, list) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ctx.fail(fname, f"expected [low, high], got {value!r}")
    lo, hi = value
    if integer and (int(lo) != lo or int(hi) != hi):
        raise ctx.fail(fname, f"epochs bounds must be integers, got {value!r}")
    if not lo < hi:
        raise ctx.fail(fname, f"bounds reversed or empty: [{lo}, {hi}]; write [low, high] with low < high")
    if integer:
        if lo < 1:
            raise ctx.fail(fname, f"epochs start at 1 or more, got {lo}")
        return [int(lo), int(hi)]
    if not (0 < lo and hi <= 1):
        raise ctx.fail(fname, f"a data fraction lies in (0, 1], got [{lo}, {hi}]")
    return [float(lo), float(hi)]


def check_output_dir(ctx_source: str, output: Path, *, create: bool = True) -> None:
    """Check that ``output`` can be a study directory (raises StudyFileError naming 'study.output').

    Args:
        create: create it (with parents) and write a probe file into it; False checks without
            writing: ``output`` is a directory or absent, and its nearest existing parent is a
            writable directory.
    """
    ctx = _Ctx(ctx_source)
    if not create:
        if output.exists() and not output.is_dir():
            raise ctx.fail("study.output", f"{str(output)!r} exists and is not a directory; choose another folder")
        probe = output
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir():
            raise ctx.fail("study.output", f"output directory {str(output)!r} cannot be created: {str(probe)!r} "
                                           "is a file; choose another folder")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ctx.fail("study.output", f"output directory {str(output)!r} cannot be created or written "
                                           f"({str(probe)!r} is not writable); choose a writable folder")
        return
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".mfbo-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ctx.fail("study.output", f"output directory {str(output)!r} cannot be created or written "
                                       f"({exc.strerror or exc}); choose a writable folder") from None


def parse_study_dict(raw: Mapping[str, Any], *, base_dir: Path, source: str = "study", check_output: bool = True,
                     source_path: Path | None = None) -> StudyConfig:
    """Validate the parsed TOML tables of a study file (see :func:`load_study_file`)."""
    ctx = _Ctx(source)
    if not isinstance(raw, Mapping):
        raise StudyFileError(f"{source}: expected a table at top level")
    for section, value in raw.items():
        if section not in _SECTIONS:
            raise ctx.fail(section, f"unknown section; known sections: {sorted(_SECTIONS)}")
        if not isinstance(value, Mapping):
            raise ctx.fail(section, "expected a table ([section])")
        allowed = _SECTIONS[section]
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    raise ctx.fail(f"{section}.{key}", f"unknown field; known fields: {sorted(allowed)}")
    study = raw.get("study", {})
    data = raw.get("data", {})
    obj = raw.get("objective", {})
    budget = raw.get("budget", {})
    ex = raw.get("execution", {})

    name = study.get("name", source_path.stem if source_path else "study")
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ctx.fail("study.name", f"expected a name of letters, digits, '-', '_' or '.', got {name!r}")
    out_raw = study.get("output", f"runs/{name}")
    if not isinstance(out_raw, str) or not out_raw:
        raise ctx.fail("study.output", f"expected a folder path, got {out_raw!r}")
    output = _resolve_path(base_dir, out_raw).resolve()
    seed = study.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ctx.fail("study.seed", f"expected a non-negative integer, got {seed!r}")

    backend = _check_backend(ctx, obj.get("backend", "builtin"))
    metric = _check_metric(ctx, obj.get("metric", "val_energy_mae_per_atom"))
    options = obj.get("options", {})
    if not isinstance(options, Mapping):
        raise ctx.fail("objective.options", "expected a table of keyword arguments")
    base_config = obj.get("base_config", {})
    if not isinstance(base_config, Mapping):
        raise ctx.fail("objective.base_config", "expected a table of TrainConfig fields")
    pp = obj.get("path", [])
    pp = [pp] if isinstance(pp, str) else pp
    if not isinstance(pp, list) or not all(isinstance(s, str) for s in pp):
        raise ctx.fail("objective.path", "expected a folder or a list of folders")
    python_path = [_resolve_path(base_dir, s).resolve() for s in pp]
    for s, q in zip(pp, python_path):
        if not q.is_dir():
            raise ctx.fail("objective.path", f"folder {s!r} not found (looked for {q})")

    needs_data = backend in _BUILTIN_BACKENDS
    train = test = None
    if "train" in data:
        train = _dataset(ctx, base_dir, "data.train", data["train"])
    elif needs_data:
        raise ctx.fail("data.train", f"the {backend!r} backend needs a training set: add [data] train = \"PATH\"")
    if "test" in data:
        test = _dataset(ctx, base_dir, "data.test", data["test"])
    val_fraction = data.get("val_fraction", 0.1)
    if (isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float))
            or not 0 < val_fraction < 1):
        raise ctx.fail("data.val_fraction", f"expected a number in (0, 1), got {val_fraction!r}")
    subsample = data.get("subsample")
    if subsample is not None:
        subsample = _pos_number(ctx, "data.subsample", subsample, integer=True)
        if subsample < 2:
            raise ctx.fail("data.subsample", "need at least 2 images (training and validation)")
    test_subsample = data.get("test_subsample")
    if test_subsample is not None:
        test_subsample = _pos_number(ctx, "data.test_subsample", test_subsample, integer=True)
    data_options = _data_options(ctx, base_dir, data, backend)

    pf = raw.get("priors", {}).get("files", [])
    pf = [pf] if isinstance(pf, str) else pf
    if not isinstance(pf, list) or not all(isinstance(s, str) for s in pf):
        raise ctx.fail("priors.files", "expected a list of prior-file paths")
    prior_files = []
    for i, s in enumerate(pf):
        if s.startswith(BUNDLED_PREFIX):  # a prior file shipped with mfbo, e.g. 'bundled:nn_defaults'
            from mfbo.priors._file import PriorFileError, resolve_prior_path

            try:
                prior_files.append(resolve_prior_path(s))
            except PriorFileError as exc:
                raise ctx.fail(f"priors.files[{i}]", str(exc)) from None
            continue
        q = _resolve_path(base_dir, s)
        if not q.is_file():
            raise ctx.fail(f"priors.files[{i}]", f"prior file {s!r} not found (looked for {q})")
        prior_files.append(q.resolve())

    space = dict(raw.get("space", {}))
    if space:
        from mfbo.errors import SearchSpaceError
        from mfbo.optimize import SearchSpace

        try:
            if any(not isinstance(v, Mapping) or v.get("type") != "fidelity" for v in space.values()):
                SearchSpace.from_dict(space)
        except SearchSpaceError as exc:
            raise ctx.fail("space", str(exc)) from None

    fid_raw = raw.get("fidelity", {})
    fidelity = {}
    if "data_fraction" in fid_raw:
        fidelity["data_fraction"] = _check_range(ctx, "fidelity.data_fraction", fid_raw["data_fraction"],
                                                 integer=False)
    if "epochs" in fid_raw:
        fidelity["epochs"] = _check_range(ctx, "fidelity.epochs", fid_raw["epochs"], integer=True)
    if not fidelity and not prior_files and not space and needs_data:
        raise ctx.fail("fidelity", "no fidelity ranges: add [fidelity] data_fraction = [lo, 1.0] and "
                                   "epochs = [1, N] (or a prior file that sets them)")

    budget_ffe = budget.get("ffe")
    if budget_ffe is not None:
        budget_ffe = _pos_number(ctx, "budget.ffe", budget_ffe)
    wall = budget.get("wall_time")
    if wall is not None:
        wall = _pos_number(ctx, "budget.wall_time", wall)
    if budget_ffe is None and wall is None:
        raise ctx.fail("budget", "set a budget: [budget] ffe = N (full-fidelity-equivalent trainings) and/or "
                                 "wall_time = SECONDS")

    workers = _pos_number(ctx, "execution.workers", ex.get("workers", 1), integer=True)
    executor = ex.get("executor", "local")
    if executor not in _EXECUTORS:
        raise ctx.fail("execution.executor", f"unknown executor {executor!r}; choose one of {list(_EXECUTORS)}")
    dask = dict(ex.get("dask", {}))
    if executor == "dask":
        if not isinstance(ex.get("dask", {}), Mapping):
            raise ctx.fail("execution.dask", "expected a table")
        if "scheduler" in dask and "cluster" in dask:
            raise ctx.fail("execution.dask", "give either 'scheduler' (an address) or 'cluster', not both")
        cluster = dask.get("cluster", "local" if "scheduler" not in dask else None)
        if cluster is not None and cluster not in _DASK_CLUSTERS:
            raise ctx.fail("execution.dask.cluster", f"unknown cluster {cluster!r}; choose one of "
                                                     f"{list(_DASK_CLUSTERS)}")
        if "scheduler" in dask and not isinstance(dask["scheduler"], str):
            raise ctx.fail("execution.dask.scheduler", "expected an address such as 'tcp://host:8786'")
        if cluster is not None:
            dask["cluster"] = cluster
        opts = dask.get("options", {})
        if not isinstance(opts, Mapping):
            raise ctx.fail("execution.dask.options", "expected a table of cluster keyword arguments")
    trial_timeout = ex.get("trial_timeout")
    if trial_timeout is not None:
        trial_timeout = _pos_number(ctx, "execution.trial_timeout", trial_timeout)
    mfr = ex.get("max_failure_rate", 0.5)
    if isinstance(mfr, bool) or not isinstance(mfr, (int, float)) or not 0 <= mfr <= 1:
        raise ctx.fail("execution.max_failure_rate", f"expected a number in [0, 1], got {mfr!r}")
    mtf = _pos_number(ctx, "execution.min_trials_for_failure_rate", ex.get("min_trials_for_failure_rate", 3),
                      integer=True)
    driver_threads = ex.get("driver_threads", "auto")
    if driver_threads == "auto":
        driver_threads = None
    elif isinstance(driver_threads, bool) or not isinstance(driver_threads, int) or driver_threads < 1:
        raise ctx.fail("execution.driver_threads", f"expected \"auto\" or a number of threads >= 1, got "
                                                   f"{driver_threads!r}")

    url = raw.get("storage", {}).get("url")
    if url is not None:
        from mfbo.study._storage import check_url_form

        if not isinstance(url, str) or not url:
            raise ctx.fail("storage.url", f"expected a URL or 'env:VAR', got {url!r}")
        msg = check_url_form(url)
        if msg:
            raise ctx.fail("storage.url", msg)

    opt = raw.get("optimizer", {})
    factory = opt.get("factory")
    if factory is not None and (not isinstance(factory, str) or ":" not in factory):
        raise ctx.fail("optimizer.factory", f"expected a dotted path 'pkg.module:Class', got {factory!r}")
    opt_options = opt.get("options", {})
    if not isinstance(opt_options, Mapping):
        raise ctx.fail("optimizer.options", "expected a table of keyword arguments")
    final = raw.get("final", {})
    final_enabled = final.get("enabled", True)
    if not isinstance(final_enabled, bool):
        raise ctx.fail("final.enabled", f"expected true or false, got {final_enabled!r}")
    final_timeout = final.get("timeout")
    if final_timeout is not None:
        final_timeout = _pos_number(ctx, "final.timeout", final_timeout)

    if check_output:
        check_output_dir(source, output, create=False)

    return StudyConfig(
        name=name, output=output, seed=seed, train=train, test=test, val_fraction=float(val_fraction),
        subsample=subsample, test_subsample=test_subsample, data_options=data_options, backend=backend, metric=metric,
        objective_options=dict(options), base_config=dict(base_config), python_path=python_path,
        prior_files=prior_files, space=space, fidelity=fidelity, budget_ffe=budget_ffe, budget_wall_time=wall,
        workers=workers, executor=executor, dask=dask, trial_timeout=trial_timeout,
        max_failure_rate=float(mfr), min_trials_for_failure_rate=mtf, driver_threads=driver_threads,
        storage_url=url,
        optimizer_factory=factory, optimizer_options=dict(opt_options), final_enabled=final_enabled,
        final_timeout=final_timeout, source=source_path,
    )
