"""Prior files (TOML): search space, beliefs, constraints and fidelity ranges in one place.

Layout (every table optional except ``parameters``)::

    name = "gmp_physics"
    description = "..."
    constraints = ["sigma_min < sigma_max", "cutoff >= 3 * sigma_max", "n_features <= 64"]

    [parameters.sigma_min]
    type = "float"                 # float | int | categorical
    bounds = [0.1, 0.5]            # Å
    scale = "log"                  # linear (default) | log
    prior = { dist = "lognormal", median = 0.25, log_std = 0.35 }

    [parameters.activation]
    type = "categorical"
    choices = ["tanh", "silu"]
    prior = { dist = "categorical", weights = { tanh = 0.7, silu = 0.3 } }

    [fidelities.data_fraction]
    bounds = [0.05, 1.0]
    target = 1.0

    [custom_prior]                 # optional: a Python prior instead of the per-parameter beliefs
    class = "mypkg.priors:MyPrior"
    options = { width = 0.5 }

Errors name the file, the line and the field: ``priors/x.toml:12: parameters.lr.bounds: ...``.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mfbo.errors import MfboError, PriorError
from mfbo.optimize import SearchSpace
from mfbo.priors._base import Prior, load_prior
from mfbo.priors._beliefs import BELIEF_FIELDS, Belief, ProductPrior
from mfbo.priors._expr import Constraint

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["PriorSpec", "PriorFileError", "load_prior_file", "parse_prior_dict", "dump_prior_spec",
           "write_prior_file", "merge_prior_specs"]

_TOP = ("name", "description", "constraints", "parameters", "fidelities", "custom_prior")
_PARAM_KEYS = ("type", "bounds", "scale", "choices", "prior", "description")
_FID_KEYS = ("bounds", "target", "kind", "scale", "description")


class PriorFileError(PriorError):
    """A prior file is malformed; the message names the file, line and field."""


@dataclass
class PriorSpec:
    """A parsed prior file.

    Attributes:
        space: plain dict for ``mfbo.optimize.SearchSpace.from_dict`` (design parameters, each with its
            ``prior`` entry when it has one, then the fidelities).
        prior: the Prior (a :class:`ProductPrior` of the per-parameter beliefs and constraints, or the
            ``custom_prior``).
        constraints: parsed constraints.
        fidelities: ``{"data_fraction": {"type": "fidelity", "bounds": [...], "target": ...}, ...}``.
        name, description: from the file.
        path: the file it came from (None when built from a dict).
        custom_prior: the ``custom_prior`` table (``{"class": ..., "options": {...}}``) or None.
        comments: optional comments the writer puts in the file: ``{"header": [lines], "parameters":
            {name: [lines]}, "constraints": {expression: text}, "fidelities": {name: [lines]}}``.
    """

    space: dict
    prior: Prior
    constraints: tuple[Constraint, ...]
    fidelities: dict
    name: str = ""
    description: str = ""
    path: Path | None = None
    custom_prior: dict | None = None
    comments: dict = field(default_factory=dict)

    def search_space(self) -> SearchSpace:
        """The :class:`SearchSpace` (beliefs kept in each parameter's ``extra``)."""
        return SearchSpace.from_dict(self.space)

    @property
    def design_space(self) -> dict:
        """The design parameters only (no fidelities)."""
        return {k: v for k, v in self.space.items() if k not in self.fidelities}

    def to_dict(self) -> dict:
        """The file's structure as a plain dict (what :func:`parse_prior_dict` reads back)."""
        d: dict[str, Any] = {}
        if self.name:
            d["name"] = self.name
        if self.description:
            d["description"] = self.description
        d["constraints"] = [str(c) for c in self.constraints]
        d["parameters"] = {k: dict(v) for k, v in self.design_space.items()}
        d["fidelities"] = {k: {kk: vv for kk, vv in v.items() if kk != "type"} for k, v in self.fidelities.items()}
        if self.custom_prior is not None:
            d["custom_prior"] = dict(self.custom_prior)
        return d


# -- locating lines for messages ------------------------------------------------------------------
_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")


def _split_key(key: str) -> tuple[str, ...]:
    return tuple(part.strip().strip('"').strip("'") for part in key.split("."))


def _locator(text: str) -> Callable[[tuple[str, ...]], int | None]:
    """A function path -> 1-based line where the field at ``path`` (e.g. ("parameters", "lr", "bounds"))
    is defined, best effort (headers, ``key =`` lines, inline tables)."""
    lines = text.splitlines()
    entries: list[tuple[tuple[str, ...], int]] = []  # (full key path, line)
    table: tuple[str, ...] = ()
    for no, line in enumerate(lines, start=1):
        m = _HEADER.match(line)
        if m:
            table = _split_key(m.group(1))
            entries.append((table, no))
            continue
        km = re.match(r"^\s*([A-Za-z0-9_\-\.\"' ]+?)\s*=", line)
        if km:
            path = table + _split_key(km.group(1))
            entries.append((path, no))
            # inline table on the same line: record its keys too
            for ik in re.finditer(r"[{,]\s*([A-Za-z0-9_\-]+)\s*=", line):
                entries.append((path + (ik.group(1),), no))

    def locate(path: tuple[str, ...]) -> int | None:
        for n in range(len(path), 0, -1):
            for p, no in entries:
                if p == path[:n]:
                    return no
        return None

    return locate


def _string_line(text: str, value: str) -> int | None:
    for no, line in enumerate(text.splitlines(), start=1):
        if f'"{value}"' in line or f"'{value}'" in line:
            return no
    return None


class _Ctx:
    def __init__(self, source: str, text: str | None):
        self.source = source
        self.text = text
        self.locate = _locator(text) if text is not None else (lambda path: None)

    def error(self, path: Sequence[str], msg: str, line: int | None = None) -> PriorFileError:
        line = line if line is not None else self.locate(tuple(path))
        where = f"{self.source}:{line}" if line else self.source
        return PriorFileError(f"{where}: {'.'.join(path)}: {msg}")


# -- parsing ----------------------------------------------------------------------------------------
BUNDLED_PREFIX = "bundled:"
_BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"


def bundled_priors() -> list[str]:
    """Names of the prior files shipped inside the package (``bundled:NAME``)."""
    return sorted(p.stem for p in _BUNDLED_DIR.glob("*.toml"))


def resolve_prior_path(path: str | Path) -> Path:
    """A prior file's path; ``"bundled:NAME"`` names one shipped inside the package.

    Raises:
        PriorFileError: an unknown bundled name (the known ones listed).
    """
    text = str(path)
    if not text.startswith(BUNDLED_PREFIX):
        return Path(path)
    name = text[len(BUNDLED_PREFIX) :]
    if name not in bundled_priors():
        raise PriorFileError(f"{text}: no bundled prior file {name!r}; bundled: {bundled_priors()}")
    return _BUNDLED_DIR / f"{name}.toml"


def load_prior_file(path: str | Path) -> PriorSpec:
    """Read a prior file.

    Args:
        path: the TOML file, or ``"bundled:NAME"`` for one shipped with mfbo (e.g. ``bundled:nn_defaults``).

    Returns:
        the :class:`PriorSpec`.

    Raises:
        PriorFileError: unreadable file, TOML syntax error or invalid field (file, line and field named).
    """
    path = resolve_prior_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PriorFileError(f"{path}: cannot read prior file ({exc.strerror or exc})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"line (\d+), column (\d+)", msg)
        line = int(m.group(1)) if m else None
        near = ""
        if line and 1 <= line <= len(text.splitlines()):
            src = text.splitlines()[line - 1]
            key = src.split("=", 1)[0].strip() if "=" in src else ""
            near = f" (field {key!r}: {src.strip()!r})" if key else f" ({src.strip()!r})"
        where = f"{path}:{line}" if line else str(path)
        raise PriorFileError(f"{where}: TOML syntax error: {msg}{near}") from exc
    spec = parse_prior_dict(data, source=str(path), _text=text)
    spec.path = path
    return spec


def parse_prior_dict(data: Mapping[str, Any], source: str = "<prior>", _text: str | None = None) -> PriorSpec:
    """Build a :class:`PriorSpec` from the file's structure as a dict (see module docstring).

    Args:
        data: the parsed TOML (or an equivalent dict).
        source: name used in error messages.

    Returns:
        the PriorSpec.
    """
    ctx = _Ctx(source, _text)
    if not isinstance(data, Mapping):
        raise ctx.error([], "a prior file must be a table")
    for k in data:
        if k not in _TOP:
            raise ctx.error([k], f"unknown top-level field; expected one of {list(_TOP)}")
    name = data.get("name", "")
    description = data.get("description", "")
    for f, v in (("name", name), ("description", description)):
        if not isinstance(v, str):
            raise ctx.error([f], f"must be a string, got {v!r}")
    params = data.get("parameters")
    if not isinstance(params, Mapping) or not params:
        raise ctx.error(["parameters"], "needs at least one [parameters.NAME] table")
    space: dict[str, dict] = {}
    for pname, pspec in params.items():
        space[pname] = _parse_parameter(ctx, pname, pspec)
    fids_raw = data.get("fidelities", {})
    if not isinstance(fids_raw, Mapping):
        raise ctx.error(["fidelities"], "must be a table of [fidelities.NAME] tables")
    fidelities: dict[str, dict] = {}
    for fname, fspec in fids_raw.items():
        if fname in space:
            raise ctx.error(["fidelities", fname], "is also a design parameter; pick one")
        fidelities[fname] = _parse_fidelity(ctx, fname, fspec)
    space.update(fidelities)
    try:
        search = SearchSpace.from_dict(space)
    except MfboError as exc:
        raise ctx.error(["parameters"], str(exc)) from exc
    raw_constraints = data.get("constraints", [])
    if not isinstance(raw_constraints, Sequence) or isinstance(raw_constraints, str):
        raise ctx.error(["constraints"], "must be a list of strings such as \"cutoff >= 3 * sigma_max\"")
    constraints = []
    names = [p.name for p in search.parameters]
    for i, c in enumerate(raw_constraints):
        line = _string_line(_text, c) if (_text is not None and isinstance(c, str)) else None
        try:
            con = Constraint(c)
            con.check_names(names)
        except PriorError as exc:
            raise ctx.error(["constraints", str(i)], str(exc), line=line or ctx.locate(("constraints",))) from exc
        constraints.append(con)
    custom = data.get("custom_prior")
    try:
        if custom is not None:
            if not isinstance(custom, Mapping) or not isinstance(custom.get("class"), str):
                raise PriorError("must be a table with a 'class' = \"pkg.module:ClassName\" entry")
            extra = sorted(set(custom) - {"class", "options"})
            if extra:
                raise PriorError(f"unknown field(s) {extra}; expected 'class' and 'options'")
            prior = load_prior(custom["class"], **dict(custom.get("options") or {}))
            custom = {"class": custom["class"], "options": dict(custom.get("options") or {})}
        else:
            prior = ProductPrior(search, constraints)
    except PriorError as exc:
        raise ctx.error(["custom_prior"], str(exc)) from exc
    return PriorSpec(space=space, prior=prior, constraints=tuple(constraints), fidelities=fidelities, name=name,
                     description=description, custom_prior=custom)


def _parse_parameter(ctx: _Ctx, name: str, spec: Any) -> dict:
    path = ["parameters", name]
    if not isinstance(spec, Mapping):
        raise ctx.error(path, f"must be a table, got {spec!r}")
    for k in spec:
        if k not in _PARAM_KEYS:
            raise ctx.error(path + [k], f"unknown field; expected one of {list(_PARAM_KEYS)}")
    ptype = spec.get("type")
    if ptype not in ("float", "int", "categorical"):
        raise ctx.error(path + ["type"], f"must be 'float', 'int' or 'categorical', got {ptype!r}")
    out: dict[str, Any] = {"type": ptype}
    if ptype == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ctx.error(path + ["choices"], "must be a non-empty list")
        for bad in ("bounds", "scale"):
            if bad in spec:
                raise ctx.error(path + [bad], "does not apply to a categorical parameter")
        out["choices"] = list(choices)
    else:
        bounds = spec.get("bounds")
        if (not isinstance(bounds, list) or len(bounds) != 2
                or any(isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b)
                       for b in bounds)):
            raise ctx.error(path + ["bounds"], f"must be [low, high] numbers, got {bounds!r}")
        if not bounds[0] < bounds[1]:
            raise ctx.error(path + ["bounds"], f"must satisfy low < high, got {bounds}")
        if ptype == "int" and any(float(b) != int(b) for b in bounds):
            raise ctx.error(path + ["bounds"], f"an int parameter needs integer bounds, got {bounds}")
        scale = spec.get("scale", "linear")
        if scale not in ("linear", "log"):
            raise ctx.error(path + ["scale"], f"must be 'linear' or 'log', got {scale!r}")
        if scale == "log" and bounds[0] <= 0:
            raise ctx.error(path + ["bounds"], f"a log-scaled parameter needs low > 0, got {bounds}")
        out["bounds"] = [int(b) for b in bounds] if ptype == "int" else [float(b) for b in bounds]
        if scale == "log":
            out["scale"] = "log"
        if "choices" in spec:
            raise ctx.error(path + ["choices"], f"only categorical parameters take choices ({name!r} is {ptype})")
    if "description" in spec:
        if not isinstance(spec["description"], str):
            raise ctx.error(path + ["description"], "must be a string")
        out["description"] = spec["description"]
    if "prior" in spec:
        prior = spec["prior"]
        if not isinstance(prior, Mapping):
            raise ctx.error(path + ["prior"], f"must be a table such as {{ dist = \"normal\", mean = 1, std = 0.5 }}, "
                            f"got {prior!r}")
        dist = prior.get("dist")
        ppath = path + ["prior"]
        try:
            Belief(SearchSpace.from_dict({name: out}).parameters[0], prior)
        except PriorError as exc:
            # point at the offending sub-field when the message names one
            m = re.search(r"field '(\w+)'", str(exc))
            sub = [m.group(1)] if m and m.group(1) in (*BELIEF_FIELDS.get(dist, ()), "dist") else []
            msg = str(exc).split(": prior: ", 1)[-1]
            raise ctx.error(ppath + sub, msg) from exc
        out["prior"] = dict(prior)
    return out


def _parse_fidelity(ctx: _Ctx, name: str, spec: Any) -> dict:
    path = ["fidelities", name]
    if not isinstance(spec, Mapping):
        raise ctx.error(path, f"must be a table, got {spec!r}")
    for k in spec:
        if k not in _FID_KEYS:
            raise ctx.error(path + [k], f"unknown field; expected one of {list(_FID_KEYS)}")
    out = {"type": "fidelity", **{k: v for k, v in spec.items() if k != "description"}}
    try:
        SearchSpace.from_dict({name: out, "_x": {"type": "float", "bounds": [0, 1]}})
    except MfboError as exc:
        m = re.search(r"field '(\w+)'|(bounds|target)", str(exc))
        sub = [m.group(1) or m.group(2)] if m else []
        raise ctx.error(path + sub, str(exc)) from exc
    if "description" in spec:
        out["description"] = spec["description"]
    return out


# -- merging ------------------------------------------------------------------------------------------
def merge_prior_specs(*specs: PriorSpec) -> PriorSpec:
    """Combine prior files (e.g. ``gmp_physics.toml`` + ``nn_defaults.toml``) into one.

    Parameters must not repeat; fidelities may repeat only with identical settings; constraints add up.
    Custom priors cannot be merged (the result's prior is the product of the files' beliefs).
    """
    if not specs:
        raise PriorError("merge_prior_specs needs at least one PriorSpec")
    params: dict[str, dict] = {}
    fids: dict[str, dict] = {}
    origin: dict[str, str] = {}
    constraints: list[Constraint] = []
    comments: dict[str, Any] = {"header": [], "parameters": {}, "constraints": {}, "fidelities": {}}
    for s in specs:
        src = str(s.path or s.name or "<prior>")
        if s.custom_prior is not None:
            raise PriorError(f"{src}: a prior file with a custom_prior cannot be merged with others")
        for k, v in s.design_space.items():
            if k in params:
                raise PriorError(f"parameter {k!r} is defined in both {origin[k]} and {src}")
            params[k], origin[k] = v, src
        for k, v in s.fidelities.items():
            if k in fids and fids[k] != v:
                raise PriorError(f"fidelity {k!r} differs between {origin[k]} ({fids[k]}) and {src} ({v})")
            fids.setdefault(k, v)
            origin.setdefault(k, src)
        constraints.extend(c for c in s.constraints if c not in constraints)
        for key in ("parameters", "constraints", "fidelities"):
            comments[key].update(s.comments.get(key, {}))
    data = {"name": "+".join(s.name for s in specs if s.name),
            "parameters": params, "fidelities": {k: {kk: vv for kk, vv in v.items() if kk != "type"}
                                                 for k, v in fids.items()},
            "constraints": [str(c) for c in constraints]}
    merged = parse_prior_dict(data, source="+".join(str(s.path or s.name) for s in specs))
    merged.comments = comments
    return merged


# -- writing --------------------------------------------------------------------------------------------
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        r = repr(v)
        return r if any(ch in r for ch in ".en") else r + ".0"
    if isinstance(v, str):
        out = ['"']
        for ch in v:
            if ch in '"\\':
                out.append("\\" + ch)
            elif ch == "\n":
                out.append("\\n")
            elif ch == "\t":
                out.append("\\t")
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)
    if isinstance(v, Mapping):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if hasattr(v, "item"):  # numpy scalar
        return _toml_value(v.item())
    raise PriorError(f"cannot write {v!r} ({type(v).__name__}) to a prior file")


