"""Export a study's best configuration as an AMPTorch config or a built-in trainer config.

``mfbo export STUDY_DIR --format amptorch`` writes ``amptorch_config.py`` (a Python file defining
``config``, with the activation etc. as torch classes, ready for ``AtomsTrainer(config)``) and
``amptorch_config.json`` (the same with dotted names); ``--format mfbo`` writes
``mfbo_config.json`` (``TrainConfig.to_dict()``). Loader functions read them back:
:func:`load_amptorch_config_py` parses the Python file with :mod:`ast` and evaluates literals
and a fixed list of ``torch.*`` names only, so loading never runs code from the file.
"""

from __future__ import annotations

import ast
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mfbo.errors import ConfigError, StudyError
from mfbo.objectives._amptorch_config import (
    ACTIVATIONS,
    TORCH_NAMES,
    _training_api,
    build_amptorch_config,
    config_from_jsonable,
    config_to_jsonable,
    training_settings,
    untransferable_settings,
)

__all__ = [
    "ExportError",
    "export_amptorch",
    "export_mfbo",
    "load_amptorch_config_json",
    "load_amptorch_config_py",
    "load_mfbo_config",
    "params_from_amptorch_config",
    "read_best",
    "render_config_py",
]

AMPTORCH_PY = "amptorch_config.py"
AMPTORCH_JSON = "amptorch_config.json"
MFBO_JSON = "mfbo_config.json"


class ExportError(StudyError):
    """A study directory cannot be exported (missing or malformed best.json, unwritable output)."""


# --------------------------------------------------------------------------------------------
# Reading the study
# --------------------------------------------------------------------------------------------


def read_best(study_dir) -> dict[str, Any]:
    """Read and check ``STUDY_DIR/best.json`` (written by the study runner).

    Returns:
        dict with at least "params" (dict of design hyperparameters) and "train_config" (dict).
    """
    study = Path(study_dir)
    if not study.is_dir():
        raise ExportError(f"study directory {study} does not exist (give the output directory of `mfbo run`)")
    best_path = study / "best.json"
    if not best_path.is_file():
        raise ExportError(
            f"{best_path} not found: the study has no recommended configuration yet "
            "(let `mfbo run`/`mfbo resume` finish, then export)"
        )
    try:
        best = json.loads(best_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{best_path} is not valid JSON ({exc})") from None
    if not isinstance(best, dict):
        raise ExportError(f"{best_path} must hold a JSON object, got {type(best).__name__}")
    if not isinstance(best.get("params"), dict):
        raise ExportError(f"{best_path} has no 'params' object (the best design hyperparameters)")
    # The study runner writes null when the final retraining did not record its config.
    train_config = best.get("train_config") or {}
    if not isinstance(train_config, dict):
        raise ExportError(f"{best_path}: 'train_config' must be an object (TrainConfig.to_dict())")
    best["train_config"] = train_config
    return best


def _out_dir(study_dir, out_dir) -> Path:
    out = Path(out_dir) if out_dir is not None else Path(study_dir) / "export"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create output directory {out}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK):
        raise ExportError(f"output directory {out} is not writable")
    return out


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None


def _dataset_path(best: Mapping[str, Any], study_dir) -> str | None:
    for holder in (best, best.get("datasets") or {}, best.get("data") or {}):
        if isinstance(holder, Mapping):
            value = holder.get("train")
            if isinstance(value, str):
                return value
    # The study runner keeps its fixed training pool (validation images removed) here.
    pool = Path(study_dir) / "data" / "train.traj"
    return str(pool.resolve()) if pool.is_file() else None


def _elements_from(path: str | None) -> list[str] | None:
    if path is None or not Path(path).is_file():
        return None
    try:
        import ase.io

        return sorted({s for atoms in ase.io.iread(path, ":") for s in atoms.get_chemical_symbols()})
    except Exception:  # unreadable here: fall back to every bundled element
        return None


# --------------------------------------------------------------------------------------------
# Python source of a config
# --------------------------------------------------------------------------------------------


# Where an AtomsTrainer config holds objects rather than literals.
OBJECT_PATHS = (("model", "activation"), ("optim", "optimizer"), ("cmd", "dtype"))


