"""Where the trainer's data come from: packed in memory, or streamed from shards on disk.

:func:`prepare_data` turns the training pool and validation set into what the epoch loop consumes
(:class:`~mfbo.training._core.ScaledPack` objects and the fitted scalers):

* ``"memory"``: every image's fingerprints and Jacobian packed in memory (fastest for small data;
  about 2 MB per OC20 image with Jacobians at 20 features, twice that at the default 40);
* ``"stream"``: fingerprints, Jacobians and labels featurised once into shards on disk
  (:mod:`mfbo.training._shards`, parallel over processes, resumable), labels of the used images in
  memory (a few tens of bytes per atom), features and Jacobians read batch by batch. The fidelity
  subset and the validation set are index arrays into the shards; the store lays a file out as runs
  need it (validation, then the pool in nested-subset order) and a run computes only the shards that
  hold its images, so a small fraction of a large pool featurises that fraction.
* ``"auto"`` (default): streams when the images come from files (paths or
  :func:`~mfbo.training.open_images` views) and the in-memory estimate exceeds ``memory_limit_gb``.

A streamed run with forces either stores the force Jacobians in the shards (``jacobians = "store"``:
read back batch by batch, the fastest on a CPU) or stores fingerprints only and recomputes each
batch's Jacobians on the run's device (``"recompute"``: a store about 1/150 of the size, so 50k OC20
images take about 1.5 GB of disk instead of 200 GB). ``"auto"`` stores them when the Jacobian store of
the whole pool and validation set fits within 90 % of the shard stores' size limit, else recomputes.

Both modes give the same learning curve for the same seed (same batches, same arithmetic).
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mfbo.errors import ConfigError, DataError
from mfbo.training._baselines import LabelSet
from mfbo.training._core import ScaledPack
from mfbo.training._data import load_images, nested_subset, nested_subset_indices
from mfbo.training._featurize import featurize_images
from mfbo.training._images import ImageFile, open_images, source_key
from mfbo.training._packed import PackedImages, pack_images
from mfbo.training._scaling import FeatureScaler, TargetScaler
from mfbo.training._shards import (
    DEFAULT_SHARD_SIZE,
    ShardSet,
    bound_shard_root,
    build_shards,
    mark_in_use,
    shard_directory,
)

__all__ = [
    "DataOptions",
    "PreparedData",
    "prepare_data",
    "resolve_data_mode",
    "DATA_MODES",
    "StreamedPack",
    "stored_labels",
]

DATA_MODES = ("auto", "memory", "stream")
JACOBIAN_MODES = ("auto", "store", "recompute")


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class DataOptions:
    """How the trainer holds its data.

    Attributes:
        mode: "auto", "memory" or "stream" (module docstring).
        shard_dir: shard store root; default ``<cache dir>/shards`` when the run has a cache
            directory, else ``$MFBO_CACHE_DIR/shards`` or ``~/.cache/mfbo/shards``.
        workers: featurisation processes for the shards, this one included (default: the CPUs this
            process may use).
        shard_size: images per shard.
        memory_limit_gb: "auto" streams when the estimated in-memory fingerprints + Jacobians of
            the pool and validation set exceed this (GB).
        max_gb: size limit of the shard stores under ``shard_dir`` (GB); least recently used
            stores of other parameter sets are removed after a run opens its own (default:
            ``$MFBO_CACHE_MAX_GB``, else min(20, half of their size + free disk); see
            :func:`mfbo.training._shards.bound_shard_root`).
        jacobians: "auto", "store" or "recompute": where a streamed run's force Jacobians come from
            (module docstring).
    """

    mode: str = "auto"
    shard_dir: str | os.PathLike | None = None
    workers: int | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    memory_limit_gb: float = 2.0
    max_gb: float | None = None
    jacobians: str = "auto"

    def __post_init__(self):
        if self.mode not in DATA_MODES:
            raise ConfigError(f"data_mode={self.mode!r} must be one of {', '.join(DATA_MODES)}")
        if self.jacobians not in JACOBIAN_MODES:
            raise ConfigError(f"shard_jacobians={self.jacobians!r} must be one of {', '.join(JACOBIAN_MODES)}")
        if self.workers is not None and int(self.workers) < 1:
            raise ConfigError(f"featurize_workers={self.workers!r} must be at least 1")
        if int(self.shard_size) < 1:
            raise ConfigError(f"shard_size={self.shard_size!r} must be at least 1")
        if not float(self.memory_limit_gb) > 0:
            raise ConfigError(f"data_memory_gb={self.memory_limit_gb!r} must be positive")
        if self.max_gb is not None:
            from mfbo.fingerprints._store import check_max_gb

            check_max_gb(self.max_gb, "max_gb")

    @classmethod
    def of(cls, value) -> DataOptions:
        """None -> defaults; a mode string; a dict of fields; or a DataOptions."""
        if value is None:
            return cls()
        if isinstance(value, DataOptions):
            return value
        if isinstance(value, str):
            return cls(mode=value)
        if isinstance(value, dict):
            unknown = set(value) - set(cls.__dataclass_fields__)
            if unknown:
                raise ConfigError(f"unknown data option(s) {', '.join(sorted(unknown))}")
            return cls(**value)
        raise ConfigError(f"data options must be a mode string or a dict, got {type(value).__name__}")


@dataclass
class PreparedData:
    """What the epoch loop consumes, plus set-up facts for the record.

    Attributes:
        train, val: ScaledPack-like sources (``.batch(images)`` gives the batch's pack).
        fscaler, tscaler: scalers fitted on the training subset.
        n_features: fingerprint length.
        elements: atomic numbers present in the training subset.
        n_train, n_val: images.
        train_labels, val_labels: images or LabelSets for :func:`baseline_metrics`.
        featurize_s, featurize_cpu_s: wall and process-CPU seconds of featurisation (s).
        mode: "memory" or "stream".
        jacobians: where the force Jacobians come from: "memory", "store", "recompute", or "none"
            (no forces).
    """

    train: ScaledPack
    val: ScaledPack
    fscaler: FeatureScaler
    tscaler: TargetScaler
    n_features: int
    elements: list[int]
    n_train: int
    n_val: int
    train_labels: object
    val_labels: object
    featurize_s: float
    featurize_cpu_s: float
    mode: str
    jacobians: str = "none"


def _is_file_source(x) -> bool:
    return isinstance(x, (str, os.PathLike, ImageFile))


def _as_view(x) -> ImageFile:
    return x if isinstance(x, ImageFile) else open_images(x)


def estimate_memory_bytes(images: ImageFile, params, derivatives: bool, sample: int = 8) -> float:
    """Estimated bytes of the in-memory fingerprints (+ Jacobians) of ``images``, from neighbour
    counts of up to ``sample`` images spread through them (no fingerprints are computed)."""
    from mfbo.fingerprints._neighbors import neighbor_pairs, structure_from_atoms

    n = len(images)
    if n == 0:
        return 0.0
    picks = np.unique(np.linspace(0, n - 1, min(sample, n)).astype(np.int64))
    per_image = []
    for k in picks:
        atoms = images[int(k)]
        n_atoms = len(atoms)
        size = n_atoms * params.n_features * 8
        if derivatives:
            i, j, *_ = neighbor_pairs(structure_from_atoms(atoms, where=f"image {k}"), params.cutoff, shifts=False)
            pairs = len(np.unique(i * n_atoms + j))
            size += pairs * (params.n_features * 3 * 8 + 16)
        per_image.append(size)
    return float(np.mean(per_image)) * n


def resolve_data_mode(options: DataOptions, train_images, val_images, params, derivatives: bool, cache=None) -> str:
    """"memory" or "stream" for these inputs (see the module docstring)."""
    if options.mode == "memory":
        return "memory"
    files = _is_file_source(train_images) and _is_file_source(val_images)
    if options.mode == "stream":
        if not files:
            raise ConfigError(
                "data_mode='stream' reads images from dataset files: pass paths or open_images(...) views, "
                "not lists of Atoms"
            )
        return "stream"
    custom_cache = cache is not None and not isinstance(cache, (str, os.PathLike, bool))
    from mfbo.fingerprints import FingerprintCache

    if not files or (custom_cache and not isinstance(cache, FingerprintCache)):
        return "memory"
    views = [_as_view(train_images), _as_view(val_images)]
    estimate = sum(estimate_memory_bytes(v, params, derivatives) for v in views)
    return "stream" if estimate > float(options.memory_limit_gb) * 1e9 else "memory"


def resolve_jacobian_mode(options: DataOptions, views, params, root, *, say: bool = False) -> str:
    """"store" or "recompute" for a streamed run with forces over the files of ``views`` (module
    docstring): "auto" stores the Jacobians when the estimated store of every image of those files
    fits within 90 % of the shard stores' size limit (:func:`mfbo.training._shards.bound_shard_root`).
    With ``say``, a choice of "recompute" by "auto" is explained on stderr, with the limit that
    would store them."""
    if options.jacobians != "auto":
        return options.jacobians
    from mfbo.fingerprints._store import resolve_limit

    files = {source_key(v): v.whole_file() for v in views}
    estimate = sum(estimate_memory_bytes(f, params, True) for f in files.values())
    root = Path(root)
    probe = next((p for p in [root, *root.parents] if p.exists()), Path.cwd())
    limit = resolve_limit(options.max_gb, probe, 0)[0]
    if estimate <= 0.9 * limit:
        return "store"
    if say:
        # An epoch with recomputed Jacobians took 11x one with stored ones on a CPU (docs/training.md).
        print(f"force Jacobians: the shards of {sum(len(f) for f in files.values())} images would take about "
              f"{estimate / 1e9:.3g} GB, over 90 % of the shard stores' limit ({limit / 1e9:.3g} GB): they are "
              f"recomputed per batch (slower epochs on a CPU); shard_max_gb = {np.ceil(estimate / 0.9e9):.0f} "
              "stores them", file=sys.stderr, flush=True)
    return "recompute"


def _images(source, what: str, require_forces: bool) -> list:
    try:
        return load_images(source, require_forces=require_forces)
    except DataError as exc:
        raise DataError(f"{what}: {exc}") from None


def _shard_root(options: DataOptions, cache) -> Path:
    if options.shard_dir is not None:
        return Path(options.shard_dir)
    if isinstance(cache, (str, os.PathLike)):
        return Path(cache) / "shards"
    directory = getattr(cache, "directory", None)
    if directory is not None:
        return Path(directory) / "shards"
    env = os.environ.get("MFBO_CACHE_DIR")
    return Path(env) / "shards" if env else Path.home() / ".cache" / "mfbo" / "shards"


def prepare_data(
    config,
    params,
    train_images,
    val_images,
    *,
    data_fraction: float,
    cache,
    progress: bool,
    device,
    dtype,
    options: DataOptions | None = None,
) -> PreparedData:
    """Featurise, pack (or shard) and scale the training subset and the validation set.

    Args:
        config: the TrainConfig (seed, get_forces, scalings).
        params: its GMPParams.
        train_images: the pool (path, ImageFile view or list of Atoms); ``data_fraction`` selects
            the nested subset.
        val_images: the fixed validation set.
        data_fraction: the fidelity in (0, 1].
        cache: the fingerprint cache (memory mode) or None; its directory also holds the shards.
        progress: progress bars / plain lines on stderr.
        device, dtype: torch device and floating dtype of the run.
        options: :class:`DataOptions` (None: defaults).

    Raises:
        DataError: a dataset lacks energies (or forces when ``config.get_forces``).
    """
    options = DataOptions.of(options)
    forces_on = bool(config.get_forces)
    mode = resolve_data_mode(options, train_images, val_images, params, forces_on, cache)
    if mode == "memory":
        return _prepare_memory(config, params, train_images, val_images, data_fraction, cache, progress, device, dtype)
    return _prepare_stream(config, params, train_images, val_images, data_fraction, cache, progress, device, dtype,
                           options)


def _prepare_memory(config, params, train_images, val_images, data_fraction, cache, progress, device, dtype):
    forces_on = bool(config.get_forces)
    pool = _images(train_images, "training set", forces_on)
    val = _images(val_images, "validation set", forces_on)
    subset = nested_subset(pool, data_fraction, config.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    train_fps = featurize_images(subset, params, derivatives=forces_on, cache=cache, progress=progress)
    val_fps = featurize_images(val, params, derivatives=forces_on, cache=cache, progress=progress)
    t_featurize, c_featurize = time.perf_counter() - t0, time.process_time() - c0
    train_pack = pack_images(subset, train_fps, jacobian=forces_on)
    val_pack = pack_images(val, val_fps, jacobian=forces_on)
    del train_fps, val_fps
    fscaler = FeatureScaler.fit(
        train_pack.features.numpy(),
        train_pack.numbers.numpy(),
        config.feature_scaling,
        config.feature_range,
        config.feature_scaling_per_element,
    )
    offsets = train_pack.atom_offsets.tolist()
    numbers = train_pack.numbers.numpy()
    tscaler = TargetScaler.fit(
        train_pack.energies.numpy(),
        [numbers[offsets[k] : offsets[k + 1]] for k in range(len(subset))],
        config.target_scaling,
    )
    train_sp = ScaledPack.build(train_pack.to(device, dtype), fscaler, tscaler)
    val_sp = ScaledPack.build(val_pack.to(device, dtype), fscaler, tscaler)
    n_features = train_sp.packed.features.shape[1]
    return PreparedData(
        train=train_sp,
        val=val_sp,
        fscaler=fscaler,
        tscaler=tscaler,
        n_features=int(n_features),
        elements=sorted({int(z) for z in np.unique(numbers)}),
        n_train=len(subset),
        n_val=len(val),
        train_labels=subset,
        val_labels=val,
        featurize_s=t_featurize,
        featurize_cpu_s=c_featurize,
        mode="memory",
        jacobians="memory" if config.get_forces else "none",
    )


def _prepare_stream(config, params, train_images, val_images, data_fraction, cache, progress, device, dtype, options):
    forces_on = bool(config.get_forces)
    pool = _as_view(train_images)
    val = _as_view(val_images)
    root = _shard_root(options, cache)
    workers = options.workers or _default_workers()
    t0, c0 = time.perf_counter(), time.process_time()
    jacobians = resolve_jacobian_mode(options, [pool, val], params, root, say=progress) if forces_on else "none"
    ids = pool.indices[nested_subset_indices(len(pool), data_fraction, config.seed)]
    # Per file: the images in the order runs need them (validation, then the pool's nested-subset
    # order) and the ones this run needs, so a fraction of the data featurises only that fraction.
    plans: dict[str, tuple] = {}
    for view, first, needed in ((val, val.indices, val.indices),
                                (pool, pool.indices[nested_subset_indices(len(pool), 1.0, config.seed)], ids)):
        _, firsts, needs = plans.setdefault(source_key(view), (view, [], []))
        firsts.append(first)
        needs.append(needed)
    stores = {
        key: _open_store(view, params, root, derivatives=jacobians == "store", require_forces=forces_on,
                         first=np.concatenate(firsts),
                         needed=np.concatenate(needs), workers=workers, shard_size=options.shard_size,
                         progress=progress)
        for key, (view, firsts, needs) in plans.items()
    }
    t_featurize, c_featurize = time.perf_counter() - t0, time.process_time() - c0
    # Studies bring a new parameter set with most trials: keep the stores' total within a limit.
    mark_in_use([store.directory for store in stores.values()])
    bound_shard_root(root, options.max_gb)
    train_store, val_store = stores[source_key(pool)], stores[source_key(val)]
    numbers = train_store.numbers[train_store.atom_ids(ids)]
    elements = np.unique(numbers)

    def chunks():
        for group in train_store.shard_ranges(ids):
            yield train_store.features_of(group), train_store.numbers[train_store.atom_ids(group)]

    fscaler = FeatureScaler.fit_chunks(
        chunks(), elements, train_store.n_features, config.feature_scaling, config.feature_range,
        config.feature_scaling_per_element,
    )
    tscaler = TargetScaler.fit(train_store.energies[ids], train_store.image_numbers(ids), config.target_scaling)
    # Recomputed Jacobians come from the run's parameters on its device.
    recompute = params if jacobians == "recompute" else None
    train_sp = StreamedPack.over(train_store, ids, fscaler, tscaler, device, dtype, jacobian=forces_on,
                                 recompute=recompute)
    val_sp = StreamedPack.over(val_store, val.indices, fscaler, tscaler, device, dtype, jacobian=forces_on,
                               recompute=recompute)
    return PreparedData(
        train=train_sp,
        val=val_sp,
        fscaler=fscaler,
        tscaler=tscaler,
        n_features=train_store.n_features,
        elements=[int(z) for z in elements],
        n_train=len(ids),
        n_val=len(val),
        train_labels=_labels(train_store, ids),
        val_labels=_labels(val_store, val.indices),
        featurize_s=t_featurize,
        featurize_cpu_s=c_featurize,
        mode="stream",
        jacobians=jacobians,
    )


def needed_first_order(first, n: int) -> np.ndarray:
    """``(n,)`` permutation of a file's images: ``first`` (duplicates dropped), then the rest in file order."""
    first = np.asarray(first, dtype=np.int64).reshape(-1)
    _, at = np.unique(first, return_index=True)
    head = first[np.sort(at)]
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), head, assume_unique=True)
    return np.concatenate([head, rest])


