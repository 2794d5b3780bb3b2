"""SingleNN training: the expensive objective, with data-fraction and epoch fidelities.

Public API::

    from mfbo.training import TrainConfig, load_images, split_train_val, train
    pool = load_images("mfbo/datasets/train_pool.traj", require_forces=True)
    train_set, val_set = split_train_val(pool, 0.1, seed=1)
    result = train(TrainConfig(), train_set, val_set, data_fraction=0.25, epochs=5)
    result.curve[-1]["val_energy_mae_per_atom"]; result.model.save("model.npz")

See ``docs/training.md``. Names that need torch are imported on first use, so that
``import mfbo.training`` (and the ``mfbo`` CLI) stays light.
"""

from mfbo._lazy import lazy_exports
from mfbo.errors import ModelFileError, TrainingDiverged
from mfbo.training._baselines import baseline_metrics, ratios_to_baselines, unseen_elements
from mfbo.training._config import (
    GMP_HYPERPARAMETERS,
    NETWORK_HYPERPARAMETERS,
    PRESETS,
    TrainConfig,
    amptorch_seed_fp_params,
    config_from_hyperparameters,
    default_fp_params,
    make_sigmas,
    preset,
)
from mfbo.training._data import (
    free_atom_mask,
    load_images,
    nested_subset,
    nested_subset_indices,
    split_train_val,
)
from mfbo.training._distributed import DistributedContext, distributed_from_env

_LAZY = {
    "train": "mfbo.training._train",
    "evaluate_model": "mfbo.training._train",
    "TrainResult": "mfbo.training._train",
    "CURVE_KEYS": "mfbo.training._train",
    "TrainedModel": "mfbo.training._trained",
    "open_images": "mfbo.training._images",
    "ImageFile": "mfbo.training._images",
    "MfboCalculator": "mfbo.training._calculator",
    "SingleNN": "mfbo.training._model",
    "FeatureScaler": "mfbo.training._scaling",
    "TargetScaler": "mfbo.training._scaling",
}


__all__ = [
    "TrainConfig",
    "preset",
    "PRESETS",
    "baseline_metrics",
    "ratios_to_baselines",
    "unseen_elements",
    "config_from_hyperparameters",
    "default_fp_params",
    "amptorch_seed_fp_params",
    "make_sigmas",
    "GMP_HYPERPARAMETERS",
    "NETWORK_HYPERPARAMETERS",
    "load_images",
    "open_images",
    "ImageFile",
    "split_train_val",
    "nested_subset",
    "nested_subset_indices",
    "free_atom_mask",
    "train",
    "evaluate_model",
    "TrainResult",
    "CURVE_KEYS",
    "TrainedModel",
    "MfboCalculator",
    "SingleNN",
    "FeatureScaler",
    "TargetScaler",
    "DistributedContext",
    "distributed_from_env",
    "TrainingDiverged",
    "ModelFileError",
]

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, __all__, globals())