def _source(value: Any, indent: int, path: tuple = ()) -> str:
    pad = "    " * (indent + 1)
    end = "    " * indent
    if path in OBJECT_PATHS:
        if value not in TORCH_NAMES:
            raise ConfigError(f"config[{path[0]!r}][{path[1]!r}]={value!r} is not a torch class mfbo can write")
        return value  # a dotted torch name, written as an expression
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = "".join(f"{pad}{str(k)!r}: {_source(v, indent + 1, (*path, str(k)))},\n" for k, v in value.items())
        return "{\n" + items + end + "}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_source(v, indent + 1) for v in value) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        if not value:
            return "[]"
        return "[" + ", ".join(_source(v, indent + 1) for v in value) + "]"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"cannot write the non-finite value {value} to a config file")
        return repr(value)  # shortest repr round-trips exactly
    if value is None or isinstance(value, (bool, int, str)):
        return repr(value)
    raise ConfigError(f"cannot write a {type(value).__name__} to an AMPTorch config file")


def render_config_py(config: Mapping[str, Any], header: str = "") -> str:
    """Python source defining ``config`` (torch classes written as ``torch.nn.Tanh`` etc.).

    Args:
        config: an AtomsTrainer config whose raw_data is a path; torch classes given either as
            classes or as their dotted names.
        header: text for the module docstring.
    """
    plain = config_to_jsonable(config)  # refuses Atoms objects and unknown classes before writing
    scaling = config.get("dataset", {}).get("scaling")
    if isinstance(scaling, Mapping) and isinstance(scaling.get("range"), tuple):
        plain["dataset"]["scaling"]["range"] = tuple(plain["dataset"]["scaling"]["range"])
    doc = header.replace('"""', "'''").rstrip()
    return (
        f'"""{doc}\n"""\n\n'
        "import torch\n\n"
        f"config = {_source(plain, 0)}\n\n"
        'if __name__ == "__main__":\n'
        "    from amptorch import AtomsTrainer\n\n"
        "    trainer = AtomsTrainer(config)\n"
        "    trainer.train()\n"
    )


