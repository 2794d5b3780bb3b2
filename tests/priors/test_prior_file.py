import textwrap
from pathlib import Path

import numpy as np
import pytest

from mfbo.errors import PriorError
from mfbo.optimize import SearchSpace
from mfbo.priors import (
    PriorFileError,
    ProductPrior,
    dump_prior_spec,
    load_prior_file,
    merge_prior_specs,
    parse_prior_dict,
    write_prior_file,
)

REPO = Path(__file__).resolve().parents[2]

GOOD = textwrap.dedent('''\
    # a comment
    name = "small"
    constraints = [
        "sigma_min < sigma_max",
        "cutoff >= 3 * sigma_max",
    ]

    [parameters.sigma_min]
    type = "float"
    bounds = [0.1, 0.5]
    scale = "log"
    prior = { dist = "lognormal", median = 0.25, log_std = 0.3 }

    [parameters.sigma_max]
    type = "float"
    bounds = [1.0, 3.0]
    prior = { dist = "normal", mean = 2.0, std = 0.5 }

    [parameters.cutoff]
    type = "float"
    bounds = [4.0, 10.0]

    [parameters.layers]
    type = "int"
    bounds = [1, 5]
    prior = { dist = "beta", a = 2, b = 3 }

    [parameters.act]
    type = "categorical"
    choices = ["tanh", "silu"]
    prior = { dist = "categorical", weights = { tanh = 3, silu = 1 } }

    [fidelities.data_fraction]
    bounds = [0.1, 1.0]
    target = 1.0

    [fidelities.epochs]
    bounds = [1, 50]
    target = 50
''')


