"""``mfbo fingerprint INPUT --params PARAMS.json --out OUT.npz`` and ``mfbo cache info|clear``."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "fingerprint",
        help="compute GMP fingerprints of structures (AMPTorch-compatible)",
        description=(
            "Compute GMP fingerprints for every image of an ASE-readable file or an OC20 / fairchem "
            "LMDB dataset (a .lmdb file or a directory of them) and write one "
            "float64 array (n_atoms x n_features, AMPTorch column order) per image under keys "
            "'0', '1', ... of an .npz file. With --derivatives also '<k>__pair_i', '<k>__pair_j' "
            "and '<k>__dfeatures' (the pair-list Jacobian, feature units per Å)."
        ),
    )
    p.add_argument("input", metavar="INPUT",
                   help="structures in any ASE-readable format, or an OC20 / fairchem LMDB dataset")
    p.add_argument(
        "--params",
        required=True,
        metavar="PARAMS.json",
        help="JSON with 'fp_scheme' and AMPTorch fp_params keys (MCSHs, cutoff, ...) at top level",
    )
    p.add_argument("--out", required=True, metavar="OUT.npz", help="output .npz file")
    p.add_argument("--index", default=":", help="ASE index of the images to read, e.g. 3 or 0:100 (default: all)")
    p.add_argument("--derivatives", action="store_true", help="also write the fingerprint Jacobian")
    p.add_argument("--cache-dir", default=None, help="fingerprint cache directory (default: no cache)")
    p.add_argument(
        "--cache-max-gb",
        default=None,
        metavar="GB",
        help="size limit of the --cache-dir cache in GB (default: $MFBO_CACHE_MAX_GB, else "
        "min(20, half of cache + free disk)); least recently used entries are removed",
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.set_defaults(func=_handler)

    from mfbo.fingerprints._cache_cli import register as register_cache

    register_cache(subparsers)


def _handler(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from mfbo.errors import ConfigError, DataError, FingerprintError
    from mfbo.fingerprints._store import check_max_gb

    max_gb = check_max_gb(args.cache_max_gb, "--cache-max-gb")
    if max_gb is not None and not args.cache_dir:
        raise ConfigError("--cache-max-gb limits the cache given by --cache-dir; add --cache-dir DIR")
    try:
        with open(args.params, encoding="utf-8") as fh:
            spec = json.load(fh)
    except OSError as exc:
        raise FingerprintError(f"cannot read --params file {args.params}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise FingerprintError(f"{args.params}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(spec, dict):
        raise FingerprintError(f"{args.params}: expected a JSON object with fp_scheme and fp_params keys")

    from mfbo.fingerprints import FingerprintCache, GMPParams, featurize_many
    from mfbo.fingerprints._cache import atomic_savez

    try:
        params = GMPParams.from_fp_params(spec, spec.get("fp_scheme", "gmp"))
    except FingerprintError as exc:
        raise type(exc)(f"{args.params}: {exc}") from None

    images = _read_input(args.input, args.index)

    if args.cache_dir:
        fps = FingerprintCache(args.cache_dir, device=args.device, max_gb=max_gb).featurize_many(
            images, params, derivatives=args.derivatives, progress=True
        )
    else:
        fps = featurize_many(images, params, derivatives=args.derivatives, progress=True, device=args.device)

    arrays = {}
    for k, fp in enumerate(fps):
        arrays[str(k)] = fp.features
        if args.derivatives:
            arrays[f"{k}__pair_i"] = fp.pair_i
            arrays[f"{k}__pair_j"] = fp.pair_j
            arrays[f"{k}__dfeatures"] = fp.dfeatures
    out = Path(args.out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_savez(out, **arrays)
    except OSError as exc:
        raise DataError(f"cannot write {out}: {exc.strerror or exc}") from None
    n_atoms = sum(fp.n_atoms for fp in fps)
    print(
        f"wrote {out}: {len(fps)} images, {n_atoms} atoms, {params.n_features} features "
        f"({params.fp_scheme}, cutoff {params.cutoff:g} Å)",
        file=sys.stderr,
    )
    return 0


def _read_input(path: str, index: str) -> list:
    """The images of ``path`` selected by the ASE index string ``index``.

    An LMDB dataset is opened lazily and only the selected entries are read; any other file is read by
    ASE with the index.

    Raises:
        DataError: the input does not exist, cannot be read, or the index selects nothing.
    """
    from pathlib import Path

    from ase.io.formats import string2index

    from mfbo.errors import DataError

    # The trainer's reader: it reads LMDB datasets entry by entry without running their pickles' code.
    from mfbo.training._images import ImageFile, open_images
    from mfbo.training._lmdb import is_lmdb_dataset

    if not Path(path).exists():
        raise DataError(f"input file {path} does not exist")
    try:
        selector = string2index(index)
    except ValueError:
        raise DataError(f"--index {index!r} is not an ASE index (3, -1, 0:100, ::2)") from None
    if is_lmdb_dataset(Path(path)):
        dataset = open_images(path)  # raises DataError naming the file
        try:
            chosen = dataset[selector]
        except IndexError:
            raise DataError(f"--index {index!r} is out of range: {path} holds {len(dataset)} images") from None
        chosen = list(chosen) if isinstance(chosen, ImageFile) else [chosen]
    else:
        if not Path(path).is_file():
            raise DataError(f"input {path} is a directory that holds no .lmdb file; give a structure file")
        from ase.io import read

        try:
            chosen = read(path, index=index)
        except Exception as exc:  # ASE raises many kinds; all mean "cannot read this file"
            raise DataError(f"cannot read structures from {path}: {type(exc).__name__}: {exc}") from None
        chosen = chosen if isinstance(chosen, list) else [chosen]
    if not chosen:
        raise DataError(f"{path} holds no structure (index {index!r})")
    return chosen
