import json
import os
from pathlib import Path

import numpy as np
import pytest

from mfbo.errors import FingerprintError
from mfbo.priors import gmp_fp_params, gmp_sigmas, n_gmp_features

SHARED = Path(os.environ.get("MFBO_SHARED", Path(__file__).resolve().parents[2] / ".." / "shared"))
REFERENCE = SHARED / "reference" / "amptorch_gmp_public.json"


def test_gmp_layout_and_sigmas():
    scheme, fp = gmp_fp_params({"sigma_min": 0.25, "sigma_max": 2.5, "n_sigmas": 4, "mcsh_order": 4,
                                "cutoff": 6, "sigma_spacing": "linear", "lr": 1e-3})
    assert scheme == "gmp"
    assert fp["cutoff"] == 6.0
    assert list(fp["MCSHs"]) == ["0", "1", "2", "3", "4"]
    assert [fp["MCSHs"][k]["groups"] for k in fp["MCSHs"]] == [[1], [1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]
    assert fp["MCSHs"]["3"]["sigmas"] == [0.25, 1.0, 1.75, 2.5]
    n_cols = sum(len(v["groups"]) * len(v["sigmas"]) for v in fp["MCSHs"].values())
    assert n_cols == n_gmp_features("gmp", 4, 4) == 44


def test_gmpordernorm_layout_and_base_keys_kept():
    scheme, fp = gmp_fp_params({"fp_scheme": "gmpordernorm", "sigma_min": 0.2, "sigma_max": 3.2, "n_sigmas": 5,
                                "mcsh_order": 2, "cutoff": 8, "solid_harmonics": False},
                               base={"atom_gaussians": {"H": "H.g"}, "MCSHs": {"old": 1}})
    assert scheme == "gmpordernorm"
    assert fp["MCSHs"]["orders"] == [0, 1, 2]
    assert fp["solid_harmonics"] is False and fp["atom_gaussians"] == {"H": "H.g"}
    s = fp["MCSHs"]["sigmas"]
    assert s[0] == 0.2 and s[-1] == 3.2 and np.allclose(np.diff(np.log(s)), np.log(2) )
    assert n_gmp_features("gmpordernorm", 2, 5) == 15


def test_single_sigma_and_errors():
    assert gmp_sigmas(0.5, 0.5, 1) == [0.5]
    for bad, match in [({"sigma_min": 1.0, "sigma_max": 0.5}, "sigma_max"), ({"mcsh_order": 5}, "mcsh_order"),
                       ({"fp_scheme": "acsf"}, "fp_scheme"), ({"n_sigmas": 0}, "n_sigmas"),
                       ({"sigma_spacing": "cubic"}, "sigma_spacing"), ({"cutoff": -1}, "cutoff"),
                       ({"sigma_min": 0.0}, "sigma_min")]:
        params = {"sigma_min": 0.2, "sigma_max": 2.0, "n_sigmas": 3, "mcsh_order": 2, "cutoff": 6.0, **bad}
        with pytest.raises(FingerprintError, match=match):
            gmp_fp_params(params)
    with pytest.raises(FingerprintError, match="lack"):
        gmp_fp_params({"sigma_min": 0.2})


@pytest.mark.skipif(not REFERENCE.exists(), reason=f"reference data not found at {REFERENCE}")
def test_feature_counts_and_layout_match_amptorch_reference():
    ref = json.loads(REFERENCE.read_text())["parameter_sets"]
    for name, pset in ref.items():
        passed = pset["MCSHs_as_passed"]
        scheme = pset["fp_scheme"]
        if scheme == "gmp":
            order = max(int(k) for k in passed["MCSHs"])
            sigmas = passed["MCSHs"]["0"]["sigmas"]
        else:
            order = max(passed["MCSHs"]["orders"])
            sigmas = passed["MCSHs"]["sigmas"]
        assert n_gmp_features(scheme, order, len(sigmas)) == pset["n_features"], name
        if "cutoff" not in passed:
            continue
        _, fp = gmp_fp_params({"fp_scheme": scheme, "sigma_min": sigmas[0], "sigma_max": sigmas[-1],
                               "n_sigmas": len(sigmas), "mcsh_order": order, "cutoff": passed["cutoff"],
                               "solid_harmonics": passed.get("solid_harmonics", True)})
        # Same layout as what AMPTorch was given (sigma values differ: the reference grids are hand-picked).
        if scheme == "gmp":
            assert {k: v["groups"] for k, v in fp["MCSHs"].items()} == \
                {k: v["groups"] for k, v in passed["MCSHs"].items()}, name
        else:
            assert fp["MCSHs"]["orders"] == passed["MCSHs"]["orders"], name
            assert fp["solid_harmonics"] == passed["solid_harmonics"], name
        assert fp["cutoff"] == passed["cutoff"]


def test_engine_accepts_mapped_params_when_available():
    fingerprints = pytest.importorskip("mfbo.fingerprints")
    if not hasattr(fingerprints, "GMPParams"):
        pytest.skip("mfbo.fingerprints.GMPParams not available yet")
    for scheme in ("gmp", "gmpordernorm"):
        s, fp = gmp_fp_params({"fp_scheme": scheme, "sigma_min": 0.2, "sigma_max": 2.0, "n_sigmas": 4,
                               "mcsh_order": 3, "cutoff": 6.0})
        p = fingerprints.GMPParams.from_fp_params(fp, fp_scheme=s)
        assert p.n_features == n_gmp_features(s, 3, 4)


def test_agrees_with_the_trainers_mapping_when_available():
    training = pytest.importorskip("mfbo.training")
    if not hasattr(training, "config_from_hyperparameters"):
        pytest.skip("mfbo.training.config_from_hyperparameters not available yet")
    for scheme in ("gmp", "gmpordernorm"):
        for spacing in ("log", "linear"):
            params = {"fp_scheme": scheme, "sigma_min": 0.21, "sigma_max": 2.9, "n_sigmas": 6,
                      "sigma_spacing": spacing, "mcsh_order": 3, "cutoff": 7.5}
            cfg = training.config_from_hyperparameters(training.TrainConfig(), params)
            s, fp = gmp_fp_params(params)
            assert cfg.fp_scheme == s
            assert cfg.fp_params["MCSHs"] == fp["MCSHs"] and float(cfg.fp_params["cutoff"]) == fp["cutoff"]