def write(tmp_path, text, name="p.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_load_gives_space_prior_constraints_fidelities(tmp_path):
    spec = load_prior_file(write(tmp_path, GOOD))
    assert spec.name == "small"
    space = SearchSpace.from_dict(spec.space)
    assert [p.name for p in space.design_parameters] == ["sigma_min", "sigma_max", "cutoff", "layers", "act"]
    assert space.target_fidelities() == {"data_fraction": 1.0, "epochs": 50}
    assert spec.space["sigma_min"]["prior"]["dist"] == "lognormal"
    assert set(spec.fidelities) == {"data_fraction", "epochs"}
    assert [str(c) for c in spec.constraints] == ["sigma_min < sigma_max", "cutoff >= 3 * sigma_max"]
    assert isinstance(spec.prior, ProductPrior)
    lp = spec.prior.log_prob([{"sigma_min": 0.25, "sigma_max": 2.0, "cutoff": 6.0, "layers": 2, "act": "tanh"},
                              {"sigma_min": 0.25, "sigma_max": 2.0, "cutoff": 6.0, "layers": 2, "act": "silu"}])
    assert lp.shape == (2,) and np.isclose(lp[0] - lp[1], np.log(3))


def test_round_trip_text_and_dict(tmp_path):
    spec = load_prior_file(write(tmp_path, GOOD))
    out = write_prior_file(spec, tmp_path / "sub" / "again.toml", comments={"header": ["regenerated"]})
    assert out.read_text().startswith("# regenerated")
    again = load_prior_file(out)
    assert again.to_dict() == spec.to_dict()
    assert again.space == spec.space
    assert dump_prior_spec(again) == dump_prior_spec(spec)
    assert parse_prior_dict(spec.to_dict()).to_dict() == spec.to_dict()
    configs = spec.prior.sample(20, seed=4)
    assert again.prior.sample(20, seed=4) == configs
    assert np.allclose(again.prior.log_prob(configs), spec.prior.log_prob(configs))


@pytest.mark.parametrize("path", sorted((REPO / "priors").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_prior_files_round_trip(path, tmp_path):
    spec = load_prior_file(path)
    again = load_prior_file(write_prior_file(spec, tmp_path / path.name))
    assert again.to_dict() == spec.to_dict()


def test_strings_with_quotes_and_unicode_survive(tmp_path):
    d = {"name": 'odd "name" \\ é\t', "description": "line1\nline2",
         "parameters": {"x y": {"type": "float", "bounds": [1e-9, 1e9], "scale": "log"},
                        "flag": {"type": "categorical", "choices": [True, False, 3, 2.5, "s"]}}}
    spec = parse_prior_dict(d)
    again = load_prior_file(write_prior_file(spec, tmp_path / "odd.toml"))
    assert again.to_dict() == spec.to_dict()


@pytest.mark.parametrize("old,new,field", [
    ('bounds = [0.1, 0.5]', 'bounds = [0.5, 0.1]', "parameters.sigma_min.bounds"),
    ('bounds = [1.0, 3.0]', 'bounds = "wide"', "parameters.sigma_max.bounds"),
    ('type = "int"', 'type = "integer"', "parameters.layers.type"),
    ('prior = { dist = "normal", mean = 2.0, std = 0.5 }', 'prior = { dist = "gauss", mean = 2.0 }',
     "parameters.sigma_max.prior.dist"),
    ('prior = { dist = "normal", mean = 2.0, std = 0.5 }', 'prior = { dist = "normal", mean = 2.0, std = -1 }',
     "parameters.sigma_max.prior.std"),
    ('weights = { tanh = 3, silu = 1 }', 'weights = { tanh = 3 }', "parameters.act.prior.weights"),
    ('"cutoff >= 3 * sigma_max",', '"cutof >= 3 * sigma_max",', "constraints.1"),
    ('"cutoff >= 3 * sigma_max",', '"cutoff >= 3 * ",', "constraints.1"),
    ('target = 50', 'target = 500', "fidelities.epochs.target"),
    ('name = "small"', 'nmae = "small"', "nmae"),
    ('scale = "log"', 'scale = "ln"', "parameters.sigma_min.scale"),
])
def test_errors_name_file_line_and_field(tmp_path, old, new, field):
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    line = 1 + next(i for i, ln in enumerate(text.splitlines()) if new in ln)
    path = write(tmp_path, text)
    with pytest.raises(PriorFileError) as info:
        load_prior_file(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:{line}: {field}"), msg


def test_toml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, GOOD.replace('type = "float"\nbounds = [1.0, 3.0]', 'type = "float\nbounds = [1.0, 3.0]'))
    with pytest.raises(PriorFileError, match=rf"^{path}:15: TOML syntax error.*'type'"):
        load_prior_file(path)
    with pytest.raises(PriorFileError, match="cannot read"):
        load_prior_file(tmp_path / "missing.toml")


def test_infeasible_constraints_give_clear_error(tmp_path):
    path = write(tmp_path, GOOD.replace('"cutoff >= 3 * sigma_max",', '"cutoff >= 30 * sigma_max",'))
    spec = load_prior_file(path)
    with pytest.raises(PriorError, match="only 0 of 5 configurations satisfied"):
        spec.prior.sample(5, seed=0)


def test_merge(tmp_path):
    a = load_prior_file(write(tmp_path, GOOD, "a.toml"))
    b = load_prior_file(write(tmp_path, textwrap.dedent('''\
        constraints = ["lr * 100 < 5"]
        [parameters.lr]
        type = "float"
        bounds = [1e-4, 1e-1]
        scale = "log"
        [fidelities.epochs]
        bounds = [1, 50]
        target = 50
        '''), "b.toml"))
    m = merge_prior_specs(a, b)
    assert "lr" in m.space and "sigma_min" in m.space and len(m.constraints) == 3
    assert all(m.prior.feasible(m.prior.sample(30, seed=1)))
    with pytest.raises(PriorError, match="both"):
        merge_prior_specs(a, a)
    c = load_prior_file(write(tmp_path, GOOD.replace("target = 50", "target = 40"), "c.toml"))
    with pytest.raises(PriorError, match="fidelity 'epochs' differs"):
        merge_prior_specs(b, c)
