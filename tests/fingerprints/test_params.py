"""GMPParams: AMPTorch layout, typed view, cache key, and bad parameters."""

from __future__ import annotations

import json

import pytest

from mfbo.errors import FingerprintError, ValenceDensityError
from mfbo.fingerprints import GMPParams, bundled_valence_dir

SIGMAS = [0.2, 0.69, 1.1]
GMP = {
    "MCSHs": {
        "0": {"groups": [1], "sigmas": SIGMAS},
        "1": {"groups": [1], "sigmas": SIGMAS},
        "2": {"groups": [1, 2], "sigmas": SIGMAS},
    },
    "cutoff": 8,
}
ON = {"MCSHs": {"orders": [0, 1, 2, 3], "sigmas": SIGMAS}, "cutoff": 6.0, "solid_harmonics": False}


def test_gmp_layout_columns_and_round_trip():
    p = GMPParams.from_fp_params(GMP, "gmp")
    assert p.n_features == 12
    assert [(c["order"], c["group"], c["sigma"]) for c in p.columns][:4] == [
        (0, 1, 0.2),
        (0, 1, 0.69),
        (0, 1, 1.1),
        (1, 1, 0.2),
    ]
    assert p.cutoff == 8.0 and p.fp_scheme == "gmp"
    again = GMPParams.from_fp_params(json.loads(json.dumps(p.to_fp_params())), p.fp_scheme)
    assert again == p and again.cache_key() == p.cache_key()


def test_ordernorm_layout():
    p = GMPParams.from_fp_params(ON, "gmpordernorm")
    assert p.n_features == 4 * 3
    assert p.columns[-1]["group_coefficients"] == {1: 1, 2: 3, 3: 6}
    assert not p.solid
    assert GMPParams.from_fp_params({**ON, "solid_harmonics": True}, "gmpordernorm").solid
    assert GMPParams.from_fp_params(p.to_fp_params(), "gmpordernorm") == p


def test_fp_scheme_key_in_mapping_is_used():
    p = GMPParams.from_fp_params({**ON, "fp_scheme": "gmpordernorm"})
    assert p.fp_scheme == "gmpordernorm"


def test_cache_key_changes_with_settings_and_file_contents(tmp_path):
    base = GMPParams.from_fp_params(GMP)
    assert base.cache_key() != GMPParams.from_fp_params({**GMP, "cutoff": 7}).cache_key()
    g = tmp_path / "H.g"
    g.write_text((bundled_valence_dir() / "H_pseudodensity_2.g").read_text())
    k1 = GMPParams.from_fp_params({**GMP, "atom_gaussians": {"H": str(g)}}).cache_key()
    g.write_text("1.0 2.0\n")
    k2 = GMPParams.from_fp_params({**GMP, "atom_gaussians": {"H": str(g)}}).cache_key()
    assert k1 != k2 != base.cache_key()


@pytest.mark.parametrize(
    "fp_params, scheme, match",
    [
        ({**GMP, "cutoff": 0}, "gmp", "cutoff must be > 0"),
        ({**GMP, "cutoff": -3}, "gmp", "cutoff must be > 0"),
        ({"MCSHs": GMP["MCSHs"]}, "gmp", "missing 'cutoff'"),
        ({**GMP, "MCSHs": {"0": {"groups": [1], "sigmas": [0.5, -1.0]}}}, "gmp", "sigma must be > 0"),
        ({**GMP, "MCSHs": {"0": {"groups": [1], "sigmas": [0.0]}}}, "gmp", "sigma must be > 0"),
        ({**GMP, "MCSHs": {"0": {"groups": [1], "sigmas": []}}}, "gmp", "empty"),
        ({**GMP, "MCSHs": {"5": {"groups": [1], "sigmas": [1.0]}}}, "gmp", "unsupported MCSH order"),
        ({**GMP, "MCSHs": {"2": {"groups": [3], "sigmas": [1.0]}}}, "gmp", "unsupported group 3 for order 2"),
        ({**GMP, "MCSHs": {"1": {"groups": [2], "sigmas": [1.0]}}}, "gmp", "unsupported group 2 for order 1"),
        (ON, "gmp", "gmpordernorm layout"),
        ({**ON, "MCSHs": {"orders": [0, 7], "sigmas": [1.0]}}, "gmpordernorm", "unsupported MCSH order"),
        ({**GMP, "cuttoff": 5}, "gmp", "unknown key"),
        (GMP, "acsf", "fp_scheme must be one of"),
    ],
)
def test_bad_parameters(fp_params, scheme, match):
    with pytest.raises(FingerprintError, match=match):
        GMPParams.from_fp_params(fp_params, scheme)


def test_missing_density_file_names_element_and_path(tmp_path):
    missing = tmp_path / "nope.g"
    with pytest.raises(ValenceDensityError, match=r"for H: .*nope\.g"):
        GMPParams.from_fp_params({**GMP, "atom_gaussians": {"H": str(missing)}})


@pytest.mark.parametrize(
    "text, where",
    [
        ("1.0 2.0\nabc 1.0\n", ":2:"),
        ("1.0\n", ":1:"),
        ("1.0 2.0\n3.0 -1.0\n", ":2: exponent"),
        ("\n\n", "no Gaussian"),
    ],
)
def test_malformed_density_file_names_file_and_line(tmp_path, text, where):
    g = tmp_path / "O.g"
    g.write_text(text)
    with pytest.raises(ValenceDensityError, match=f"O.g{where}" if where.startswith(":") else where):
        GMPParams.from_fp_params({**GMP, "atom_gaussians": {"O": str(g)}})


def test_unknown_element_names_element_and_where_looked():
    from ase import Atoms

    from mfbo.fingerprints import featurize

    p = GMPParams.from_fp_params(GMP)
    with pytest.raises(
        ValenceDensityError, match=r"element Og: looked for Og_pseudodensity_<N>\.g in .*valence_gaussians"
    ):
        featurize(Atoms("Og", positions=[[0, 0, 0]]), p)
    q = GMPParams.from_fp_params(
        {**GMP, "atom_gaussians": {"H": str(bundled_valence_dir() / "H_pseudodensity_2.g")}}
    )
    with pytest.raises(ValenceDensityError, match=r"element O: fp_params.atom_gaussians lists only \[H\]"):
        featurize(Atoms("OH", positions=[[0, 0, 0], [1, 0, 0]]), q)


def test_bad_structures():
    import numpy as np
    from ase import Atoms

    from mfbo.errors import DataError
    from mfbo.fingerprints import featurize

    p = GMPParams.from_fp_params(GMP)
    with pytest.raises(DataError, match="no atoms"):
        featurize(Atoms(), p)
    with pytest.raises(DataError, match="periodic along xyz"):
        featurize(Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]], pbc=True), p)
    with pytest.raises(DataError, match="periodic along z"):
        featurize(
            Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]], cell=[5, 5, 0], pbc=[False, False, True]), p
        )
    with pytest.raises(DataError, match="non-finite"):
        featurize(Atoms("H2", positions=[[0, 0, 0], [np.nan, 0, 0]]), p)
