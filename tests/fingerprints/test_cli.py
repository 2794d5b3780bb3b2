"""`mfbo fingerprint` through the real CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import molecule
from ase.io import write

REPO = Path(__file__).resolve().parents[2]
PARAMS = {
    "fp_scheme": "gmpordernorm",
    "MCSHs": {"orders": [0, 1, 2], "sigmas": [0.5, 1.0]},
    "cutoff": 5,
    "solid_harmonics": True,
}


def _run(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "mfbo.cli", "fingerprint", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture
def workdir(tmp_path):
    imgs = [molecule("H2O"), molecule("CH3OH"), molecule("NH3")]
    write(tmp_path / "in.extxyz", imgs)
    (tmp_path / "params.json").write_text(json.dumps(PARAMS))
    return tmp_path


def test_cli_writes_one_array_per_image_and_uses_cache(workdir):
    r = _run(
        "in.extxyz",
        "--params",
        "params.json",
        "--out",
        "out/fp.npz",
        "--derivatives",
        "--cache-dir",
        "c",
        cwd=workdir,
    )
    assert r.returncode == 0, r.stderr
    from ase.io import read

    from mfbo.fingerprints import GMPParams, featurize

    params = GMPParams.from_fp_params(PARAMS)
    with np.load(workdir / "out" / "fp.npz") as z:
        assert {"0", "1", "2"} <= set(z.files)
        for k, atoms in enumerate(read(workdir / "in.extxyz", ":")):
            ref = featurize(atoms, params, derivatives=True)
            np.testing.assert_allclose(z[str(k)], ref.features, rtol=1e-12)
            assert z[str(k)].shape == (len(atoms), params.n_features)
            # Batched and single-image runs may round differently in the last bit (BLAS kernels
            # treat block edges differently); same tolerance as the batched-vs-single property test.
            np.testing.assert_allclose(z[f"{k}__dfeatures"], ref.dfeatures, rtol=1e-12, atol=1e-14)
    assert len(list((workdir / "c").rglob("*.jac.npz"))) == 3


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (None, ["missing.traj", "--params", "params.json"], "input file missing.traj does not exist"),
        ("garbage", ["bad.traj", "--params", "params.json"], "cannot read structures from bad.traj"),
        (None, ["in.extxyz", "--params", "nope.json"], "cannot read --params file nope.json"),
        ("badjson", ["in.extxyz", "--params", "bad.json"], "bad.json:1: invalid JSON"),
        (
            "sigma",
            ["in.extxyz", "--params", "neg.json"],
            "neg.json: fp_params.MCSHs.sigmas: sigma must be > 0",
        ),
        ("element", ["og.extxyz", "--params", "params.json"], "element Og"),
        ("nocell", ["nocell.extxyz", "--params", "params.json"], "periodic along"),
    ],
)
def test_cli_bad_inputs_give_one_line_and_nonzero_exit(workdir, setup, args, message, capsys, monkeypatch):
    if setup == "garbage":
        (workdir / "bad.traj").write_bytes(b"\x00not a trajectory")
    elif setup == "badjson":
        (workdir / "bad.json").write_text("{fp_scheme: gmp")
    elif setup == "sigma":
        (workdir / "neg.json").write_text(json.dumps({**PARAMS, "MCSHs": {"orders": [0], "sigmas": [-1]}}))
    elif setup == "element":
        from ase import Atoms

        write(workdir / "og.extxyz", Atoms("Og", positions=[[0, 0, 0]]))
    elif setup == "nocell":
        from ase import Atoms

        (workdir / "nocell.extxyz").write_text(
            '2\nLattice="0 0 0 0 0 0 0 0 0" pbc="T T T" Properties=species:S:1:pos:R:3\nH 0 0 0\nH 0.7 0 0\n'
        )
        assert Atoms  # keeps the import used
    # In-process through the real dispatcher (a subprocess per case costs seconds of imports).
    from mfbo.cli import main

    monkeypatch.chdir(workdir)
    code = main(["fingerprint", *args, "--out", "o.npz"])
    err = capsys.readouterr().err
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("mfbo fingerprint: error:") and message in lines[0], lines[0]
    assert not (workdir / "o.npz").exists()


def test_cli_subprocess_bad_input_exits_2_without_traceback(workdir):
    r = _run("in.extxyz", "--params", "missing.json", "--out", "o.npz", cwd=workdir)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines == [lines[0]] and "cannot read --params file missing.json" in lines[0]
    assert "Traceback" not in r.stderr


def test_demo_params_file_is_valid():
    from mfbo.fingerprints import GMPParams

    spec = json.loads((REPO / "studies" / "demo_fp_params.json").read_text())
    assert GMPParams.from_fp_params(spec).n_features == 20
