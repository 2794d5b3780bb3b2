"""A consistent, read-only snapshot of a (possibly running) study directory.

The driver keeps writing while a user inspects, so the report never reads the live
directory: SQLite databases are copied through SQLite's online-backup API (a
transactionally consistent copy that includes committed WAL pages), other files are
copied as they are, and files that vanish or are being written (``*.tmp``, ``*.partial``)
are skipped. The study is then loaded from the copy by the loader the caller passes
(``mfbo.study`` passes ``Study.load``), so this package never imports ``mfbo.study``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from mfbo.inspect._view import InspectError, SurrogateView

__all__ = ["snapshot_study_dir", "load_view", "study_view", "metric_label"]

_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
_SKIP_SUFFIXES = (".tmp", ".partial", "-wal", "-shm", "-journal", ".lock")
# Trained-model files and the like are not needed to inspect the surrogate.
_MAX_FILE_BYTES = 64 * 1024 * 1024


def _is_sqlite(path: Path) -> bool:
    if path.suffix not in _SQLITE_SUFFIXES:
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def _backup_sqlite(src: Path, dst: Path) -> None:
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()


def snapshot_study_dir(study_dir: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Copy ``study_dir`` into ``dest`` consistently (see module docstring).

    Returns:
        the path of the copy.
    Raises:
        InspectError: when ``study_dir`` is not a directory.
    """
    src = Path(study_dir)
    if not src.is_dir():
        raise InspectError(f"{src}: not a study directory (it does not exist or is a file); pass the "
                           "directory a study writes (its 'output' field)")
    dst = Path(dest)
    dst.mkdir(parents=True, exist_ok=True)
    for root, dirs, files in os.walk(src):
        rel = Path(root).relative_to(src)
        # Never recurse into earlier reports.
        dirs[:] = [d for d in dirs if not (rel == Path(".") and d == "inspect")]
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            p = Path(root) / name
            if name.endswith(_SKIP_SUFFIXES):
                continue
            try:
                if p.stat().st_size > _MAX_FILE_BYTES:
                    continue
                if _is_sqlite(p):
                    _backup_sqlite(p, dst / rel / name)
                else:
                    shutil.copy2(p, dst / rel / name)
            except (FileNotFoundError, sqlite3.Error, PermissionError):
                continue  # vanished or locked mid-copy: the snapshot is what had settled
    return dst


def _read_best(directory: Path) -> dict | None:
    """``best.json`` of a study directory (None when absent or unreadable)."""
    try:
        best = json.loads((directory / "best.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return best if isinstance(best, dict) else None


def study_view(study, directory: str | os.PathLike | None = None, *, objective_name: str | None = None,
               seed: int = 0) -> SurrogateView:
    """The surrogate view of a loaded study, recommending what the study recommends.

    Args:
        study: a loaded study (``mfbo.Study``): ``surrogate()`` (a view or a bare surrogate), and
            ``space``, ``trials``, ``prior``, ``config.metric``, ``experiment``, ``optimizer()`` when the
            surrogate is bare or no final retraining exists.
        directory: the study directory holding ``best.json`` (default: ``study.dir``).
        objective_name: axis label of the objective (default: from the study's metric, with units).
        seed: seed of the view's random draws when the study does not give one.

    Returns:
        a :class:`SurrogateView` whose recommended configuration is ``best.json``'s when the study
        retrained one at target fidelity, else the study optimiser's recommendation.
    """
    view = study.surrogate()
    if not isinstance(view, SurrogateView):
        # A bare surrogate (predict only): wrap it with the study's space, trials and prior.
        space = getattr(study, "space", None)
        if space is None:
            space = getattr(getattr(view, "encoder", None), "space", None) or getattr(view, "space", None)
        if space is None:
            raise InspectError("the study exposes no search space; cannot inspect its surrogate")
        if objective_name is None:
            objective_name = metric_label(getattr(getattr(study, "config", None), "metric", None))
        view = SurrogateView(space, study.trials, view, getattr(study, "prior", None),
                             objective_name=objective_name, seed=seed,
                             experiment=getattr(study, "experiment", None))
    elif objective_name is not None:
        view.objective_name = objective_name
    d = directory if directory is not None else getattr(study, "dir", None)
    best = _read_best(Path(d)) if d is not None else None
    recommendation = None
    if not (best and best.get("final")):
        optimizer = getattr(study, "optimizer", None)
        try:
            recommendation = optimizer().recommend() if callable(optimizer) else None
        except Exception:  # noqa: BLE001 - without it the view's own rule recommends
            recommendation = None
    view.set_recommendation(recommendation, final=best)
    return view


def metric_label(metric) -> str:
    """Axis label with units for the study's metric name."""
    units = {"val_energy_mae_per_atom": "validation energy MAE (eV/atom)",
             "val_energy_mae": "validation energy MAE (eV)",
             "val_force_mae": "validation force MAE (eV/Å)",
             "val_force_mae_free": "validation force MAE, free atoms (eV/Å)"}
    if isinstance(metric, str):
        return units.get(metric, metric)
    if isinstance(metric, dict):
        return "weighted validation metric (" + " + ".join(f"{w:g}·{k}" for k, w in metric.items()) + ")"
    return "objective"


def load_view(study_dir: str | os.PathLike, load_study, *, seed: int = 0, objective_name: str | None = None):
    """Load a study directory's surrogate view from a consistent snapshot.

    Args:
        study_dir: the study directory (running or finished).
        load_study: ``load_study(path) -> study`` opening a study directory read-only, e.g.
            ``lambda d: mfbo.Study.load(d, readonly=True)``.
        seed: seed of the report's random draws.
        objective_name: axis label of the objective (default: from the study's metric).

    Returns:
        ``(view, tmpdir)``; the caller removes ``tmpdir`` (a :class:`tempfile.TemporaryDirectory`)
        when done.
    """
    tmp = tempfile.TemporaryDirectory(prefix="mfbo-inspect-")
    try:
        snap = snapshot_study_dir(study_dir, Path(tmp.name) / Path(study_dir).resolve().name)
        study = load_study(snap)
        return study_view(study, snap, objective_name=objective_name, seed=seed), tmp
    except BaseException:
        tmp.cleanup()
        raise
