"""`mfbo init` writes a study for the user's own data that `mfbo run --check` accepts and `mfbo run`
runs to the end; the result carries test errors beside baselines and the study keeps its split."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mfbo.errors import DataError
from tests.study.conftest import run_cli


@pytest.fixture(scope="module")
def water_files(tmp_path_factory):
    from ase.io import read, write

    from mfbo.datasets import WATER

    d = tmp_path_factory.mktemp("data")
    images = read(str(WATER), index=":30")
    write(d / "train.traj", images[:24])
    write(d / "test.traj", images[24:])
    return d / "train.traj", d / "test.traj"


def _energies(path) -> list[float]:
    from ase.io import read

    return [a.get_potential_energy() for a in read(path, ":")]


def test_init_writes_a_study_that_checks_runs_and_reports_against_baselines(tmp_path, water_files):
    train, test = water_files
    r = run_cli("init", train, "--test", test, "--out", "s.toml", "--wall-time", 60, "--workers", 1, "--json",
                cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    plan = json.loads(r.stdout)
    assert plan["n_pool"] == 24 and plan["n_test"] == 6 and plan["elements"] == ["H", "O"] and plan["forces"]
    assert plan["wall_time"] == 60 and plan["workers"] == 1
    assert 0 < plan["search_wall_time"] < 60 and plan["budget_ffe"] > 0
    assert set(plan["metric"]) == {"val_energy_mae_per_atom", "val_force_mae_free"}
    assert (tmp_path / "s.toml").is_file() and (tmp_path / plan["prior_file"]).is_file()

    r = run_cli("run", "s.toml", "--check", cwd=tmp_path, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]
    assert not (tmp_path / "runs").exists()  # --check writes nothing

    r = run_cli("run", "s.toml", "--no-progress", cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "finished" in r.stdout and "x the per-element linear fit" in r.stdout
    study_dir = tmp_path / "runs" / "s"

    r = run_cli("best", study_dir, "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    best = json.loads(r.stdout)
    assert best["final"] is True
    tm = best["test_metrics"]
    assert tm["n_images"] == 6 and tm["energy_mae_per_atom"] > 0 and tm["force_mae"] > 0
    # Baselines on the test file, fitted on the training file (the study's training + validation images).
    from ase.io import read

    from mfbo.training import baseline_metrics

    expected = baseline_metrics(read(train, ":"), read(test, ":"))
    base = best["test_baselines"]
    assert base["linear_fit"]["energy_mae_per_atom"] == pytest.approx(expected["linear_fit"]["energy_mae_per_atom"])
    forces = np.concatenate([a.get_forces(apply_constraint=False) for a in read(test, ":")])
    assert base["zero_forces"]["force_mae"] == pytest.approx(np.abs(forces).mean())
    assert best["test_ratios"]["force_vs_zero"] == pytest.approx(tm["force_mae"] / base["zero_forces"]["force_mae"])
    assert best["unseen_test_elements"] == []

    # The split stays in the study directory: the test file as given, train + validation = the training file.
    data = study_dir / "data"
    assert _energies(data / "test.traj") == _energies(test)
    train_e, val_e = _energies(data / "train.traj"), _energies(data / "val.traj")
    assert val_e and sorted(train_e + val_e) == sorted(_energies(train))


def test_init_refuses_an_existing_study_file_and_data_with_nothing_to_learn(tmp_path, capsys, monkeypatch):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from mfbo.cli import main
    from mfbo.study._init import plan_study

    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.toml").write_text("")
    assert main(["init", "nothing.traj", "--out", "taken.toml"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "taken.toml exists" in err

    # Every image the same molecule with the same energy and no forces: no baseline has an error scale.
    flat = []
    for k in range(12):
        atoms = Atoms("H2O", positions=[(0, 0, 0), (0.96, 0, 0), (-0.24, 0.93, 0)], cell=[10, 10, 10])
        atoms.positions += 0.01 * k
        atoms.calc = SinglePointCalculator(atoms, energy=-14.0, forces=np.zeros((3, 3)))
        flat.append(atoms)
    write(tmp_path / "flat.traj", flat)
    with pytest.raises(DataError, match="nothing for a potential to learn"):
        plan_study(tmp_path / "flat.traj", out=tmp_path / "flat.toml", wall_time=60, workers=1)


def test_init_writes_its_seed_into_the_study_file(tmp_path, water_files):
    from mfbo.study._config import load_study_file
    from mfbo.study._init import plan_study, write_study_file

    train, test = water_files
    plan = plan_study(train, test=test, out=tmp_path / "s.toml", wall_time=60, workers=1, seed=7)
    path = write_study_file(plan)
    assert plan.seed == 7
    assert "\nseed = 7\n" in path.read_text()
    assert load_study_file(path, check_output=False).seed == 7