class _LiteralEvaluator:
    """Evaluate a config expression: literals, containers, negation and allowed torch names."""

    def __init__(self, path, resolve: bool):
        self.path = path
        self.resolve = resolve

    def fail(self, node, what):
        raise ConfigError(f"{self.path}, line {getattr(node, 'lineno', '?')}: {what} is not allowed in an "
                          "exported config (only literals and torch.* classes)")

    def __call__(self, node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                self.fail(node, "'**' unpacking")
            return {self(k): self(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.List):
            return [self(e) for e in node.elts]
        if isinstance(node, ast.Tuple):
            return tuple(self(e) for e in node.elts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self(node.operand)
            if not isinstance(operand, (int, float)) or isinstance(operand, bool):
                self.fail(node, "a sign on a non-number")
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.Attribute):
            parts = []
            cur = node
            while isinstance(cur, ast.Attribute):
                parts.append(cur.attr)
                cur = cur.value
            if isinstance(cur, ast.Name):
                name = ".".join([cur.id, *reversed(parts)])
                if name in TORCH_NAMES:
                    if not self.resolve:
                        return name
                    from mfbo.objectives._amptorch_config import _torch_object

                    return _torch_object(name, True)
                self.fail(node, f"the name {name}")
        self.fail(node, f"a {type(node).__name__} expression")


def load_amptorch_config_py(path, *, resolve: bool = True) -> dict[str, Any]:
    """Read ``config`` from an exported AMPTorch config file without executing it.

    The file is parsed with :mod:`ast`; the value assigned to ``config`` may hold only literals
    (numbers, strings, booleans, None, dicts, lists, tuples) and the torch names of
    :data:`mfbo.objectives._amptorch_config.TORCH_NAMES`. Everything else in the file is ignored.

    Args:
        path: the ``.py`` file.
        resolve: True to return torch classes, False for their dotted names.

    Returns:
        the config dict, equal to the exported one.
    """
    path = Path(path)
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except SyntaxError as exc:
        raise ConfigError(f"{path}, line {exc.lineno}: not valid Python ({exc.msg})") from None
    value = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "config" for t in node.targets):
            value = node.value
    if value is None:
        raise ConfigError(f"{path} does not assign `config = {{...}}` at top level")
    config = _LiteralEvaluator(path, resolve)(value)
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: `config` must be a dict, got {type(config).__name__}")
    return config


def _read_json(path: Path) -> Any:
    """Parse a JSON file; an unreadable or invalid file is a ConfigError naming it."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc})") from None


def load_amptorch_config_json(path, *, resolve: bool = True) -> dict[str, Any]:
    """Read an exported ``amptorch_config.json`` (dotted torch names resolved to classes)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a JSON object")
    return config_from_jsonable(data, resolve=resolve)


def load_mfbo_config(path):
    """Read an exported ``mfbo_config.json`` as a ``TrainConfig``."""
    TrainConfig = _training_api("TrainConfig")  # noqa: N806
    if TrainConfig is None:
        raise ConfigError("loading an mfbo config needs mfbo.training.TrainConfig, which is not available")
    path = Path(path)
    data = _read_json(path)
    # the data paths that make it an `mfbo train` run file are not TrainConfig fields
    return TrainConfig.from_dict({k: v for k, v in data.items() if k not in ("train", "val", "test")})


# --------------------------------------------------------------------------------------------
# Back from an AMPTorch config to design hyperparameters
# --------------------------------------------------------------------------------------------


def _spacing(sigmas: list[float]) -> str:
    import numpy as np

    if len(sigmas) < 3:
        return "log"
    s = np.asarray(sorted(sigmas))
    lin = np.linspace(s[0], s[-1], len(s))
    log = np.geomspace(s[0], s[-1], len(s))
    return "linear" if np.abs(lin - s).max() <= np.abs(log - s).max() else "log"


def params_from_amptorch_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Design hyperparameters (handbook contract 2) an AMPTorch config encodes.

    Network and optimiser settings map back one to one; GMP settings become
    sigma_min/sigma_max/n_sigmas/sigma_spacing (from the sigma grid), mcsh_order (highest order),
    cutoff and, for gmpordernorm, solid_harmonics. Scheduler gamma/step size appear only for a
    step scheduler; ``solid_harmonics`` for gmpordernorm (or when the gmp fp_params carry it).
    """
    model, optim, dataset = config["model"], config["optim"], config["dataset"]
    activation = model["activation"]
    act_name = activation if isinstance(activation, str) else config_to_jsonable({"a": activation})["a"]
    by_class = {f"torch.nn.{cls}": name for name, cls in ACTIVATIONS.items()}
    params: dict[str, Any] = {
        "num_layers": int(model["num_layers"]),
        "num_nodes": int(model["num_nodes"]),
        "activation": by_class[act_name],
        "batchnorm": bool(model["batchnorm"]),
        "dropout": float(model.get("dropout_rate", 0.0)) if model.get("dropout") else 0.0,
        "lr": float(optim["lr"]),
        "weight_decay": float((optim.get("optimizer_args") or {}).get("optimizer__weight_decay", 0.0)),
        "force_coefficient": float(optim["force_coefficient"]),
        "batch_size": int(optim["batch_size"]),
    }
    scheduler = optim.get("scheduler") or {}
    policy = scheduler.get("policy")
    if not policy:
        params["scheduler"] = "none"
    elif policy == "StepLR":
        params["scheduler"] = "step"
        params["scheduler_step_size"] = int(scheduler["params"]["step_size"])
        params["scheduler_gamma"] = float(scheduler["params"]["gamma"])
    elif policy == "CosineAnnealingLR":
        params["scheduler"] = "cosine"
    else:
        raise ConfigError(f"scheduler policy {policy!r} has no mfbo equivalent")
    fp_scheme = dataset["fp_scheme"]
    fp = dataset["fp_params"]
    mcshs = fp["MCSHs"]
    if fp_scheme == "gmp":
        orders = sorted(int(o) for o in mcshs)
        sigmas = sorted({float(s) for spec in mcshs.values() for s in spec["sigmas"]})
    else:
        orders = sorted(int(o) for o in mcshs["orders"])
        sigmas = sorted(float(s) for s in mcshs["sigmas"])
    if fp_scheme == "gmpordernorm" or "solid_harmonics" in fp:
        # gmpordernorm's default is solid harmonics; gmp ignores the key but may carry it.
        params["solid_harmonics"] = bool(fp.get("solid_harmonics", True))
    params.update({
        "fp_scheme": fp_scheme,
        "sigma_min": sigmas[0],
        "sigma_max": sigmas[-1],
        "n_sigmas": len(sigmas),
        "sigma_spacing": _spacing(sigmas),
        "mcsh_order": orders[-1],
        "cutoff": float(fp["cutoff"]),
    })
    return params


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------


def export_amptorch(study_dir, out_dir=None, *, raw_data: str | None = None) -> tuple[Path, Path]:
    """Write the study's best configuration as ``amptorch_config.py`` and ``.json``.

    Args:
        study_dir: the study directory holding best.json.
        out_dir: output folder (default ``STUDY_DIR/export``).
        raw_data: dataset path for ``config["dataset"]["raw_data"]`` (default: the study's
            training set when best.json names it, else "train.traj" to be edited).

    Returns:
        (path of the .py file, path of the .json file).
    """
    best = read_best(study_dir)
    data_path = raw_data or _dataset_path(best, study_dir)
    elements = _elements_from(data_path)
    config = build_amptorch_config(
        best["params"], best["train_config"], raw_data=data_path or "train.traj", elements=elements,
        debug=False, verbose=True, save_fps=True, identifier="mfbo-best", torch_objects=False,
    )
    out = _out_dir(study_dir, out_dir)
    test = best.get("test_metrics") or {}
    notes = untransferable_settings(training_settings(best["params"], best["train_config"]))
    header = "\n".join([
        f"AMPTorch config of the best configuration of the mfbo study {Path(study_dir).resolve()}.",
        "",
        "Use: from amptorch import AtomsTrainer; AtomsTrainer(config).train()",
        "mfbo design hyperparameters: " + json.dumps(best["params"], sort_keys=True),
        ("mfbo test metrics: " + json.dumps(test, sort_keys=True)) if test else "",
        "" if data_path else "Edit config['dataset']['raw_data']: the study did not record its training data.",
        *(["Not transferred from the study's trainer settings:"] + [f"  - {n}" for n in notes] if notes else []),
        "Differences from mfbo's built-in trainer: see docs/amptorch.md.",
    ])
    py_path, json_path = out / AMPTORCH_PY, out / AMPTORCH_JSON
    _write(py_path, render_config_py(config, header))
    _write(json_path, json.dumps(config_to_jsonable(config), indent=2) + "\n")
    return py_path, json_path


def export_mfbo(study_dir, out_dir=None, raw_data=None) -> Path:
    """Write the best configuration as an ``mfbo train`` run file (``mfbo_config.json``).

    It holds ``TrainConfig.to_dict()`` plus the data paths ``mfbo train`` needs: ``train`` (``raw_data``
    when given, else the study's fixed training split), ``val`` (the study's validation split, unless
    ``raw_data`` is given: then it is split off ``train``) and ``test`` when the study has one.
    """
    best = read_best(study_dir)
    settings = training_settings(best["params"], best["train_config"])
    TrainConfig = _training_api("TrainConfig")  # noqa: N806
    if TrainConfig is not None:  # validated by the trainer's own class
        settings = TrainConfig.from_dict(settings).to_dict()
    data_dir = Path(study_dir).resolve() / "data"
    train = str(Path(raw_data).resolve()) if raw_data is not None else _dataset_path(best, study_dir)
    if train is None:
        raise ExportError(f"{data_dir / 'train.traj'} not found: give the training data with --raw-data PATH")
    settings["train"] = train
    if raw_data is None and (data_dir / "val.traj").is_file():
        settings["val"] = str(data_dir / "val.traj")
    if (data_dir / "test.traj").is_file():
        settings["test"] = str(data_dir / "test.traj")
    out = _out_dir(study_dir, out_dir)
    path = out / MFBO_JSON
    _write(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return path