def _open_store(view, params, root, *, derivatives: bool, require_forces: bool, first, needed, workers: int,
                shard_size: int, progress: bool) -> ShardSet:
    """The shard store a run reads ``needed`` from: a file-order store already complete on disk (one
    featurised whole beforehand), else the store in :func:`needed_first_order` with the shards holding
    ``needed`` computed (resuming)."""
    plain = shard_directory(root, params, view, derivatives)
    if (plain / "manifest.json").is_file():
        try:
            return ShardSet(plain)
        except DataError:
            pass  # incomplete: the ordered store below computes only what this run needs
    return build_shards(view, params, root, derivatives=derivatives, require_forces=require_forces, workers=workers,
                        shard_size=shard_size, progress=progress, order=needed_first_order(first, view.file_length),
                        needed=needed)


def stored_labels(views) -> LabelSet:
    """The labels of several :func:`open_images` views, read from their files in one pass each (no
    fingerprints are computed)."""
    return LabelSet.of(itertools.chain.from_iterable(views))


def _labels(store: ShardSet, ids) -> LabelSet:
    atoms = store.atom_ids(ids)
    return LabelSet(
        energies=store.energies[ids],
        numbers=store.image_numbers(ids),
        forces=None if store.forces is None else store.forces[atoms],
        free=store.free[atoms],
    )


