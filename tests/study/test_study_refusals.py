"""`mfbo run --check` refuses whatever `mfbo run` would, and neither writes anything when it refuses:
bad data (no calculator, no energy, no forces, an element without a valence density, a garbage file,
one image, a subsample larger than the file), a bad base config, a prior file with reversed bounds."""

from __future__ import annotations

import pytest

from tests.study.conftest import run_cli, write_study

STUDY = """
[study]
name = "s"
output = "run"
[data]
train = "{train}"
{data_extra}
[objective]
backend = "builtin"
[objective.base_config]
{base}
[space]
num_nodes = {{ type = "int", bounds = [4, 12] }}
[fidelity]
data_fraction = [0.5, 1.0]
epochs = [1, 3]
[budget]
ffe = 0.5
{extra}
"""


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


CASES = [
    ("nocalc.traj", "batch_size = 8", "", "", "data.train", "image 0 of"),
    ("noenergy.traj", "batch_size = 8", "", "", "data.train", "has no energy"),
    ("noforces.traj", "batch_size = 8", "", "", "data.train", "has no forces"),
    ("uranium.traj", "batch_size = 8", "", "", "data.train", "element U (first in image 3"),
    ("garbage.traj", "batch_size = 8", "", "", "data.train", "cannot read"),
    ("one.traj", "batch_size = 8", "", "", "data.val_fraction", "at least 2 images"),
    ("good.traj", "batch_size = 8", "subsample = 5000", "", "data.subsample", "holds 12"),
    ("good.traj", "batch_size = 0", "", "", "objective.base_config", "batch_size"),
    ("good.traj", "num_node = 8", "", "", "objective.base_config", "num_node"),
    ("good.traj", "batch_size = 8", "", '[priors]\nfiles = ["{d}/reversed.toml"]', "priors.files[0]", "low < high"),
]


@pytest.mark.parametrize("train,base,data_extra,extra,field,words", CASES,
                         ids=[f"{c[0]}-{c[4]}-{c[5][:12]}" for c in CASES])
def test_check_and_run_refuse_the_same_before_writing(tmp_path, data_dir, train, base, data_extra, extra,
                                                      field, words):
    p = tmp_path / "s.toml"
    p.write_text(STUDY.format(train=data_dir / train, base=base, data_extra=data_extra,
                              extra=extra.format(d=data_dir)))
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
