"""Fixtures: a small multi-fidelity run on a synthetic two-fidelity learning-curve function."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.inspect.inspect_helpers import run_mfbo

SPACE = {
    "x": {"type": "float", "bounds": [0.0, 1.0]},
    "lr": {"type": "float", "bounds": [1e-4, 1e-1], "scale": "log"},
    "layers": {"type": "int", "bounds": [1, 4]},
    "act": {"type": "categorical", "choices": ["tanh", "silu"]},
    "data_fraction": {"type": "fidelity", "bounds": [0.1, 1.0], "target": 1.0},
    "epochs": {"type": "fidelity", "bounds": [1, 27], "target": 27},
}


def synthetic_curve(params: dict, data_fraction: float, epochs: int, seed: int = 0) -> list[float]:
    """Loss after each epoch: power-law decay towards an asymptote that worsens with less data."""
    rng = np.random.default_rng(seed)
    a = (0.05 + 0.6 * (params["x"] - 0.3) ** 2 + 0.05 * (math.log10(params["lr"]) + 2.5) ** 2
         + 0.02 * params["layers"] * (params["act"] == "silu") + 0.15 * (1 - data_fraction))
    t = np.arange(1, epochs + 1)
    curve = a + 0.8 * t ** -0.8
    return list(curve * np.exp(0.01 * rng.standard_normal(epochs)))


def synthetic_objective(params, data_fraction, epochs):
    seed = abs(hash((round(params["x"], 6), round(data_fraction, 3), epochs))) % 2**31
    return {"curve": synthetic_curve(params, data_fraction, epochs, seed=seed),
            "cost": 2.0 * data_fraction * epochs}


class _Prior:
    """Normal belief on x around 0.35 and on log10(lr) around -2.5 (a stand-in with log_prob only)."""

    def log_prob(self, configs):
        return np.array([-0.5 * ((c["x"] - 0.35) / 0.15) ** 2 - 0.5 * ((math.log10(c["lr"]) + 2.5) / 0.6) ** 2
                         for c in configs])


def _stored_trials():
    """A hand-made multi-fidelity history: 8 configs at low fidelities, 6 of them later at target."""
    from mfbo.optimize import SearchSpace, Trial

    space = SearchSpace.from_dict(SPACE)
    configs = space.sample(8, seed=3)
    trials = []
    k = 0
    for i, c in enumerate(configs):
        for df, ep in ((0.25, 3), (0.5, 9)):
            r = synthetic_curve(c, df, ep, seed=100 + k)
            trials.append(Trial(index=k, params=c, data_fraction=df, epochs=ep, curve=r, cost=2 * df * ep))
            k += 1
        if i < 6:
            r = synthetic_curve(c, 1.0, 27, seed=100 + k)
            trials.append(Trial(index=k, params=c, data_fraction=1.0, epochs=27, curve=r, cost=54.0))
            k += 1
    trials.append(Trial(index=k, params=configs[0], data_fraction=0.1, epochs=1, status="failed",
                        error="diverged"))
    return space, trials


@pytest.fixture(scope="session")
def stored_run():
    """(space, trials, surrogate, prior): a MultiFidelityOptimizer told a stored history, and its surrogate."""
    import torch

    from mfbo.optimize import MultiFidelityOptimizer

    torch.manual_seed(0)
    space, trials = _stored_trials()
    opt = MultiFidelityOptimizer(space, seed=0, prior=_Prior())
    for t in trials:
        i = opt.attach(t.params, t.data_fraction, t.epochs)
        if t.status == "completed":
            opt.tell(i, t.curve, t.cost)
        else:
            opt.tell_failed(i, t.error)
    return opt.space, opt.trials, opt.surrogate(), opt.prior


@pytest.fixture(scope="session")
def view(stored_run):
    from mfbo.inspect import SurrogateView

    space, trials, surrogate, prior = stored_run
    return SurrogateView(space, trials, surrogate, prior, objective_name="validation loss (eV/atom)")


@pytest.fixture(scope="session")
def study_report(tmp_path_factory):
    """A real tiny study (mfbo.Study, synthetic two-fidelity problem, final retraining at target fidelity),
    then ``mfbo inspect DIR --out --json``.

    Returns:
        dict with ``study_dir``, ``out`` (report directory), ``numbers`` (the --json output),
        ``n_completed``.
    """
    import json

    from mfbo import Study
    from mfbo.optimize.problems import get_problem

    tmp = tmp_path_factory.mktemp("study")
    problem = get_problem("learning_curve", seed=0, max_epochs=9)
    study_dir = tmp / "study"
    study = Study.create(study_dir, objective=problem, space=problem.space, budget_ffe=0.15, seed=0, final=True,
                         optimizer_options={"n_initial": 6, "raw_samples": 64, "num_restarts": 1})
    study.run(progress=False)
    n_done = sum(t.status == "completed" for t in Study.load(study_dir).trials)
    out = tmp / "report"
    r = run_mfbo("inspect", str(study_dir), "--out", str(out), "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    return {"study_dir": study_dir, "out": out, "numbers": json.loads(r.stdout), "n_completed": n_done,
            "html": out / "report.html"}
