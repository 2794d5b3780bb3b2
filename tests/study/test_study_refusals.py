"""`mfbo run --check` refuses whatever `mfbo run` would, and neither writes anything when it refuses:
bad data (no calculator, no energy, no forces, an element without a valence density, a garbage file,
one image, a subsample larger than the file; a test set without energies or smaller than its subsample), a
bad base config, a prior file with reversed bounds."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli, water_study
from tests.study.conftest import write_study


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import read, write

    from mfbo.datasets import dataset_path

    d = tmp_path_factory.mktemp("data")
    imgs = read(str(dataset_path("water")), ":12")
    write(d / "good.traj", imgs)
    write(d / "nocalc.traj", [a.copy() for a in imgs])
    no_e, no_f, with_u = [], [], []
    for i, a in enumerate(imgs):
        b = a.copy()
        b.calc = SinglePointCalculator(b, forces=a.get_forces())
        no_e.append(b)
        c = a.copy()
        c.calc = SinglePointCalculator(c, energy=a.get_potential_energy())
        no_f.append(c)
        u = a.copy()
        if i == 3:
            u.symbols[0] = "U"
        u.calc = SinglePointCalculator(u, energy=a.get_potential_energy(), forces=a.get_forces())
        with_u.append(u)
    write(d / "noenergy.traj", no_e)
    write(d / "noforces.traj", no_f)
    write(d / "uranium.traj", with_u)
    write(d / "one.traj", imgs[:1])
    (d / "garbage.traj").write_text("this is not a trajectory\n")
    (d / "reversed.toml").write_text('name = "rev"\n[parameters.lr]\ntype = "float"\nbounds = [1e-2, 1e-4]\n')
    return d


# (training file, base config, extra [data] fields, prior file, the field named, words of the message)
GOOD = {"batch_size": 8}
CASES = [
    ("nocalc.traj", GOOD, {}, None, "data.train", "image 0 of"),
    ("noenergy.traj", GOOD, {}, None, "data.train", "has no energy"),
    ("noforces.traj", GOOD, {}, None, "data.train", "has no forces"),
    ("uranium.traj", GOOD, {}, None, "data.train", "element U (first in image 3"),
    ("garbage.traj", GOOD, {}, None, "data.train", "cannot read"),
    ("one.traj", GOOD, {}, None, "data.val_fraction", "at least 2 images"),
    ("good.traj", GOOD, {"subsample": 5000}, None, "data.subsample", "holds 12"),
    ("good.traj", GOOD, {"test": "noenergy.traj"}, None, "data.test", "has no energy"),
    ("good.traj", GOOD, {"test": "good.traj", "test_subsample": 50}, None, "data.test_subsample", "holds 12"),
    ("good.traj", {"batch_size": 0}, {}, None, "objective.base_config", "batch_size"),
    ("good.traj", {"num_node": 8}, {}, None, "objective.base_config", "num_node"),
    ("good.traj", GOOD, {}, "reversed.toml", "priors.files[0]", "low < high"),
]


@pytest.mark.parametrize("train,base,data,prior,field,words", CASES,
                         ids=[f"{c[0]}-{c[4]}-{c[5][:12]}" for c in CASES])
def test_check_and_run_refuse_the_same_before_writing(tmp_path, data_dir, train, base, data, prior, field, words):
    data = {k: str(data_dir / v) if k == "test" else v for k, v in data.items()}
    p = water_study(tmp_path / "s.toml", name="s", train=str(data_dir / train), data=data, metric=None,
                    base_config=base, space={"num_nodes": {"type": "int", "bounds": [4, 12]}},
                    priors=[data_dir / prior] if prior else None, optimizer=None)
    lines = []
    for args in (("run", p, "--check"), ("run", p, "--no-progress")):
        r = run_cli(*args, cwd=tmp_path, timeout=300)
        assert r.returncode == 2, r.stderr[-2000:]
        assert "Traceback" not in r.stderr
        err = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(err) == 1 and f"field '{field}'" in err[0] and words in err[0], r.stderr[-2000:]
        assert not (tmp_path / "run").exists()  # nothing created, so a corrected rerun just works
        lines.append(err[0].split(": error: ", 1)[1])
    assert lines[0] == lines[1]


def test_check_of_a_good_study_writes_nothing(tmp_path):
    study = write_study(tmp_path / "ok.toml", output="deep/run")
    r = run_cli("run", study, "--check", cwd=tmp_path)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-2000:]
    assert r.stderr.strip() == ""  # no Ax storage chatter
    assert not (tmp_path / "deep").exists()
