"""``mfbo train CONFIG``: one training run of a configuration a user wants to check."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from mfbo.errors import ConfigError

__all__ = ["register", "read_run_file", "DATA_KEYS"]

# Keys of a run file that are not TrainConfig fields or hyperparameters.
DATA_KEYS = ("train", "val", "test", "data_fraction", "cache_dir", "cache_max_gb", "output")
# Keys that say how the data are held (mfbo.training._source.DataOptions fields).
DATA_OPTION_KEYS = {
    "data_mode": "mode",
    "shard_dir": "shard_dir",
    "featurize_workers": "workers",
    "shard_size": "shard_size",
    "data_memory_gb": "memory_limit_gb",
    "shard_max_gb": "max_gb",
    "shard_jacobians": "jacobians",
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train one GMP + SingleNN potential from a JSON/TOML run file",
        description=(
            "Train one potential. CONFIG (JSON or TOML) holds TrainConfig fields and/or hyperparameter "
            "names (sigma_min, mcsh_order, ...) plus dataset paths: train (required), val (else split off "
            "train with val_fraction), test (optional), data_fraction, cache_dir (fingerprint cache) and "
            "cache_max_gb (its size limit in GB), output, and how the data are "
            "held: data_mode (auto/memory/stream), shard_dir, featurize_workers, shard_size, data_memory_gb, "
            "shard_max_gb (size limit of the shard stores), shard_jacobians (auto/store/recompute: force "
            "Jacobians stored in the shards or recomputed per batch). Writes "
            "OUTPUT/model.npz and OUTPUT/record.json (learning curve, test errors beside the trivial baselines) "
            "and prints them. 'preset = \"amptorch\"' starts from AMPTorch's exact settings."
        ),
    )
    p.add_argument("config", help="run file (.json or .toml)")
    p.add_argument("--output", "-o", help="output directory (default: the run file's 'output', else ./<name>-run)")
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.add_argument("--data-fraction", type=float, help="override the training-subset fraction")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_handler)


def read_run_file(path) -> dict:
    """Parse a JSON or TOML run file into a dict (ConfigError naming the file on failure)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"run file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise ConfigError(f"cannot parse run file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"run file {path} must hold a table/object of settings")
    return data


def _fmt(value, digits=4):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def unseen_elements_of(numbers, images) -> list[str]:
    """Chemical symbols in ``images`` that no array of atomic numbers in ``numbers`` contains (sorted)."""
    from ase.data import chemical_symbols

    seen = {int(z) for per_image in numbers for z in per_image}
    other = {int(z) for a in images for z in a.get_atomic_numbers()}
    return [chemical_symbols[z] for z in sorted(other - seen)]