def _read_pack(store: ShardSet, ids, *, features: bool, jacobian: bool, recompute=None, device="cpu") -> PackedImages:
    """A float64 CPU pack of the images ``ids`` (labels always; features and Jacobians on request,
    the Jacobians recomputed on ``device`` with the GMPParams ``recompute`` when given)."""
    atoms = store.atom_ids(ids)
    natoms = store.natoms[ids]
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(natoms, out=offsets[1:])
    feats = store.features_of(ids) if features else np.zeros((len(atoms), 0))
    packed = dict(
        numbers=torch.from_numpy(store.numbers[atoms]),
        atom_offsets=torch.from_numpy(offsets),
        features=torch.from_numpy(feats),
        energies=torch.from_numpy(store.energies[ids]),
        forces=None if store.forces is None else torch.from_numpy(store.forces[atoms]),
        free=torch.from_numpy(store.free[atoms]),
    )
    if jacobian:
        if recompute is not None:
            pair_i, pair_j, dfeatures, pair_offsets = store.recomputed_jacobians_of(ids, recompute, device)
        else:
            pair_i, pair_j, dfeatures, pair_offsets = store.jacobians_of(ids)
        pi, pj, df = torch.from_numpy(pair_i), torch.from_numpy(pair_j), torch.from_numpy(dfeatures)
        spans = list(zip(pair_offsets[:-1].tolist(), pair_offsets[1:].tolist()))
        first_atom = offsets[:-1].tolist()
        packed.update(
            pair_i=[pi[a:b] - first_atom[k] for k, (a, b) in enumerate(spans)],
            pair_j=[pj[a:b] - first_atom[k] for k, (a, b) in enumerate(spans)],
            dfeatures=[df[a:b] for a, b in spans],
            flat_pairs=(pi, pj, df),
        )
    return PackedImages(**packed)


