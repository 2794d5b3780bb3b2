"""Studies: run, store, resume and execute multi-fidelity BO trials in parallel.

>>> from mfbo import Study
>>> study = Study.from_file("studies/quickstart.toml")
>>> study.run()                      # or: mfbo run studies/quickstart.toml
>>> Study.load("runs/quickstart").best()

A study directory holds ``study.json`` (the validated config, credentials redacted), the
SQLite database (unless PostgreSQL is used), one atomically written result file per
finished trial in ``results/``, the fixed data split in ``data/``, ``study.log`` and,
when finished, ``best.json`` plus the retrained model. See ``docs/study.md``.
"""

from mfbo.study._config import StudyConfig, load_study_file
from mfbo.study._errors import StudyFileError, StudyStopped
from mfbo.study._launchers import DaskLauncher, Launcher, LocalLauncher, Outcome, make_launcher
from mfbo.study._storage import StudyStore, redact_url, resolve_url
from mfbo.study._study import Study

__all__ = [
    "Study",
    "StudyConfig",
    "load_study_file",
    "StudyFileError",
    "StudyStopped",
    "Launcher",
    "LocalLauncher",
    "DaskLauncher",
    "Outcome",
    "make_launcher",
    "StudyStore",
    "redact_url",
    "resolve_url",
]
