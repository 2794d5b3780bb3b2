import pickle
import subprocess
import sys

import pytest

from mfbo.errors import BackendUnavailable, ConfigError
from mfbo.objectives import (
    BuiltinObjective,
    Objective,
    _registry,
    available_objectives,
    get_objective,
    register_objective,
)


class _Const(Objective):
    def __init__(self, value=1.0):
        self.value = value

    def evaluate(self, params, data_fraction, epochs):
        return {"curve": [self.value] * epochs, "cost": 0.0, "records": []}


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))


def test_builtin_names_and_duplicates_refused(clean_registry):
    assert {"builtin", "amptorch"} <= set(available_objectives())
    register_objective("const", _Const)
    assert get_objective("const", value=2.0)({}, 1.0, 3)["curve"] == [2.0, 2.0, 2.0]
    with pytest.raises(ConfigError, match="already registered"):
        register_objective("const", _Const)
    with pytest.raises(ConfigError, match="already registered"):
        register_objective("builtin", _Const)
    with pytest.raises(ConfigError, match="unknown objective"):
        get_objective("nope")


def test_dotted_path_and_unimportable_module(clean_registry):
    obj = get_objective(f"{__name__}:_Const", value=3.0)
    assert isinstance(obj, _Const)
    register_objective("ghost", "mfbo_no_such_module:Thing")
    with pytest.raises(BackendUnavailable, match="mfbo_no_such_module"):
        get_objective("ghost")


def test_base_class_requires_evaluate():
    with pytest.raises(NotImplementedError, match="evaluate"):
        Objective().evaluate({}, 1.0, 1)


def test_amptorch_is_lazy():
    code = (
        "import sys, mfbo.objectives as o; "
        "assert 'mfbo.objectives._amptorch' not in sys.modules; "
        "assert 'torch' not in sys.modules; "
        "assert o.get_objective('builtin', train=['x'], val=['y']) is not None; "
        "assert 'mfbo.objectives._amptorch' not in sys.modules; assert 'torch' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_builtin_objective_pickles_and_rejects_bad_metric(tmp_path):
    obj = BuiltinObjective(str(tmp_path / "train.traj"), None, metric={"val_energy_mae_per_atom": 1.0})
    clone = pickle.loads(pickle.dumps(obj))
    assert clone.describe() == obj.describe()
    with pytest.raises(ConfigError, match="metric"):
        BuiltinObjective("x.traj", metric="val_loss")
