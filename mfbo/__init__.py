"""mfbo: multi-fidelity Bayesian optimisation of GMP + SingleNN interatomic potentials.

The data flow shows in the subpackages:
``fingerprints`` (GMP engine) -> ``training`` (SingleNN trainer) -> ``objectives``
(what a trial runs) -> ``optimize`` (multi-fidelity BO) -> ``study`` (storage,
launchers, resume) -> ``inspect`` (surrogate views, report). ``priors`` shapes the
search space; ``testing`` holds conformance suites for plug-ins.
"""

from __future__ import annotations

from mfbo.errors import MfboError

__version__ = "0.1.0"

__all__ = ["MfboError", "__version__", "minimize", "Study"]


def __getattr__(name: str):
    # Lazy re-exports: `import mfbo` stays cheap (no torch/Ax import) for the CLI.
    if name == "minimize":
        from mfbo.optimize import minimize

        return minimize
    if name == "Study":
        from mfbo.study import Study

        return Study
    raise AttributeError(f"module 'mfbo' has no attribute {name!r}")
