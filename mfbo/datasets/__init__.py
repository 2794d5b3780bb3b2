"""Bundled demo datasets (see README.md in this folder for sources and licences)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["dataset_path", "OC20_TRAIN_POOL", "OC20_TEST", "WATER", "SI_TRAIN", "SI_TEST"]

_HERE = Path(__file__).resolve().parent

OC20_TRAIN_POOL = _HERE / "train_pool.traj"
OC20_TEST = _HERE / "test.traj"
WATER = _HERE / "water_2d.traj"
SI_TRAIN = _HERE / "si_train.extxyz"
SI_TEST = _HERE / "si_test.extxyz"


def dataset_path(name: str) -> Path:
    """Path of a bundled dataset: ``"oc20_train_pool"``, ``"oc20_test"``, ``"water"``, ``"si_train"``
    or ``"si_test"``."""
    from mfbo.errors import DataError

    table = {"oc20_train_pool": OC20_TRAIN_POOL, "oc20_test": OC20_TEST, "water": WATER, "si_train": SI_TRAIN,
             "si_test": SI_TEST}
    try:
        return table[name]
    except KeyError:
        raise DataError(f"unknown bundled dataset {name!r}; choose one of {sorted(table)}") from None
