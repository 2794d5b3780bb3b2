"""Conformance suites for mfbo plug-ins: run them on your own implementations.

- Priors: :func:`check_prior` (one call, raises listing every failure) or the pytest mix-in
  :class:`PriorConformance` (one test per check).
- Objectives: :func:`check_objective` (see :mod:`mfbo.testing._objectives`).
"""

from mfbo.testing._prior_suite import PriorConformance, PriorConformanceError, check_prior, prior_checks

__all__ = ["check_prior", "prior_checks", "PriorConformance", "PriorConformanceError",
           "check_objective", "objective_checks", "ObjectiveConformanceError"]

_OBJECTIVE_NAMES = ("check_objective", "objective_checks", "ObjectiveConformanceError")


def __getattr__(name: str):
    # Imported on first use so a problem in one suite never breaks the other.
    if name in _OBJECTIVE_NAMES:
        from mfbo.testing import _objectives

        return getattr(_objectives, name)
    raise AttributeError(f"module 'mfbo.testing' has no attribute {name!r}")
