"""Cost of the fingerprint cache's size limit: bounded vs unbounded, measured in the same process.

Scenario: a study trial with new GMP parameters featurises N OC20 pool images through a cache
that old trials have already filled. Each repeat copies the same pre-filled directory (2N entries
of two other parameter sets, last used days ago) twice and featurises into one copy with no limit
(``max_gb=inf``: no scans, no eviction) and into the other with the limit set to the pre-filled
size, so that the trial's writes make the cache evict the old entries; the two runs alternate
and their order swaps every repeat. The copy is flushed to disk (``os.sync``) before each timed
run. Printed, as median (minimum) over repeats, the machine being shared: seconds until
``featurize_many`` returned, and for the bounded cache also until the eviction it started in its
background thread had finished (``wait()``), the ratios bounded / unbounded, the difference per
entry in microseconds, and the time spent inside the scans and eviction themselves.

Then the pieces, per entry: a cache hit (reading an entry) with the last-use update
(``os.utime``) and with it replaced by a no-op (3x the repeats, alternating), and one scan of the directory (what eviction
costs per entry it looks at).

    OMP_NUM_THREADS=1 .venv/bin/python analysis/bench_cache.py [--images 100] [--repeats 7] [--values-only]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from ase.io import read

import mfbo.fingerprints._cache as cache_module
from mfbo.fingerprints import FingerprintCache, GMPParams, featurize_many
from mfbo.fingerprints._store import scan

REPO = Path(__file__).resolve().parents[1]
POOL = REPO / "mfbo" / "datasets" / "train_pool.traj"

# AMPTorch reference set (a) of analysis/bench_fingerprints.py; the old entries use cutoffs 8.5 and
# 9 Å (more pairs per entry than the trial's 8 Å).
FP = {
    "fp_scheme": "gmp",
    "MCSHs": {
        "0": {"groups": [1], "sigmas": [0.2, 0.69, 1.1, 1.66, 2.66]},
        "1": {"groups": [1], "sigmas": [0.2, 0.69, 1.1, 1.66, 2.66]},
        "2": {"groups": [1, 2], "sigmas": [0.2, 0.69, 1.1, 1.66, 2.66]},
    },
    "cutoff": 8,
}


def prefill(directory: Path, images, derivatives: bool) -> int:
    """2N entries of two other parameter sets, last used 3 days ago; returns their total bytes."""
    for k, cutoff in enumerate((8.5, 9.0)):
        old = GMPParams.from_fp_params({**FP, "cutoff": cutoff})
        FingerprintCache(directory, max_gb=float("inf")).featurize_many(images, old, derivatives=derivatives)
        t = time.time() - (3 + k) * 86400
        for _, _, path in scan(directory).entries:
            if os.stat(path).st_mtime > t:
                os.utime(path, (t, t))
    return scan(directory).total_bytes


def fill(directory: Path, images, params, derivatives: bool, max_gb: float) -> tuple[float, float, float, int]:
    """Featurise into ``directory``: (s until featurize_many returned, s until its eviction had also
    finished (``wait()``), s spent inside scans + eviction (background thread), entries evicted)."""
    cache = FingerprintCache(directory, max_gb=max_gb)
    spent = [0.0]
    real_evict = cache_module.evict

    def timed_evict(*a, **k):
        t = time.perf_counter()
        try:
            return real_evict(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t

    cache_module.evict = timed_evict
    try:
        t0 = time.perf_counter()
        cache.featurize_many(images, params, derivatives=derivatives)
        returned = time.perf_counter() - t0
        cache.wait()
        finished = time.perf_counter() - t0
    finally:
        cache_module.evict = real_evict
    return returned, finished, spent[0], cache.evicted


def read_all(directory: Path, images, params, derivatives: bool) -> float:
    cache = FingerprintCache(directory, max_gb=float("inf"))
    t0 = time.perf_counter()
    cache.featurize_many(images, params, derivatives=derivatives)
    elapsed = time.perf_counter() - t0
    assert cache.hits == len(images), "expected every image to be a cache hit"
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100, help="OC20 pool images featurised per run")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--values-only", action="store_true", help="no Jacobian (smaller entries)")
    args = ap.parse_args()
    derivatives = not args.values_only
    images = read(str(POOL), index=f":{args.images}")
    params = GMPParams.from_fp_params(FP)
    n = len(images)

    with tempfile.TemporaryDirectory(prefix="bench-cache-") as tmp:
        tmp = Path(tmp)
        seed = tmp / "seed"
        old_bytes = prefill(seed, images, derivatives)
        limit_gb = old_bytes / 1e9
        featurize_many(images[:2], params, derivatives=derivatives)  # the trial's plan, built outside the timing
        runs = {"unbounded": [], "bounded": []}  # (returned, finished, in eviction, evicted)
        left = []
        for r in range(args.repeats):
            order = ("unbounded", "bounded") if r % 2 == 0 else ("bounded", "unbounded")
            for kind in order:
                d = tmp / f"{kind}-{r}"
                shutil.copytree(seed, d, copy_function=shutil.copy2)
                if hasattr(os, "sync"):  # the copy's writeback must not compete with the timed run
                    os.sync()
                runs[kind].append(fill(d, images, params, derivatives, float("inf") if kind == "unbounded" else limit_gb))
                if kind == "bounded":
                    left.append(scan(d).total_bytes)
                if not (kind == "unbounded" and r == args.repeats - 1):
                    shutil.rmtree(d)

        def stat(kind, i):
            values = [run[i] for run in runs[kind]]
            return statistics.median(values), min(values)

        print(
            f"{n} OC20 images, set (a) {'with Jacobian' if derivatives else 'values only'}; cache pre-filled with "
            f"{2 * n} entries of two other parameter sets ({old_bytes / 1e9:.3f} GB); {args.repeats} repeats, "
            "median (min) s"
        )
        (u_med, u_min), (b_med, b_min) = stat("unbounded", 0), stat("bounded", 0)
        (bw_med, bw_min) = stat("bounded", 1)
        ev_med, _ = stat("bounded", 2)
        print(f"unbounded (max_gb=inf), featurize_many:     {u_med:.3f} ({u_min:.3f})")
        print(f"bounded ({limit_gb:.3f} GB), featurize_many:     {b_med:.3f} ({b_min:.3f})   "
              f"ratio {b_med / u_med:.3f} ({b_min / u_min:.3f})")
        print(f"bounded, until its eviction finished:      {bw_med:.3f} ({bw_min:.3f})   "
              f"ratio {bw_med / u_med:.3f} ({bw_min / u_min:.3f})")
        print(f"difference per entry written (returned):   {(b_med - u_med) / n * 1e6:+.0f} us ({(b_min - u_min) / n * 1e6:+.0f})")
        print(f"scans + eviction (background thread):      {ev_med:.3f} s = {ev_med / n * 1e6:.0f} us per entry "
              f"written; {statistics.median(run[3] for run in runs['bounded']):.0f} entries evicted, "
              f"{max(left) / 1e9:.3f} GB left at most")

        # Reads: the per-entry cost of marking an entry as used (os.utime) on a cache hit.
        warm = tmp / f"unbounded-{args.repeats - 1}"
        read_all(warm, images, params, derivatives)
        with_touch, without_touch = [], []
        real_utime = os.utime
        for r in range(3 * args.repeats):
            for kind in (("touch", "none") if r % 2 == 0 else ("none", "touch")):
                if kind == "none":
                    cache_module.os.utime = lambda *a, **k: None
                try:
                    elapsed = read_all(warm, images, params, derivatives)
                finally:
                    cache_module.os.utime = real_utime
                (with_touch if kind == "touch" else without_touch).append(elapsed)
        hit_t, hit_n = statistics.median(with_touch), statistics.median(without_touch)
        paths = [p for _, _, p in scan(warm).entries]
        t0 = time.perf_counter()
        for _ in range(args.repeats):
            for p in paths:
                os.utime(p)
        utime_us = (time.perf_counter() - t0) / (args.repeats * len(paths)) * 1e6
        scans = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            found = scan(warm)
            scans.append(time.perf_counter() - t0)
        scan_us = statistics.median(scans) / max(1, len(found.entries)) * 1e6
        print(f"\nhit with last-use update:          {hit_t / n * 1e6:.0f} us per entry (median; min {min(with_touch) / n * 1e6:.0f})")
        print(f"hit with os.utime a no-op:         {hit_n / n * 1e6:.0f} us per entry (median; min "
              f"{min(without_touch) / n * 1e6:.0f}); ratio {hit_t / hit_n:.3f} (medians), "
              f"{min(with_touch) / min(without_touch):.3f} (minima)")
        print(f"os.utime alone:                    {utime_us:.1f} us per entry")
        print(f"scan of the directory:             {scan_us:.1f} us per entry ({len(found.entries)} entries)")


if __name__ == "__main__":
    main()
