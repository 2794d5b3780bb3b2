"""The built-in objective: one trial = one run of mfbo's own SingleNN trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mfbo.objectives._base import Objective, describe_source
from mfbo.objectives._record import check_metric, metric_curve

__all__ = ["BuiltinObjective"]


class _MemoCache:
    """In-process front of the fingerprint cache: keeps the last parameter set's fingerprints.

    Consecutive trials in one worker that differ only in network hyperparameters then skip even
    reading the disk cache. Only one parameter set is held, to bound memory.
    """

    def __init__(self, backing):
        self.backing = backing
        self.key = None
        self.store: dict[int, Any] = {}

    def featurize_many(self, images, params, *, derivatives=False, progress=False):
        key = (params.cache_key(), bool(derivatives))
        if key != self.key:
            self.key, self.store = key, {}
        missing = [a for a in images if id(a) not in self.store]
        if missing:
            if self.backing is not None:
                fps = self.backing.featurize_many(missing, params, derivatives=derivatives, progress=progress)
            else:
                from mfbo.training._featurize import featurize_images

                fps = featurize_images(missing, params, derivatives=derivatives, progress=progress)
            for atoms, fp in zip(missing, fps):
                self.store[id(atoms)] = fp
        return [self.store[id(a)] for a in images]


class BuiltinObjective(Objective):
    """Trains each trial with :func:`mfbo.training.train`.

    Picklable: holds paths (or the given Atoms) and configurations; images and caches are
    loaded lazily in whichever process evaluates. Fingerprints go through the content-addressed
    :class:`mfbo.fingerprints.FingerprintCache`, so trials that change only network
    hyperparameters never featurise again.

    Args:
        train: training pool (path of an ASE-readable file or list of Atoms).
        val: fixed validation set (path or list); None splits it off ``train`` with the base
            config's ``val_fraction`` and ``seed``.
        base_config: TrainConfig (or its dict) that each trial's hyperparameters modify.
        metric: record key minimised ("val_energy_mae_per_atom" default, "val_force_mae", ...) or
            a dict of record key -> weight.
        cache_dir: fingerprint cache directory (default: FingerprintCache's default); False: no
            disk cache.
        cache_max_gb: size limit of that cache in GB (default: ``$MFBO_CACHE_MAX_GB``, else
            min(20, half of cache size + free disk)); least recently used entries are removed.
        test: optional test set for :meth:`fit` (never used by ``evaluate``).
        progress: show progress bars.
    """

    def __init__(
        self,
        train,
        val=None,
        base_config=None,
        metric: str | dict = "val_energy_mae_per_atom",
        cache_dir=None,
        test=None,
        progress: bool = False,
        cache_max_gb=None,
    ):
        from mfbo.training._config import TrainConfig

        if base_config is None:
            base_config = TrainConfig()
        elif not isinstance(base_config, TrainConfig):
            base_config = TrainConfig.from_dict(base_config)
        self.base_config = base_config.to_dict()
        self.metric = metric
        check_metric(metric)
        self.train_source = str(train) if isinstance(train, Path) else train
        self.val_source = str(val) if isinstance(val, Path) else val
        self.test_source = str(test) if isinstance(test, Path) else test
        self.cache_dir = str(cache_dir) if isinstance(cache_dir, Path) else cache_dir
        from mfbo.fingerprints._store import check_max_gb

        self.cache_max_gb = check_max_gb(cache_max_gb, "cache_max_gb")
        self.progress = bool(progress)
        self._loaded = None
        self._cache = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_loaded"] = None  # re-read in the worker
        state["_cache"] = None
        return state

    # ------------------------------------------------------------------ lazy pieces
    def config(self, params: dict | None = None):
        from mfbo.training._config import TrainConfig, config_from_hyperparameters

        base = TrainConfig.from_dict(self.base_config)
        return base if not params else config_from_hyperparameters(base, params)

    def datasets(self) -> tuple[list, list]:
        """(training pool, validation set), loaded on first use."""
        if self._loaded is None:
            from mfbo.training._data import load_images, split_train_val

            base = self.config()
            pool = load_images(self.train_source, require_forces=base.get_forces)
            if self.val_source is None:
                pool, val = split_train_val(pool, base.val_fraction, base.seed)
            else:
                val = load_images(self.val_source, require_forces=base.get_forces)
            self._loaded = (pool, val)
        return self._loaded

    def fingerprint_cache(self):
        if self._cache is None:
            backing = None
            if self.cache_dir is not False:
                from mfbo.fingerprints import FingerprintCache

                # A study pickled without the attribute gets the default limit.
                backing = FingerprintCache(self.cache_dir, max_gb=getattr(self, "cache_max_gb", None))
            self._cache = _MemoCache(backing)
        return self._cache

    # ------------------------------------------------------------------ the contract
    def evaluate(self, params: dict, data_fraction: float, epochs: int) -> dict:
        """Train one trial; see :meth:`Objective.evaluate`. Raises TrainingDiverged on divergence."""
        result = self.fit(params, data_fraction, epochs, test=False)
        curve = metric_curve(result.curve, self.metric)
        return {
            "curve": curve,
            # The run itself (featurisation included); once-per-process costs (reading the dataset
            # files, torch's optimiser import) are not charged to whichever trial came first.
            "cost": float(result.timings["total"]),
            "records": result.curve,
            "metadata": {
                "backend": "builtin",
                "n_train": result.n_train,
                "n_val": result.n_val,
                "n_features": result.model.n_features,
                "timings": result.timings,
                "train_config": result.config.to_dict(),
            },
        }

    def fit(self, params: dict, data_fraction: float = 1.0, epochs: int | None = None, test=None, **kwargs):
        """Train and return the full :class:`mfbo.training.TrainResult` (model included).

        Args:
            test: a test set; None uses the objective's ``test`` (if any); False none.
        """
        from mfbo.training._train import train

        pool, val = self.datasets()
        test_images = self.test_source if test is None else (None if test is False else test)
        return train(
            self.config(params),
            pool,
            val,
            data_fraction=data_fraction,
            epochs=epochs,
            test_images=test_images,
            cache=self.fingerprint_cache(),
            progress=self.progress,
            **kwargs,
        )

    def describe(self) -> dict:
        return {
            "class": "mfbo.objectives._builtin:BuiltinObjective",
            "train": describe_source(self.train_source),
            "val": describe_source(self.val_source),
            "metric": self.metric,
            "base_config": self.base_config,
        }
