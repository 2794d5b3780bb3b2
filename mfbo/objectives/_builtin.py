"""The built-in objective: one trial = one run of mfbo's own SingleNN trainer."""

from __future__ import annotations

import copy
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
        data: how trials hold their data: None (in memory), or a mode string / dict of
            :class:`mfbo.training._source.DataOptions` fields (``mode`` "auto", "memory" or
            "stream", ``shard_dir``, ``workers``, ``shard_size``, ``memory_limit_gb``). When a trial
            streams (``"stream"``, or ``"auto"`` above the memory limit), ``train`` and ``val`` must
            be file paths: the files are featurised once into shards (under ``shard_dir``, default
            ``<cache_dir>/shards``, else ``$MFBO_CACHE_DIR/shards`` or ``~/.cache/mfbo/shards``) and
            each fidelity subset reads its rows from them.
        processes: train each trial data-parallel over this many processes on the node that runs it
            (``torchrun``, see :mod:`mfbo.objectives._distributed_trial`; default 1: in the calling
            process). A study sets it with ``[objective] options = {processes = N}``.
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
        data=None,
        processes: int = 1,
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
        if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
            from mfbo.errors import ConfigError

            raise ConfigError(f"processes={processes!r} must be a whole number >= 1 (processes per trial)")
        self.processes = processes
        options = None
        if data is not None:
            from mfbo.training._source import DataOptions  # imports torch: only when asked for

            options = DataOptions.of(data)  # ConfigError on a bad value
        if options is not None and options.shard_dir is not None:
            options.shard_dir = str(options.shard_dir)
        self.data_options = None if options is None else dict(options.__dict__)
        self._loaded = None
        self._views = None
        self._modes: dict = {}
        self._cache = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_loaded"] = None  # re-read in the worker
        state["_views"] = None
        state["_modes"] = {}
        state["_cache"] = None
        return state

    def __setstate__(self, state):
        state = {"data_options": None, "processes": 1, **state, "_views": None, "_modes": {}}
        self.__dict__.update(state)

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

    def views(self) -> tuple:
        """(training pool, validation set) as :func:`mfbo.training.open_images` views of the files
        (no image read), opened on first use."""
        if self._views is None:
            from mfbo.errors import ConfigError
            from mfbo.training._data import split_train_val
            from mfbo.training._images import open_images

            for name, source in (("train", self.train_source), ("val", self.val_source)):
                if source is not None and not isinstance(source, str):
                    raise ConfigError(f"BuiltinObjective: streamed data read dataset files; {name} must be a file "
                                      f"path, not {type(source).__name__}")
            pool = open_images(self.train_source)
            if self.val_source is None:
                base = self.config()
                pool, val = split_train_val(pool, base.val_fraction, base.seed)
            else:
                val = open_images(self.val_source)
            self._views = (pool, val)
        return self._views

    def _stream_options(self, config):
        """The DataOptions of a streamed trial with ``config``, or None when it trains in memory
        (the "auto" choice is made once per fingerprint parameter set)."""
        if self.data_options is None or self.data_options["mode"] == "memory":
            return None
        from dataclasses import replace

        from mfbo.training._featurize import gmp_params_of
        from mfbo.training._source import DataOptions, resolve_data_mode

        options = DataOptions(**self.data_options)
        files = all(s is None or isinstance(s, str) for s in (self.train_source, self.val_source))
        if options.mode == "auto" and not files:
            return None  # lists of Atoms train in memory
        params = gmp_params_of(config)
        key = (params.cache_key(), bool(config.get_forces))
        if key not in self._modes:
            pool, val = self.views()
            self._modes[key] = resolve_data_mode(options, pool, val, params, config.get_forces)
        if self._modes[key] == "memory":
            return None
        shard_dir = options.shard_dir
        if shard_dir is None and isinstance(self.cache_dir, str):
            shard_dir = str(Path(self.cache_dir) / "shards")
        return replace(options, mode="stream", shard_dir=shard_dir)

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
                "data_mode": result.extra.get("data_mode"),
                "jacobians": result.extra.get("jacobians"),
            },
        }

    def fit(self, params: dict, data_fraction: float = 1.0, epochs: int | None = None, test=None, **kwargs):
        """Train and return the full :class:`mfbo.training.TrainResult` (model included).

        Args:
            test: a test set; None uses the objective's ``test`` (if any); False none.
        """
        from mfbo.training._distributed import distributed_from_env
        from mfbo.training._train import train

        if self.processes > 1 and distributed_from_env() is None:
            if kwargs:
                from mfbo.errors import ConfigError

                raise ConfigError(f"BuiltinObjective.fit: {sorted(kwargs)} cannot reach the processes of a "
                                  "data-parallel trial; use processes=1")
            from mfbo.objectives._distributed_trial import run_distributed

            single = copy.copy(self)
            single.processes = 1
            return run_distributed(single, self.processes, params, data_fraction, epochs, test)
        config = self.config(params)
        test_images = self.test_source if test is None else (None if test is False else test)
        stream = self._stream_options(config)
        if stream is not None:
            pool, val = self.views()
            kwargs = {**kwargs, "data": stream}
        else:
            pool, val = self.datasets()
        return train(
            config,
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
            "data": self.data_options,
            "processes": self.processes,
        }
