"""The driver's torch threads (``execution.driver_threads``): with local workers the optimiser runs on
the cores they leave free, an explicit number is used as given, and the caller's setting comes back."""

from __future__ import annotations

import torch

from mfbo.optimize import MultiFidelityOptimizer
from mfbo.study import Study
from tests.study.conftest import stored_experiment, write_study


def _run_recording_threads(tmp_path, name: str, execution: dict) -> tuple[list[int], Study]:
    """Run a small study with one local worker; the torch threads in force at every ``ask``."""
    seen: list[int] = []

    def factory(space, **options):
        opt = MultiFidelityOptimizer(space, **options)
        ask = opt.ask

        def recording_ask(n: int = 1):
            seen.append(torch.get_num_threads())
            return ask(n)

        opt.ask = recording_ask
        return opt

    path = write_study(tmp_path / f"{name}.toml", output=f"run-{name}", budget_ffe=0.2, workers=1,
                       execution=execution)
    study = Study.from_file(path, optimizer_factory=factory)
    study.run(progress=False)
    return seen, study


def test_driver_threads_auto_leaves_the_cores_to_local_workers_then_restores(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        # one local worker gets every core (cpu_count // 1), so "auto" leaves the optimiser one thread
        seen, study = _run_recording_threads(tmp_path, "auto", {})
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
        # the Ax record is complete at the end although saves are spaced while trials run
        exp = stored_experiment(study.dir)
        rows = study.trial_rows()
        assert len(exp.trials) == len(rows) and rows
        assert sum(t.status.name == "COMPLETED" for t in exp.trials.values()) == \
            sum(r["status"] == "completed" for r in rows)
        assert study.status()["recommendation"]["params"] is not None

        seen, _ = _run_recording_threads(tmp_path, "three", {"driver_threads": 3})
        assert seen and set(seen) == {3}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
