import numpy as np
import pytest

from mfbo.errors import PriorError
from mfbo.priors import Constraint, ConstraintError, n_gmp_features


def test_arithmetic_and_comparisons():
    c = Constraint("cutoff >= 3 * sigma_max")
    ok = c.is_satisfied([{"cutoff": 6.0, "sigma_max": 2.0}, {"cutoff": 5.9, "sigma_max": 2.0}])
    assert ok.dtype == bool and ok.tolist() == [True, False]
    assert Constraint("(a + b) / 2 - -c < 4").is_satisfied([{"a": 1, "b": 3, "c": 1.5}]).tolist() == [True]
    assert Constraint("(a + b) / 2 - -c < 4").is_satisfied([{"a": 1, "b": 3, "c": 2.5}]).tolist() == [False]
    assert Constraint("0.1 <= x <= 1").is_satisfied([{"x": 0.5}, {"x": 1.5}, {"x": 0.0}]).tolist() == [
        True, False, False]
    assert Constraint("sigma_min < sigma_max")({"sigma_min": 1, "sigma_max": 1}) is False
    assert Constraint("1e-3 * n != 2.5e-3")({"n": 2}) is True


def test_logic_strings_and_booleans():
    c = Constraint('fp_scheme == "gmpordernorm" or n_features <= 20')
    cfgs = [{"fp_scheme": "gmp", "mcsh_order": 2, "n_sigmas": 5},
            {"fp_scheme": "gmp", "mcsh_order": 2, "n_sigmas": 6},
            {"fp_scheme": "gmpordernorm", "mcsh_order": 4, "n_sigmas": 10}]
    assert c.is_satisfied(cfgs).tolist() == [True, False, True]
    assert Constraint("not (batchnorm == true and dropout > 0.2)").is_satisfied(
        [{"batchnorm": True, "dropout": 0.3}, {"batchnorm": False, "dropout": 0.3}]).tolist() == [False, True]


def test_n_features_derived_quantity():
    c = Constraint("n_features <= 44")
    assert c.names == frozenset({"n_features"})
    assert c.required_hyperparameters() == frozenset({"mcsh_order", "n_sigmas"})
    assert c({"mcsh_order": 4, "n_sigmas": 4})
    assert not c({"mcsh_order": 4, "n_sigmas": 5})
    assert n_gmp_features("gmp", 4, 4) == 44 and n_gmp_features("gmpordernorm", 4, 4) == 20
    with pytest.raises(ConstraintError, match="mcsh_order"):
        c.is_satisfied([{"n_sigmas": 4}])


@pytest.mark.parametrize("text", [
    "x >", "", "x + 1", "__import__('os').system('true') == 0", "x.real > 0", "x ** 2 > 1", "x[0] > 1",
    "open('f') == 1", "x > 1;", "lambda: 1 > 0", "x > 1 y",
])
def test_unsafe_or_malformed_text_is_rejected(text):
    with pytest.raises(ConstraintError):
        Constraint(text)


def test_unknown_names_are_reported_and_division_by_zero_is_violation():
    c = Constraint("cutof >= 3 * sigma_max")
    with pytest.raises(ConstraintError, match="cutof"):
        c.check_names(["cutoff", "sigma_max"])
    with pytest.raises(ConstraintError, match="needs hyperparameter"):
        Constraint("n_features < 10").check_names(["n_sigmas"])
    assert isinstance(ConstraintError("x"), PriorError)
    assert Constraint("a / b < 1").is_satisfied([{"a": 0, "b": 0}]).tolist() == [False]
    assert np.array_equal(Constraint("a < 1").is_satisfied([]), np.zeros(0, dtype=bool))


def test_constraints_pickle_and_compare():
    import pickle

    c = Constraint("cutoff >= 3*sigma_max")
    assert pickle.loads(pickle.dumps(c)) == c == Constraint("cutoff >= 3 * sigma_max")
    assert c != Constraint("cutoff >= 2 * sigma_max")
