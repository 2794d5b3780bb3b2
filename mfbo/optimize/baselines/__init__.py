"""Baselines behind ``mfbo.minimize(method=...)``, each configured as its users would.

``get_baseline(method)`` returns a callable with :func:`mfbo.minimize`'s arguments
``(objective, space, budget, seed=0, workers=1, prior=None, constraints=(), callback=None, **options)``
returning a :class:`~mfbo.optimize.MinimizeResult` whose ``history`` lists
``{"cost_ffe", "recommended", "n_trials", "wall_time_s"}`` after every evaluation.

Methods: ``random`` (full fidelity), ``ax-sf`` (Ax's default single-fidelity BO at full fidelity),
``optuna-tpe-hb`` (Optuna TPE + HyperbandPruner on epochs), ``hyperband`` (own implementation), and
``dehb`` / ``smac-mf`` (DEHB and SMAC3's multi-fidelity facade, run in their own interpreter built by
``.ci/setup-peers.sh``, see :mod:`._peers`). Budget accounting: see :mod:`._common` / :class:`BudgetTracker`.
"""

from mfbo.optimize.baselines._ax_sf import ax_single_fidelity
from mfbo.optimize.baselines._common import BudgetTracker, sample_uniform
from mfbo.optimize.baselines._hyperband import hyperband, hyperband_brackets
from mfbo.optimize.baselines._optuna_tpe_hb import optuna_tpe_hb
from mfbo.optimize.baselines._peers import dehb, peers_python, smac_mf
from mfbo.optimize.baselines._random import random_search
from mfbo.optimize.baselines._registry import UnknownBaseline, get_baseline, list_baselines, register_baseline

__all__ = [
    "BudgetTracker",
    "UnknownBaseline",
    "ax_single_fidelity",
    "dehb",
    "get_baseline",
    "hyperband",
    "hyperband_brackets",
    "list_baselines",
    "optuna_tpe_hb",
    "peers_python",
    "random_search",
    "register_baseline",
    "sample_uniform",
    "smac_mf",
]

register_baseline("random", random_search)
register_baseline("ax-sf", ax_single_fidelity)
register_baseline("optuna-tpe-hb", optuna_tpe_hb)
register_baseline("hyperband", hyperband)
register_baseline("dehb", dehb)
register_baseline("smac-mf", smac_mf)
