"""``mfbo cache info|clear``: see and empty the fingerprint cache."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cache",
        help="show or clear the on-disk fingerprint cache",
        description=(
            "The fingerprint cache ($MFBO_CACHE_DIR or ~/.cache/mfbo/fingerprints unless --dir) keeps each "
            "structure's GMP fingerprints per parameter set. It is kept under a size limit (cache_max_gb, "
            "--cache-max-gb, $MFBO_CACHE_MAX_GB, else min(20 GB, half of cache size + free disk)) by removing "
            "the least recently used entries. Shard stores (the 'shards' folder) are never touched."
        ),
    )
    sub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    info = sub.add_parser("info", help="entries, size, limit and location of the cache")
    info.add_argument("--dir", default=None, metavar="D", help="cache directory (default: $MFBO_CACHE_DIR or ~/.cache/mfbo/fingerprints)")
    info.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    info.set_defaults(func=_info)
    clear = sub.add_parser("clear", help="remove cache entries (all, or those unused for DAYS days)")
    clear.add_argument("--dir", default=None, metavar="D", help="cache directory (default: $MFBO_CACHE_DIR or ~/.cache/mfbo/fingerprints)")
    clear.add_argument("--older-than", default=None, metavar="DAYS", help="only entries last used more than DAYS days ago")
    clear.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    clear.set_defaults(func=_clear)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser) -> int:
    parser.print_help()
    return 2


def _directory(args):
    from pathlib import Path

    from mfbo.errors import ConfigError
    from mfbo.fingerprints._store import default_directory

    d = Path(args.dir).expanduser() if args.dir is not None else default_directory()
    if d.exists() and not d.is_dir():
        raise ConfigError(f"--dir {d} is a file, not a cache directory")
    return d


def _shard_dir(directory):
    """Where shard stores of runs using this cache live (``<directory>/shards``), if it exists."""
    from mfbo.fingerprints._store import default_directory

    candidates = [directory / "shards"]
    if directory == default_directory() and directory.name == "fingerprints":
        candidates.append(directory.parent / "shards")
    return next((c for c in candidates if c.is_dir()), None)


def _when(t) -> str:
    import time

    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _info(args: argparse.Namespace) -> int:
    import json

    from mfbo.fingerprints._store import cache_info, tree_bytes

    directory = _directory(args)
    info = cache_info(directory)
    shards = _shard_dir(directory)
    info["shards"] = None if shards is None else {"directory": str(shards), "size_gb": tree_bytes(shards) / 1e9}
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    limit = "none" if info["limit_gb"] is None else f"{info['limit_gb']:.2f} GB"
    source = {
        "default": "default: min(20 GB, half of cache + free disk)",
        "MFBO_CACHE_MAX_GB": "from MFBO_CACHE_MAX_GB",
    }.get(info["limit_source"], info["limit_source"])
    lines = [
        f"location: {info['directory']}" + ("" if info["exists"] else " (does not exist yet)"),
        f"entries: {info['entries']} in {info['parameter_sets']} parameter set(s)",
        f"size: {info['size_gb']:.3f} GB",
        f"limit: {limit} ({source}); free disk {info['free_disk_gb']:.1f} GB",
        f"last used: oldest entry {_when(info['oldest_use'])}, newest {_when(info['newest_use'])}",
    ]
    if shards is not None:
        lines.append(
            f"shard stores (not counted, never evicted or cleared here): {shards}, {info['shards']['size_gb']:.3f} GB"
        )
    print("\n".join(lines))
    return 0


def _clear(args: argparse.Namespace) -> int:
    import math
    import sys
    import time

    from mfbo.errors import ConfigError
    from mfbo.fingerprints._store import clear, scan

    older = None
    if args.older_than is not None:
        try:
            older = float(args.older_than)
        except ValueError:
            older = math.nan
        if not math.isfinite(older) or older < 0:
            raise ConfigError(f"--older-than must be a number of days >= 0, got {args.older_than!r}")
    directory = _directory(args)
    found = scan(directory)
    cutoff_ns = None if older is None else time.time_ns() - int(older * 86400e9)
    chosen = [(m, s) for m, s, _ in found.entries if cutoff_ns is None or m < cutoff_ns]
    what = f"{len(chosen)} entries ({sum(s for _, s in chosen) / 1e9:.3f} GB)"
    if older is not None:
        what += f" unused for {older:g} days"
    if not chosen:
        print(f"nothing to remove in {directory}" + ("" if older is None else f" (no entry unused for {older:g} days)"))
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigError(f"would remove {what} from {directory}; pass --yes to remove them")
        answer = input(f"remove {what} from {directory}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 1
    removed, removed_bytes = clear(directory, older)
    print(f"removed {removed} entries ({removed_bytes / 1e9:.3f} GB) from {directory}")
    return 0
