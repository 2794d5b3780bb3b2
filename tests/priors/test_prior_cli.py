"""`mfbo priors`: the real CLI in a subprocess, plus in-process runs of the dispatcher for the error paths."""

import os
import subprocess
import sys
from pathlib import Path

from mfbo.cli import main
from mfbo.priors import load_prior_file

REPO = Path(__file__).resolve().parents[2]


def run(*args, cwd=REPO):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "mfbo.cli", "priors", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_derive_writes_file_and_png_in_a_subprocess(tmp_path):
    out, png = tmp_path / "priors" / "water.toml", tmp_path / "water.png"
    r = run("derive", "mfbo/datasets/water_2d.traj", "--out", str(out), "--png", str(png), "--max-images", "50",
            "--max-epochs", "30")
    assert r.returncode == 0, r.stderr
    spec = load_prior_file(out)
    assert spec.name == "water" and spec.fidelities["epochs"]["target"] == 30
    assert png.stat().st_size > 10_000
    assert "sigma_min" in r.stderr and "cutoff" in r.stderr


def test_user_error_is_one_line_exit_2_in_a_subprocess(tmp_path):
    r = run("derive", str(tmp_path / "missing.traj"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("mfbo priors: error:") and "missing.traj" in r.stderr


def test_derive_to_stdout_and_check(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    assert main(["priors", "derive", "mfbo/datasets/water_2d.traj", "--max-images", "30"]) == 0
    out = capsys.readouterr().out
    assert "[parameters.sigma_min]" in out and out.startswith("# water_2d_physics")
    assert main(["priors", "check", "bundled:nn_defaults", "--samples", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("sample:") == 3 and "num_layers * num_nodes <= 256" in out


def test_error_paths(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[parameters.x]\ntype = "float"\nbounds = [2, 1]\n')
    assert main(["priors", "check", str(bad)]) == 2
    assert f"{bad}:3: parameters.x.bounds" in capsys.readouterr().err
    assert main(["priors", "derive", "mfbo/datasets/water_2d.traj", "--max-images", "0"]) == 2
    assert "--max-images" in capsys.readouterr().err
