import pytest

from mfbo.errors import SearchSpaceError
from mfbo.optimize import SearchSpace

SPEC = {
    "lr": {"type": "float", "bounds": [1e-4, 1e-1], "scale": "log"},
    "layers": {"type": "int", "bounds": [1, 8]},
    "act": {"type": "categorical", "choices": ["tanh", "silu"]},
    "data_fraction": {"type": "fidelity", "bounds": [0.05, 1.0], "target": 1.0},
    "epochs": {"type": "fidelity", "bounds": [1, 100], "target": 100},
}


def test_encode_decode_round_trip():
    space = SearchSpace.from_dict(SPEC)
    configs = space.sample(16, seed=3)
    assert space.decode(space.encode(configs)) == configs
    assert space.encode(configs).shape == (16, 4)
    assert space.target_fidelities() == {"data_fraction": 1.0, "epochs": 100}
    assert space.iteration_fidelity.name == "epochs"
    assert space.data_fidelity.name == "data_fraction"


def test_sample_respects_bounds_and_types():
    space = SearchSpace.from_dict(SPEC)
    for cfg in space.sample(64, seed=0):
        assert 1e-4 <= cfg["lr"] <= 1e-1
        assert isinstance(cfg["layers"], int) and 1 <= cfg["layers"] <= 8
        assert cfg["act"] in ("tanh", "silu")


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"x": {"type": "float", "bounds": [1.0, 0.0]}}, "reversed"),
        ({"x": {"type": "float", "bounds": [0.0, 1.0], "scale": "log"}, "y": {"type": "int", "bounds": [0, 1]}}, "low > 0"),
        ({"x": {"type": "nope"}}, "'type'"),
        ({"x": {"type": "categorical", "choices": []}}, "'choices'"),
        ({"x": {"type": "float", "bounds": [0, 1]}, "epochs": {"type": "fidelity", "bounds": [1, 10], "target": 20}}, "outside"),
    ],
)
def test_bad_specs_name_the_problem(bad, field):
    with pytest.raises(SearchSpaceError, match=field):
        SearchSpace.from_dict(bad)