class StreamedPack(ScaledPack):
    """A ScaledPack whose labels and targets are in memory and whose features and Jacobians are read
    from the shards batch by batch (:meth:`batch`; Jacobians recomputed there with the GMPParams
    ``recompute`` when given). ``packed.features`` has no columns."""

    @classmethod
    def over(cls, store: ShardSet, ids, fscaler: FeatureScaler, tscaler: TargetScaler, device, dtype, *,
             jacobian: bool, recompute=None) -> StreamedPack:
        ids = np.asarray(ids, dtype=np.int64)
        labels = _read_pack(store, ids, features=False, jacobian=False).to(device, dtype)
        # Targets from the same code as the in-memory pack (a feature scaler with no columns).
        empty = FeatureScaler(fscaler.kind, fscaler.row_of_z, fscaler.mul[:, :0], fscaler.add[:, :0])
        base = ScaledPack.build(labels, empty, tscaler)
        sp = cls(**{name: getattr(base, name) for name in ScaledPack.__dataclass_fields__})
        sp._stream = (store, ids, fscaler, tscaler, device, dtype,
                      bool(jacobian and (store.has_jacobian or recompute is not None)), recompute)
        # The pack answers has_jacobian for what batches will carry.
        sp.packed.dfeatures = [] if sp._stream[6] else None
        return sp

    def batch(self, images):
        store, ids, fscaler, tscaler, device, dtype, jacobian, recompute = self._stream
        packed = _read_pack(store, ids[np.asarray(images, dtype=np.int64)], features=True, jacobian=jacobian,
                            recompute=recompute, device=device)
        return ScaledPack.build(packed.to(device, dtype), fscaler, tscaler), list(range(len(images)))
