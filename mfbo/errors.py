"""mfbo's exception hierarchy.

Every error a user can cause derives from :class:`MfboError`; the CLI prints its
message on one line and exits non-zero, with no traceback. Messages name the file,
field or element at fault and say what to do about it.
"""

from __future__ import annotations

__all__ = [
    "MfboError",
    "ConfigError",
    "DataError",
    "FingerprintError",
    "ValenceDensityError",
    "TrainingError",
    "TrainingDiverged",
    "ModelFileError",
    "ObjectiveError",
    "BackendUnavailable",
    "SearchSpaceError",
    "OptimizerError",
    "PriorError",
    "StudyError",
    "StorageError",
    "LauncherError",
]


class MfboError(Exception):
    """Base class of every error mfbo raises on purpose."""


class ConfigError(MfboError, ValueError):
    """A parameter, config field or study-file field is invalid (the message names it)."""


class DataError(MfboError, ValueError):
    """An input structure or dataset file is unreadable or lacks what is needed."""


class FingerprintError(MfboError, ValueError):
    """Fingerprint parameters are invalid or unsupported (bad sigma, cutoff, order, group)."""


class ValenceDensityError(FingerprintError):
    """A valence-density (.g) file is missing for an element or is malformed."""


class TrainingError(MfboError):
    """Training a potential failed."""


class TrainingDiverged(TrainingError):
    """The loss became NaN/inf or blew up.

    Attributes:
        epoch: the 1-based epoch at which divergence was detected.
        last_metrics: the last finite learning-curve entry (dict) or None.
    """

    def __init__(self, message: str, epoch: int, last_metrics: dict | None = None):
        super().__init__(message)
        self.epoch = epoch
        self.last_metrics = last_metrics

    def __reduce__(self):  # picklable, so it crosses process boundaries (workers, torchrun) as itself
        return (type(self), (str(self), self.epoch, self.last_metrics))


class ModelFileError(MfboError):
    """A saved model file is missing, truncated, tampered with or of another version."""


class ObjectiveError(MfboError):
    """An objective evaluation failed or returned a malformed result."""


class BackendUnavailable(ObjectiveError):
    """An optional objective backend (e.g. AMPTorch) is not installed."""


class SearchSpaceError(ConfigError):
    """A search-space specification is invalid."""


class OptimizerError(MfboError):
    """The optimiser cannot proceed (e.g. no feasible candidate)."""


class PriorError(ConfigError):
    """A prior file or custom prior is invalid."""


class StudyError(MfboError):
    """A study cannot be created, run or resumed."""


class StorageError(StudyError):
    """The study store (SQLite/PostgreSQL or result files) cannot be read or written."""


class LauncherError(StudyError):
    """A trial launcher (process pool, Dask) failed."""
