"""Result files: each finished trial's record, written atomically by the worker.

A result file is written to ``<name>.tmp-<pid>`` then moved into place with
``os.replace`` (atomic on POSIX), so a reader sees the whole record or nothing, and a
driver crash never loses a finished trial.
"""

from __future__ import annotations

import json
import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["write_json_atomic", "write_json_new", "read_json", "result_path", "package_versions"]

_VERSIONED = ("mfbo", "torch", "ax-platform", "botorch", "gpytorch", "numpy", "ase")


def _write_synced_tmp(path: Path, obj: Any) -> Path:
    """``obj`` as JSON in a temporary file beside ``path``, flushed to disk; returns the temporary path."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        json.dump(obj, fh, indent=1, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    return tmp


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (temporary file + fsync + os.replace)."""
    path = Path(path)
    os.replace(_write_synced_tmp(path, obj), path)


def write_json_new(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` complete and only if ``path`` does not exist yet.

    Raises:
        FileExistsError: ``path`` exists (it is left unchanged).
    """
    path = Path(path)
    tmp = _write_synced_tmp(path, obj)
    try:
        os.link(tmp, path)  # atomic, and refuses to replace an existing file
    finally:
        tmp.unlink()


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as fh:
        return json.load(fh)


def result_path(study_dir: str | os.PathLike, trial_id: int | str) -> Path:
    """Where trial ``trial_id``'s result file lives (``"final"`` for the end-of-study run)."""
    name = f"trial_{trial_id:06d}.json" if isinstance(trial_id, int) else f"{trial_id}.json"
    return Path(study_dir) / "results" / name


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Versions of the packages a result depends on, plus Python and the host."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    out["host"] = platform.node()
    return out
