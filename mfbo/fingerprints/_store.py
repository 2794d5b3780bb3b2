"""Size limit, least-recently-used eviction and clearing of the fingerprint cache directory.

Imports only the standard library, so ``mfbo cache info`` stays fast.

An *entry* is one ``<directory>/<32 hex>/<64 hex>.npz`` or ``.jac.npz`` file. Its last use is
its modification time: :class:`mfbo.fingerprints.FingerprintCache` sets it to the current time
on every read (one ``os.utime`` call) and a write creates the file, so sorting by mtime orders
the entries from least to most recently used, for all processes sharing the directory. Nothing
else under the directory is counted, evicted or cleared: shard stores (``<directory>/shards``,
written by ``mfbo.training``) are left alone, as is any file that is not an entry.

Sizes are in bytes; limits in GB (1 GB = 10^9 bytes).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from mfbo.errors import ConfigError

__all__ = [
    "ENV_MAX_GB",
    "DEFAULT_MAX_GB",
    "default_directory",
    "check_max_gb",
    "explicit_limit",
    "resolve_limit",
    "scan",
    "evict",
    "clear",
    "cache_info",
    "CacheScan",
]

ENV_MAX_GB = "MFBO_CACHE_MAX_GB"
# The default limit: the smaller of this and half of (cache size + free disk space).
DEFAULT_MAX_GB = 20.0
# Eviction removes entries until the cache holds at most this fraction of the limit, so that
# it does not run again on the next write.
LOW_WATER = 0.9
# Temporary files (".tmp-*") older than this are the remains of a crashed writer.
STALE_TMP_S = 3600.0

_KEY_DIR = re.compile(r"[0-9a-f]{32}")
_ENTRY = re.compile(r"[0-9a-f]{64}(\.jac)?\.npz")


def default_directory() -> Path:
    """``$MFBO_CACHE_DIR`` or ``~/.cache/mfbo/fingerprints``."""
    env = os.environ.get("MFBO_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mfbo" / "fingerprints"


def is_entry_name(name: str) -> bool:
    """Whether a file name is a cache entry (``<sha256>.npz`` or ``<sha256>.jac.npz``)."""
    return _ENTRY.fullmatch(name) is not None


def check_max_gb(value, name: str = "max_gb") -> float | None:
    """``value`` as a limit in GB: None (no explicit limit), a positive number, or inf (no limit).

    Raises:
        ConfigError: naming ``name`` when the value is not a positive number.
    """
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            value = None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value <= 0:
        raise ConfigError(
            f"{name} must be a positive number of GB (the fingerprint cache size limit; inf: no limit), got {value!r}"
        )
    return float(value)


def explicit_limit(max_gb) -> tuple[float | None, str]:
    """(limit in GB from ``max_gb`` or ``$MFBO_CACHE_MAX_GB``, or None for the default; its source).

    Raises:
        ConfigError: naming ``MFBO_CACHE_MAX_GB`` when that variable is not a positive number.
    """
    if max_gb is not None:
        return check_max_gb(max_gb), "max_gb"
    env = os.environ.get(ENV_MAX_GB)
    if env is not None and env.strip():
        try:
            return check_max_gb(env, ENV_MAX_GB), ENV_MAX_GB
        except ConfigError:
            raise ConfigError(
                f"environment variable {ENV_MAX_GB}={env!r} must be a positive number of GB "
                "(the fingerprint cache size limit; inf: no limit); fix or unset it"
            ) from None
    return None, "default"


def _free_bytes(directory: Path) -> int:
    """Free bytes on the file system holding ``directory`` (or its nearest existing parent)."""
    p = Path(directory).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return 0


def resolve_limit(max_gb, directory, cache_bytes: int) -> tuple[float, str]:
    """The limit in bytes (inf: none) and its source ("max_gb", ``MFBO_CACHE_MAX_GB`` or "default").

    The default is min(20 GB, (cache_bytes + free disk bytes) / 2), so the cache never takes
    more than half of the space it could grow into.
    """
    gb, source = explicit_limit(max_gb)
    if gb is not None:
        return gb * 1e9, source
    return min(DEFAULT_MAX_GB * 1e9, (cache_bytes + _free_bytes(Path(directory))) / 2), source


@dataclass
class CacheScan:
    """What one pass over a cache directory found.

    Attributes:
        entries: (mtime_ns, size in bytes, path) of every entry, unordered.
        stale_tmp: temporary files older than an hour (a crashed writer's leftovers).
        key_dirs: parameter-set directories (``<32 hex>``) found.
    """

    entries: list = field(default_factory=list)
    stale_tmp: list = field(default_factory=list)
    key_dirs: list = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries)


def scan(directory) -> CacheScan:
    """Stat every entry under ``directory`` (missing directory: an empty scan).

    Files that vanish during the scan (another process evicting) are skipped.
    """
    result = CacheScan()
    now = time.time()
    try:
        tops = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return result
    for top in tops:
        if not _KEY_DIR.fullmatch(top.name):
            continue
        try:
            if not top.is_dir(follow_symlinks=False):
                continue
            children = list(os.scandir(top.path))
        except OSError:
            continue
        result.key_dirs.append(top.path)
        for e in children:
            try:
                if is_entry_name(e.name):
                    st = e.stat(follow_symlinks=False)
                    result.entries.append((st.st_mtime_ns, st.st_size, e.path))
                elif e.name.startswith(".tmp-"):
                    st = e.stat(follow_symlinks=False)
                    if now - st.st_mtime > STALE_TMP_S:
                        result.stale_tmp.append(e.path)
            except FileNotFoundError:
                continue
    return result


def _unlink(path: str) -> bool:
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def _remove_empty_key_dirs(key_dirs, in_use=None) -> None:
    """Remove parameter-set directories that hold no entry any more (only params.json)."""
    for d in key_dirs:
        if in_use is not None and in_use(os.path.basename(d), None):
            continue
        try:
            names = os.listdir(d)
        except OSError:
            continue
        if any(is_entry_name(n) or n.startswith(".tmp-") for n in names):
            continue
        try:
            if "params.json" in names:
                _unlink(os.path.join(d, "params.json"))
            os.rmdir(d)
        except OSError:  # a writer put something there meanwhile, or no permission
            pass


class _DirectoryLock:
    """Non-blocking exclusive lock on ``<directory>/.evict.lock`` (POSIX flock; elsewhere a no-op).

    ``acquired`` is False when another process holds it (it is evicting already).
    """

    def __init__(self, directory):
        self.path = os.path.join(directory, ".evict.lock")
        self.fd = None
        self.acquired = False

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # no flock: concurrent evictions are still safe, only redundant
            self.acquired = True
            return self
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.acquired = True
        except OSError:
            self.acquired = False
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
        return False


@dataclass
class EvictResult:
    """Outcome of :func:`evict`: bytes left, the limit applied, entries and bytes removed, whether it ran."""

    total_bytes: int
    limit_bytes: float = math.inf
    removed: int = 0
    removed_bytes: int = 0
    ran: bool = True


def evict(directory, limit_of, in_use=None) -> EvictResult:
    """Bring the cache at ``directory`` under its limit, least recently used entries first.

    ``limit_of(total_bytes)`` gives the limit in bytes for the cache size found by the scan
    (see :func:`resolve_limit`). Does nothing when the cache is within it. Otherwise removes
    entries in order of modification time (oldest first) until at most ``LOW_WATER`` times the
    limit remain, skipping entries for which ``in_use(parameter-set directory name, file name)``
    is true (asked just before each removal, so the caller may add entries meanwhile) and any
    entry read or rewritten after the scan (its mtime changed). Another process holding the eviction lock
    makes this a no-op (``ran`` False). Stale temporary files go too; parameter-set directories
    left without entries are removed unless ``in_use(name, None)`` is true.
    """
    directory = os.fspath(directory)
    with _DirectoryLock(directory) as lock:
        if not lock.acquired:
            return EvictResult(total_bytes=-1, ran=False)
        found = scan(directory)
        for p in found.stale_tmp:
            try:
                _unlink(p)
            except OSError:
                pass
        total = found.total_bytes
        limit_bytes = limit_of(total)
        result = EvictResult(total_bytes=total, limit_bytes=limit_bytes)
        if total <= limit_bytes:
            return result
        target = LOW_WATER * limit_bytes
        for mtime_ns, size, path in sorted(found.entries):
            if total <= target:
                break
            if in_use is not None and in_use(*path.rsplit(os.sep, 2)[-2:]):
                continue
            try:
                if os.stat(path).st_mtime_ns != mtime_ns:  # used since the scan
                    continue
            except FileNotFoundError:  # evicted by someone else
                total -= size
                continue
            try:
                if _unlink(path):
                    result.removed += 1
                    result.removed_bytes += size
            except OSError:  # e.g. another user's entry in a shared cache: left in place
                continue
            total -= size
        result.total_bytes = total
        if result.removed:
            _remove_empty_key_dirs(found.key_dirs, in_use)
        return result


def clear(directory, older_than_days: float | None = None) -> tuple[int, int]:
    """Remove entries (all, or those last used more than ``older_than_days`` days ago).

    Also removes stale temporary files and parameter-set directories left empty. Returns
    (entries removed, bytes removed). Shard stores and unknown files are kept.
    """
    found = scan(directory)
    cutoff_ns = None if older_than_days is None else time.time_ns() - int(older_than_days * 86400e9)
    removed = removed_bytes = 0
    for mtime_ns, size, path in found.entries:
        if cutoff_ns is not None and mtime_ns >= cutoff_ns:
            continue
        if _unlink(path):
            removed += 1
            removed_bytes += size
    for p in found.stale_tmp:
        _unlink(p)
    _remove_empty_key_dirs(found.key_dirs)
    return removed, removed_bytes


def tree_bytes(directory) -> int:
    """Total size of the files under ``directory`` (0 when missing)."""
    total = 0
    for root, _, files in os.walk(directory):
        for name in files:
            try:
                total += os.stat(os.path.join(root, name), follow_symlinks=False).st_size
            except OSError:
                continue
    return total


def cache_info(directory=None, max_gb=None) -> dict:
    """Entries, size and limit of the cache at ``directory`` (default :func:`default_directory`).

    Returns a dict: ``directory`` (str), ``exists``, ``entries``, ``parameter_sets``,
    ``size_bytes``, ``size_gb``, ``limit_gb`` (None: no limit), ``limit_source`` ("max_gb",
    ``MFBO_CACHE_MAX_GB`` or "default"), ``free_disk_gb``, ``oldest_use`` / ``newest_use``
    (Unix times in s of the least and most recently used entries, None when empty).
    """
    directory = Path(directory) if directory is not None else default_directory()
    found = scan(directory)
    total = found.total_bytes
    limit, source = resolve_limit(max_gb, directory, total)
    mtimes = [m for m, _, _ in found.entries]
    return {
        "directory": str(directory),
        "exists": directory.is_dir(),
        "entries": len(found.entries),
        "parameter_sets": len(found.key_dirs),
        "size_bytes": total,
        "size_gb": total / 1e9,
        "limit_gb": None if math.isinf(limit) else limit / 1e9,
        "limit_source": source,
        "free_disk_gb": _free_bytes(directory) / 1e9,
        "oldest_use": min(mtimes) / 1e9 if mtimes else None,
        "newest_use": max(mtimes) / 1e9 if mtimes else None,
    }