def _toml_key(k: Any) -> str:
    k = str(k)
    return k if re.fullmatch(r"[A-Za-z0-9_\-]+", k) else _toml_value(k)


def _comment_lines(lines: Sequence[str] | str | None, indent: str = "") -> list[str]:
    if not lines:
        return []
    if isinstance(lines, str):
        lines = lines.splitlines()
    return [f"{indent}# {ln}".rstrip() for ln in lines]


def dump_prior_spec(spec: PriorSpec, comments: Mapping[str, Any] | None = None) -> str:
    """The TOML text of a prior spec, with optional comments (see :attr:`PriorSpec.comments`).

    Returns:
        text that :func:`load_prior_file` reads back to an equal spec.
    """
    comments = dict(spec.comments, **(comments or {}))
    d = spec.to_dict()
    out: list[str] = _comment_lines(comments.get("header"))
    if out:
        out.append("")
    for key in ("name", "description"):
        if key in d:
            out.append(f"{key} = {_toml_value(d[key])}")
    ccom = comments.get("constraints", {})
    if d["constraints"]:
        out.append("constraints = [")
        for c in d["constraints"]:
            out.extend(_comment_lines(ccom.get(c), indent="    "))
            out.append(f"    {_toml_value(c)},")
        out.append("]")
    else:
        out.append("constraints = []")
    for section in ("parameters", "fidelities"):
        pcom = comments.get(section, {})
        for pname, pspec in d.get(section, {}).items():
            out.append("")
            out.extend(_comment_lines(pcom.get(pname)))
            out.append(f"[{section}.{_toml_key(pname)}]")
            for k, v in pspec.items():
                out.append(f"{_toml_key(k)} = {_toml_value(v)}")
    if "custom_prior" in d:
        out.append("")
        out.append("[custom_prior]")
        for k, v in d["custom_prior"].items():
            out.append(f"{_toml_key(k)} = {_toml_value(v)}")
    return "\n".join(out) + "\n"


def write_prior_file(spec: PriorSpec, path: str | Path, comments: Mapping[str, Any] | None = None) -> Path:
    """Write ``spec`` as a TOML prior file (parent folders created).

    Returns:
        the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_prior_spec(spec, comments), encoding="utf-8")
    return path