def _handler(args) -> int:
    from mfbo.errors import TrainingDiverged
    from mfbo.training._config import TrainConfig, config_from_hyperparameters
    from mfbo.training._data import load_images, split_train_val

    run_path = Path(args.config)
    data = read_run_file(run_path)
    base_dir = run_path.resolve().parent

    def path_of(key):
        value = data.get(key)
        if value is None:
            return None
        p = Path(str(value)).expanduser()
        return p if p.is_absolute() else base_dir / p

    if "train" not in data:
        raise ConfigError(f"run file {run_path}: field 'train' (path of the training data) is missing")
    settings = {k: v for k, v in data.items() if k not in DATA_KEYS and k not in DATA_OPTION_KEYS}
    options = {DATA_OPTION_KEYS[k]: v for k, v in data.items() if k in DATA_OPTION_KEYS}
    if options.get("shard_dir") is not None:
        options["shard_dir"] = str(path_of("shard_dir"))
    try:
        config = config_from_hyperparameters(TrainConfig(), settings)
    except ConfigError as exc:
        raise ConfigError(f"run file {run_path}: {exc}") from None
    cache = path_of("cache_dir")
    if data.get("cache_max_gb") is not None:
        from mfbo.fingerprints._store import check_max_gb

        try:
            check_max_gb(data["cache_max_gb"], "cache_max_gb")
        except ConfigError as exc:
            raise ConfigError(f"run file {run_path}: {exc}") from None
        if cache is None:
            raise ConfigError(
                f"run file {run_path}: cache_max_gb limits the fingerprint cache, which is used only with "
                "cache_dir; add cache_dir or remove cache_max_gb"
            )
    data_fraction = args.data_fraction if args.data_fraction is not None else float(data.get("data_fraction", 1.0))
    output = Path(args.output) if args.output else (path_of("output") or Path.cwd() / f"{run_path.stem}-run")
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / f".write-test-{os.getpid()}"  # per process: torchrun starts several
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write to output directory {output}: {exc}") from None

    from mfbo.training._featurize import gmp_params_of
    from mfbo.training._images import open_images
    from mfbo.training._source import DataOptions, resolve_data_mode

    try:
        data_options = DataOptions.of(options)
    except ConfigError as exc:
        raise ConfigError(f"run file {run_path}: {exc}") from None
    pool = open_images(path_of("train"))
    val = open_images(path_of("val")) if data.get("val") is not None else pool
    if cache is not None:
        from mfbo.fingerprints import FingerprintCache

        cache = FingerprintCache(cache, max_gb=data.get("cache_max_gb"))
    mode = resolve_data_mode(data_options, pool, val, gmp_params_of(config), config.get_forces, cache)
    if mode == "memory":
        pool = load_images(path_of("train"), require_forces=config.get_forces)
        if data.get("val") is not None:
            val = load_images(path_of("val"), require_forces=config.get_forces)
        else:
            pool, val = split_train_val(pool, config.val_fraction, config.seed)
    elif data.get("val") is None:
        pool, val = split_train_val(pool, config.val_fraction, config.seed)
    test = load_images(path_of("test")) if data.get("test") is not None else None
    from mfbo.training._baselines import baseline_metrics, quality_lines, ratios_to_baselines, unseen_elements
    from mfbo.training._distributed import distributed_from_env

    ddp = distributed_from_env()
    main = ddp is None or ddp.is_main  # under torchrun every process trains; rank 0 writes and prints
    if mode == "memory" and main:
        for name, images in (("validation", val), ("test", test)):
            missing = unseen_elements(pool, images or [])
            if missing:
                print(
                    f"warning: the {name} set holds element(s) {', '.join(missing)} that no training image has; "
                    "the model cannot have learned them and its errors there are extrapolation",
                    file=sys.stderr,
                )
    record_path = output / "record.json"
    record = {"run_file": str(run_path.resolve()), "config": config.to_dict(), "data_fraction": data_fraction}
    from mfbo.training._train import train  # torch is imported only once the inputs are known to be good
    try:
        result = train(
            config,
            pool,
            val,
            data_fraction=data_fraction,
            epochs=args.epochs,
            test_images=test,
            cache=cache,
            progress=not args.no_progress,
            data=data_options,
        )
    except TrainingDiverged as exc:
        if main:
            record.update(status="diverged", error=str(exc), epoch=exc.epoch, last_metrics=exc.last_metrics)
            record_path.write_text(json.dumps(record, indent=2))
        raise
    if not main:
        return 0
    if ddp is not None:
        record["processes"] = ddp.world_size
    model_path = result.model.save(output / "model.npz")
    record.update(result.to_dict())
    if result.test_metrics:
        # Baselines fitted on everything the model was allowed to see (training + validation images).
        if mode == "memory":
            seen, unseen = list(pool) + list(val), unseen_elements(pool, test)
        else:
            from mfbo.training._source import stored_labels

            seen = stored_labels([pool, val])
            unseen = unseen_elements_of(seen.numbers[: len(pool)], test)  # the pool's images come first
        test_baselines = baseline_metrics(seen, test)
        record.update(
            test_baselines=test_baselines,
            test_ratios=ratios_to_baselines(result.test_metrics, test_baselines),
            unseen_test_elements=unseen,
        )
    record.update(status="completed", model_path=str(model_path))
    record_path.write_text(json.dumps(record, indent=2))

    from tabulate import tabulate

    columns = [
        ("epoch", "epoch"),
        ("train_energy_mae_per_atom", "train E (eV/atom)"),
        ("val_energy_mae", "val E (eV)"),
        ("val_energy_mae_per_atom", "val E (eV/atom)"),
        ("val_force_mae", "val F (eV/Å)"),
        ("val_force_mae_free", "val F free (eV/Å)"),
        ("val_score", "val score"),
        ("lr", "lr"),
        ("wall_time", "time (s)"),
    ]
    # Long runs: about 20 rows (every k-th epoch, the best one and the last), the rest is in record.json.
    step = max(1, len(result.curve) // 20)
    keep = {len(result.curve), result.extra.get("best_epoch") or 0}
    shown = [rec for rec in result.curve if rec["epoch"] % step == 0 or rec["epoch"] in keep or rec["epoch"] == 1]
    rows = [[_fmt(rec.get(k)) for k, _ in columns] for rec in shown]
    print(tabulate(rows, headers=[h for _, h in columns]))
    t = result.timings
    print(
        f"\n{result.n_train} training / {result.n_val} validation images; set-up {t['setup']:.2f} s "
        f"(fingerprints {t['featurize']:.2f} s), {t['epoch_mean']:.3f} s/epoch"
    )
    best_epoch = result.extra.get("best_epoch")
    if best_epoch and best_epoch != len(result.curve):
        print(f"model: the weights of epoch {best_epoch}, the best validation score (keep_best)")
    if result.test_metrics:
        print("\n".join(quality_lines(result.test_metrics, record["test_baselines"], "test")))
    print(f"model: {model_path}\nrecord: {record_path}")
    sys.stdout.flush()
    return 0
