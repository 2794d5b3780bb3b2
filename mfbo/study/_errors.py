"""Study-specific exception classes (subclasses of the shared hierarchy in :mod:`mfbo.errors`)."""

from __future__ import annotations

from mfbo.errors import ConfigError, StudyError

__all__ = ["StudyFileError", "StudyStopped", "StudyInterrupted"]


class StudyFileError(ConfigError):
    """A study file (TOML) is invalid; the message names the file and the field."""


class StudyStopped(StudyError):
    """The study stopped early (e.g. too many failed trials); the message gives the reason."""


class StudyInterrupted(StudyError):
    """The driver was stopped by a signal (SIGTERM from a scheduler, Ctrl-C); everything recorded is kept
    and ``mfbo resume DIR`` continues. ``exit_code`` is 128 + the signal number (143, 130)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
