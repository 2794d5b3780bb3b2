"""Study-specific exception classes (subclasses of the shared hierarchy in :mod:`mfbo.errors`)."""

from __future__ import annotations

from mfbo.errors import ConfigError, StudyError

__all__ = ["StudyFileError", "StudyStopped"]


class StudyFileError(ConfigError):
    """A study file (TOML) is invalid; the message names the file and the field."""


class StudyStopped(StudyError):
    """The study stopped early (e.g. too many failed trials); the message gives the reason."""
