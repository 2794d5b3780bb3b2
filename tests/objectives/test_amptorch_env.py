"""AMPTorch's interpreter: finding it, the worker's light import chain, and failing at once.

None of these needs AMPTorch: a missing interpreter, and mfbo's own interpreter (which has no
AMPTorch) standing in for a broken AMPTorch environment, must each fail in one line naming the
cause. The real AMPTorch runs are in test_amptorch_real.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mfbo.errors import BackendUnavailable, ObjectiveError
from mfbo.objectives._amptorch import AmptorchObjective
from mfbo.objectives._amptorch_env import (
    ENV_VAR,
    find_python,
    require_amptorch,
    run_worker,
    tiny_images,
    worker_env,
)
from tests.helpers import REPO, WATER, cli_env, run_cli, water_study


def test_worker_import_chain_is_free_of_the_optimiser_stack():
    # Run in mfbo's own environment, where Ax, BoTorch, GPyTorch, Dask and vesin are installed:
    # the worker must not import them (AMPTorch's environment does not have them).
    code = (
        "import sys, json; import mfbo.objectives._amptorch_worker; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(drop=[ENV_VAR]),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    modules = set(json.loads(proc.stdout))
    tops = {m.split(".")[0] for m in modules}
    assert not tops & {"ax", "botorch", "gpytorch", "dask", "distributed", "vesin", "torch", "skorch"}
    # nor mfbo's trainer, fingerprint engine or study machinery
    assert not {m for m in modules if m.startswith(("mfbo.training._train", "mfbo.fingerprints", "mfbo.study",
                                                    "mfbo.optimize"))}


def test_named_interpreter_that_does_not_exist_fails_in_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(BackendUnavailable) as info:
        find_python(tmp_path / "nope" / "python")
    message = str(info.value)
    assert "objective option python" in message and str(tmp_path / "nope") in message and "\n" not in message
    assert "MFBO_AMPTORCH_PYTHON" in message and "docs/amptorch.md" in message

    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(BackendUnavailable, match=f"{ENV_VAR} = {tmp_path / 'missing'}"):
        find_python()
    assert find_python(sys.executable) == sys.executable  # the option wins over the variable

    monkeypatch.delenv(ENV_VAR)
    monkeypatch.setenv("MFBO_AMPTORCH_ENV", str(tmp_path / "no-env"))
    with pytest.raises(BackendUnavailable, match="no AMPTorch interpreter named"):
        find_python()
    fake = tmp_path / "no-env" / "venv" / "bin" / "python"
    fake.parent.mkdir(parents=True)
    fake.write_text("")
    assert find_python() == str(fake)  # the default environment, when present


def test_an_environment_without_amptorch_fails_the_smoke_fit_with_the_exact_error():
    # mfbo's own interpreter has no AMPTorch: the smoke fit reports the import error itself.
    with pytest.raises(BackendUnavailable) as info:
        require_amptorch(sys.executable)
    message = str(info.value)
    assert "1-epoch smoke fit" in message and sys.executable in message
    assert "ModuleNotFoundError: No module named 'amptorch'" in message and "\n" not in message
    with pytest.raises(BackendUnavailable, match="No module named 'amptorch'"):
        AmptorchObjective(str(WATER), python=sys.executable)

    # A trial in such an environment fails with the same one line (no smoke fit asked for).
    import ase.io

    images = ase.io.read(str(WATER), ":8")
    objective = AmptorchObjective(images[:6], images[6:], python=sys.executable, smoke=False)
    with pytest.raises(ObjectiveError, match="^AMPTorch failed: ModuleNotFoundError: No module named 'amptorch'$"):
        objective.evaluate({}, 1.0, 1)


def test_a_worker_that_dies_without_a_result_is_reported_with_its_exit_code(tmp_path):
    with pytest.raises(ObjectiveError, match="exited with code 1 without a result"):
        run_worker("/bin/false", {"config": {}}, tmp_path)
    env = worker_env(threads=3)
    assert env["PYTHONPATH"] == str(REPO) and env["OMP_NUM_THREADS"] == "3"


def test_tiny_images_hold_every_element_and_differ():
    images = tiny_images(["Cu", "O", "C", "O"])
    assert len(images) == 2
    assert sorted(images[0].get_chemical_symbols()) == ["C", "Cu", "O"]
    assert images[0].get_potential_energy() != images[1].get_potential_energy()
    assert (images[0].get_forces() != images[1].get_forces()).any()
    assert len(tiny_images(["H"])[0]) == 2  # one element: two atoms, so there is a neighbour


def test_study_choosing_amptorch_in_a_broken_environment_fails_at_once_through_the_cli(tmp_path):
    study = water_study(tmp_path / "amp.toml", backend="amptorch", options={"python": sys.executable}, metric=None,
                        base_config={}, data={"subsample": 12, "val_fraction": 0.25},
                        space={"lr": {"type": "float", "bounds": [0.0001, 0.01], "scale": "log"}},
                        epochs=(1, 2), budget_ffe=1, optimizer=None, seed=0)
    proc = run_cli("run", study, cwd=tmp_path, env=cli_env(drop=[ENV_VAR]), timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("mfbo run: error: ") and "Traceback" not in proc.stderr
    assert "smoke fit" in errors[0] and "No module named 'amptorch'" in errors[0]
    assert not list((tmp_path / "run").glob("results/*.json"))  # nothing was trained
