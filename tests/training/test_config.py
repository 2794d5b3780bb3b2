import math

import numpy as np
import pytest

from mfbo.errors import ConfigError
from mfbo.training import TrainConfig, config_from_hyperparameters, make_sigmas


def test_amptorch_preset_is_the_seed_configuration():
    from mfbo.training import preset

    c = preset("amptorch")
    assert c.fp_scheme == "gmp" and c.feature_scaling == "normalize"
    assert (c.num_layers, c.num_nodes, c.activation, c.batchnorm) == (3, 10, "tanh", True)
    assert (c.lr, c.batch_size, c.force_coefficient, c.loss) == (1e-3, 16, 0.01, "mse")
    assert (c.scheduler, c.warmup_epochs, c.keep_best, c.target_scaling) == ("none", 0, False, "amptorch")
    assert (c.batchnorm_stats, c.force_loss_atoms) == ("standard", "all")
    mcshs = c.fp_params["MCSHs"]
    assert sorted(mcshs) == ["0", "1", "2"] and mcshs["2"]["groups"] == [1, 2]
    assert mcshs["0"]["sigmas"] == [0.2, 0.69, 1.1, 1.66, 2.66] and c.fp_params["cutoff"] == 8.0
    assert preset("amptorch", lr=0.01).lr == 0.01
    assert TrainConfig.from_dict({"preset": "amptorch", "epochs": 3}) == preset("amptorch", epochs=3)
    assert config_from_hyperparameters(TrainConfig(), {"preset": "amptorch", "num_nodes": 20}) == preset(
        "amptorch", num_nodes=20
    )
    with pytest.raises(ConfigError, match="preset='nope'"):
        TrainConfig.from_dict({"preset": "nope"})


def test_defaults_train_for_accuracy():
    c = TrainConfig()
    # No batch norm (degenerate on bulk cells), a schedule, and the best validation epoch kept.
    assert c.batchnorm is False and c.keep_best is True and c.scheduler == "cosine"
    assert c.force_coefficient >= 0.03 and c.target_scaling == "per_element" and c.dtype == "float64"


def test_default_fingerprints_are_orders_0_to_4_at_8_linear_widths():
    from mfbo.fingerprints import GMPParams

    c = TrainConfig()
    assert c.fp_scheme == "gmpordernorm" and c.feature_scaling == "normalize"
    assert c.fp_params["MCSHs"]["orders"] == [0, 1, 2, 3, 4] and c.fp_params["cutoff"] == 8.0
    assert c.fp_params["MCSHs"]["sigmas"] == make_sigmas(0.3, 3.0, 8, "linear")
    assert GMPParams.from_fp_params(c.fp_params, fp_scheme=c.fp_scheme).n_features == 40
    # A partial change of the widths keeps the base's (linear) spacing.
    moved = config_from_hyperparameters(c, {"sigma_min": 0.4})
    assert moved.fp_params["MCSHs"]["sigmas"] == make_sigmas(0.4, 3.0, 8, "linear")


def test_dict_round_trip_and_unknown_field():
    c = TrainConfig(lr=3e-3, scheduler="cosine", feature_range=(-1.0, 1.0))
    d = c.to_dict()
    assert TrainConfig.from_dict(d) == c
    with pytest.raises(ConfigError, match="bogus"):
        TrainConfig.from_dict({**d, "bogus": 1})


@pytest.mark.parametrize(
    "field,value",
    [("activation", "relu6"), ("lr", -1.0), ("batch_size", 0), ("dropout", 1.0), ("loss", "hinge"),
     ("warmup_epochs", -1), ("early_stopping_patience", 1.5), ("min_lr_ratio", 0.0),
     ("target_scaling", "mean"), ("epochs", 2.5), ("fp_params", {"cutoff": 3})],
)
def test_invalid_fields_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value})


def test_gmp_hyperparameters_map_to_amptorch_layout():
    c = config_from_hyperparameters(
        TrainConfig(),
        {"fp_scheme": "gmp", "sigma_min": 0.25, "sigma_max": 2.0, "n_sigmas": 4, "sigma_spacing": "log",
         "mcsh_order": 3,
         "cutoff": 6.0, "num_layers": np.int64(2), "lr": np.float64(0.01), "batchnorm": 0},
    )
    mcshs = c.fp_params["MCSHs"]
    assert sorted(mcshs) == ["0", "1", "2", "3"]
    assert [mcshs[o]["groups"] for o in "0123"] == [[1], [1], [1, 2], [1, 2, 3]]
    np.testing.assert_allclose(mcshs["3"]["sigmas"], np.geomspace(0.25, 2.0, 4))
    assert c.fp_params["cutoff"] == 6.0 and c.num_layers == 2 and c.lr == 0.01 and c.batchnorm is False
    assert isinstance(c.num_layers, int)


def test_gmpordernorm_and_partial_updates_keep_base_values():
    from mfbo.training import preset

    base = preset("amptorch")  # gmp, orders 0-2 at AMPTorch's seed widths
    c = config_from_hyperparameters(base, {"fp_scheme": "gmpordernorm", "solid_harmonics": True, "n_sigmas": 3})
    assert c.fp_scheme == "gmpordernorm"
    assert c.fp_params["MCSHs"]["orders"] == [0, 1, 2]
    sig = c.fp_params["MCSHs"]["sigmas"]
    assert len(sig) == 3 and math.isclose(sig[0], 0.2) and math.isclose(sig[-1], 2.66)
    assert c.fp_params["solid_harmonics"] is True
    only_cutoff = config_from_hyperparameters(base, {"cutoff": 5})
    assert only_cutoff.fp_params["MCSHs"] == base.fp_params["MCSHs"] and only_cutoff.fp_params["cutoff"] == 5.0
    assert base.fp_params["cutoff"] == 8.0  # the base is not modified


def test_linear_sigmas_and_bad_hyperparameters():
    assert make_sigmas(1.0, 3.0, 3, "linear") == [1.0, 2.0, 3.0]
    assert make_sigmas(0.5, 0.5, 1, "log") == [0.5]
    with pytest.raises(ConfigError, match="unknown hyperparameter"):
        config_from_hyperparameters(TrainConfig(), {"layers": 3})
    with pytest.raises(ConfigError, match="sigma_min"):
        config_from_hyperparameters(TrainConfig(), {"sigma_min": 3.0, "sigma_max": 1.0})
    with pytest.raises(ConfigError, match="mcsh_order"):
        config_from_hyperparameters(TrainConfig(), {"mcsh_order": 7})
    with pytest.raises(ConfigError, match="activation"):
        config_from_hyperparameters(TrainConfig(), {"activation": "sigmoid"})


def test_fp_scheme_is_read_off_the_fp_params_layout():
    from mfbo.training import amptorch_seed_fp_params, default_fp_params

    assert TrainConfig(fp_params=amptorch_seed_fp_params()).fp_scheme == "gmp"
    assert TrainConfig(fp_params=default_fp_params()).fp_scheme == "gmpordernorm"
    assert TrainConfig.from_dict(TrainConfig().to_dict()) == TrainConfig()
    with pytest.raises(ConfigError, match="fp_scheme='gmp' does not match"):
        TrainConfig(fp_scheme="gmp")
