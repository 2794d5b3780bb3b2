"""Record real GMP + SingleNN training runs on a space-filling design: the data behind the ``mlip_*`` problems.

Every configuration of a scrambled Sobol design over the hyperparameters a study searches (:data:`SPACE`:
force coefficient, network depth, width and activation, learning rate and schedule, batch size, and the GMP
fingerprint's sigma_min / sigma_max / n_sigmas / mcsh_order / cutoff) is trained with mfbo's built-in trainer
(:func:`mfbo.training.train`, its current defaults for everything else) at every data fraction of a ladder,
with several training seeds, for ``--epochs`` epochs. One run to the largest epoch count gives every shorter
epoch fidelity: the cosine schedule anneals over ``--epochs`` and the curve is recorded after every epoch.
The training seed sets the initialisation, the shuffling and the nested training subset.

Datasets (``--dataset``): ``si`` and ``mo`` are the mlearn official splits (``../shared/data/mlearn``; trained
on ``<El>_training.extxyz``, the recorded curves are the errors on ``<El>_test.extxyz`` after every epoch);
``oc20`` trains on the bundled 569-image OC20 pool and measures on 60 images of the bundled test set (seed 0).

Recorded per run: the curves ``val_energy_mae_per_atom`` (eV/atom), ``val_energy_mae`` (eV/image),
``val_force_mae`` and ``val_force_mae_free`` (eV/Å) on the test split, the CPU and wall seconds of every epoch
and of the set-up besides featurisation; per configuration the cold featurisation seconds of the test split
and of the whole training pool (a run at fraction f is charged test + f x pool). A run that diverges records
its curve up to the last finite epoch and ``diverged_at``.

Resumable: every finished run is appended to ``<out>/<dataset>.progress.jsonl`` (under a file lock, so
parallel workers can append) and skipped by a rerun; a killed recording continues where it stopped. The
compact record ``<out>/<dataset>.json.gz`` (format ``mfbo-mlip-records-1``, read by
:mod:`mfbo.optimize.problems._replay`) is rewritten from the progress log after every configuration and
at the end, and is itself read back as resume state when the progress log is absent.

Run (what was recorded for the committed ``si.json.gz``; see ``docs/benchmarks.md``)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python analysis/benchmarks/mlip/record.py --dataset si \\
        --n-configs 64 --seeds 3 --epochs 10 --fractions 0.125 0.25 0.5 1

Full size (a bigger machine, one Dask worker per core)::

    python analysis/benchmarks/mlip/record.py --dataset si --n-configs 512 --seeds 5 --epochs 60 \\
        --fractions 0.0625 0.125 0.25 0.5 1 --workers 32

Options: ``--workers N`` trains on N single-threaded Dask workers (``distributed.LocalCluster``); ``--limit N``
stops after N new configurations; ``--compact-only`` rewrites the compact record from the progress log.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
FORMAT = "mfbo-mlip-records-1"

# The design space: what a study searches. log = sampled uniformly in log space; int = rounded.
SPACE: dict[str, dict] = {
    "force_coefficient": {"type": "float", "bounds": [0.01, 10.0], "scale": "log"},
    "num_layers": {"type": "int", "bounds": [1, 4]},
    "num_nodes": {"type": "int", "bounds": [8, 64], "scale": "log"},
    "activation": {"type": "categorical", "choices": ["tanh", "silu", "gelu", "softplus"]},
    "lr": {"type": "float", "bounds": [1e-4, 3e-2], "scale": "log"},
    "scheduler": {"type": "categorical", "choices": ["cosine", "none", "step"]},
    "batch_size": {"type": "int", "bounds": [8, 64], "scale": "log"},
    "sigma_min": {"type": "float", "bounds": [0.1, 0.5], "scale": "log"},
    "sigma_max": {"type": "float", "bounds": [1.0, 4.0], "scale": "log"},
    "n_sigmas": {"type": "int", "bounds": [2, 8]},
    "mcsh_order": {"type": "int", "bounds": [0, 3]},
    "cutoff": {"type": "float", "bounds": [4.0, 8.0]},
}
METRICS = ("val_energy_mae_per_atom", "val_energy_mae", "val_force_mae", "val_force_mae_free")
METRIC_UNITS = {"val_energy_mae_per_atom": "eV/atom", "val_energy_mae": "eV/image", "val_force_mae": "eV/A",
                "val_force_mae_free": "eV/A"}
DEFAULT_METRIC = {"val_energy_mae_per_atom": 1.0, "val_force_mae_free": 1.0}
MLEARN = REPO.parent / "shared" / "data" / "mlearn"
DATASETS = {
    "si": {"train": "Si_training.extxyz", "test": "Si_test.extxyz",
           "about": "mlearn Si official split (Zuo et al. 2020): 214 training structures, curves on the 25 test "
                    "structures"},
    "mo": {"train": "Mo_training.extxyz", "test": "Mo_test.extxyz",
           "about": "mlearn Mo official split (Zuo et al. 2020): 194 training structures, curves on the 23 test "
                    "structures"},
    "oc20": {"about": "bundled OC20 S2EF pool (569 images) for training, curves on 60 images of the bundled "
                      "test set (seed 0)"},
}
OC20_TEST_SUBSAMPLE = 60


def _limit_threads() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import torch

    torch.set_num_threads(1)


def _round(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def design(n: int, seed: int) -> list[dict]:
    """The first ``n`` points of a scrambled Sobol sequence (``seed``) mapped onto :data:`SPACE`.

    A longer design extends a shorter one with the same seed (the same prefix), so a recording can grow.
    """
    from scipy.stats import qmc

    m = max(1, math.ceil(math.log2(max(n, 1))))
    u = qmc.Sobol(d=len(SPACE), scramble=True, seed=seed).random_base2(m)[:n]
    configs = []
    for row in u:
        c = {}
        for x, (name, spec) in zip(row, SPACE.items()):
            if spec["type"] == "categorical":
                ch = spec["choices"]
                c[name] = ch[min(int(x * len(ch)), len(ch) - 1)]
                continue
            lo, hi = spec["bounds"]
            if spec["type"] == "int":  # equal-width bins over [lo - 0.5, hi + 0.5] (in log space if log)
                if spec.get("scale") == "log":
                    v = math.exp(math.log(lo - 0.5) + x * (math.log(hi + 0.5) - math.log(lo - 0.5)))
                else:
                    v = lo - 0.5 + x * (hi - lo + 1)
                c[name] = int(min(max(round(v), lo), hi))
            elif spec.get("scale") == "log":
                c[name] = _round(math.exp(math.log(lo) + x * (math.log(hi) - math.log(lo))))
            else:
                c[name] = _round(lo + x * (hi - lo))
        configs.append(c)
    return configs


def base_config(epochs: int) -> dict:
    """TrainConfig fields besides the design: the trainer's defaults, the run length and one thread."""
    return {"epochs": int(epochs), "num_threads": 1, "scheduler_step_size": max(1, int(epochs) // 3)}


def _resolved_base(epochs: int) -> dict:
    from mfbo.training import TrainConfig

    return TrainConfig.from_dict(base_config(epochs)).to_dict()


def load_dataset(name: str, files: tuple[str, str] | None = None) -> tuple[list, list]:
    """(training pool, test split) of a dataset, with forces; ``files`` = (train, test) paths override it."""
    import numpy as np

    from mfbo.training import load_images

    if files is not None:
        return load_images(files[0], require_forces=True), load_images(files[1], require_forces=True)
    if name == "oc20":
        from mfbo.datasets import OC20_TEST, OC20_TRAIN_POOL

        test = load_images(OC20_TEST, require_forces=True)
        idx = sorted(np.random.default_rng(0).permutation(len(test))[:OC20_TEST_SUBSAMPLE])
        return load_images(OC20_TRAIN_POOL, require_forces=True), [test[i] for i in idx]
    spec = DATASETS[name]
    for key in ("train", "test"):
        if not (MLEARN / spec[key]).is_file():
            raise SystemExit(f"record: {MLEARN / spec[key]} not found; the mlearn data live in ../shared/data/mlearn "
                             "beside the repository")
    return (load_images(MLEARN / spec["train"], require_forces=True),
            load_images(MLEARN / spec["test"], require_forces=True))


def run_key(index: int, seed: int, fraction: float) -> str:
    return f"{index}:{seed}:{fraction:g}"


# -- the work of one configuration (runs in a worker process) --------------------------------------------
_DATA: dict = {}


def record_config(dataset: str, index: int, config: dict, seeds: list[int], fractions: list[float], epochs: int,
                  progress_path: str, done: list[str], files: tuple[str, str] | None = None) -> int:
    """Train one configuration at every (seed, fraction) not in ``done``; append each run to the progress log.

    Returns the number of runs appended.
    """
    _limit_threads()
    import warnings

    warnings.filterwarnings("ignore")
    from mfbo.errors import TrainingDiverged
    from mfbo.objectives._builtin import _MemoCache
    from mfbo.training import TrainConfig, config_from_hyperparameters, train
    from mfbo.training._featurize import gmp_params_of
    from mfbo.training._train import _warm_up

    _warm_up()
    key = (dataset, files)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = load_dataset(dataset, files)
    pool, test = _DATA[key]
    cfg = config_from_hyperparameters(TrainConfig.from_dict(base_config(epochs)), config)
    params = gmp_params_of(cfg)
    memo = _MemoCache(None)

    def timed(images):
        w, c = time.perf_counter(), time.process_time()
        memo.featurize_many(images, params, derivatives=True)
        return _round(time.process_time() - c), _round(time.perf_counter() - w)

    feat = {"kind": "featurize", "index": index, "n_features": params.n_features}
    (feat["test_cpu_s"], feat["test_wall_s"]) = timed(test)
    (feat["pool_cpu_s"], feat["pool_wall_s"]) = timed(pool)
    if run_key(index, -1, 0) not in done:
        _append(progress_path, feat)
    n = 0
    for seed in seeds:
        for f in fractions:
            if run_key(index, seed, f) in done:
                continue
            w, c = time.perf_counter(), time.process_time()
            rec: dict = {"kind": "run", "index": index, "seed": seed, "fraction": f}
            try:
                res = train(cfg.replace(seed=seed), pool, test, data_fraction=f, epochs=epochs, cache=memo)
                curve, timings = res.curve, res.timings
                rec["n_train"] = res.n_train
            except TrainingDiverged as exc:
                curve, timings = [], {}  # the trainer keeps no curve of a diverged run
                rec["diverged_at"] = int(exc.epoch)
            rec["curves"] = {m: [_round(r[m]) for r in curve] for m in METRICS}
            rec["epoch_cpu_s"] = [_round(r["epoch_cpu_time"]) for r in curve]
            rec["epoch_wall_s"] = [_round(r["epoch_time"]) for r in curve]
            rec["setup_cpu_s"] = _round(max(timings.get("setup_cpu", 0.0) - timings.get("featurize_cpu", 0.0), 0.0))
            rec["setup_wall_s"] = _round(max(timings.get("setup", 0.0) - timings.get("featurize", 0.0), 0.0))
            rec["total_cpu_s"] = _round(time.process_time() - c)
            rec["total_wall_s"] = _round(time.perf_counter() - w)
            _append(progress_path, rec)
            n += 1
    return n


def _append(path: str, entry: dict) -> None:
    line = json.dumps(entry, separators=(",", ":")) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _drop_partial_line(path: Path) -> None:
    """Cut a line a kill left unfinished, so the next entry starts on a line of its own."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def read_progress(path: Path) -> list[dict]:
    """Entries of a progress log; a line cut short by a kill is ignored (that run is redone)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            if line.strip():
                out.append(json.loads(line))
    return out


def read_compact(path: Path) -> dict | None:
    if not path.is_file():
        return None
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def entries_of_compact(data: dict) -> list[dict]:
    """The progress-log entries a compact record holds (resume state when the log is absent)."""
    out = []
    for c in data["configs"]:
        out.append({"kind": "featurize", "index": c["index"], **c["featurize"]})
        for r in c["runs"]:
            out.append({"kind": "run", "index": c["index"], **r})
    return out


def environment() -> dict:
    import ase
    import numpy
    import torch

    import mfbo

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"python": platform.python_version(), "mfbo": mfbo.__version__, "torch": torch.__version__,
            "numpy": numpy.__version__, "ase": ase.__version__, "cpu": cpu, "n_cpus": os.cpu_count(),
            "torch_threads": 1}


def compact(dataset: str, entries: list[dict], meta: dict, out: Path) -> dict:
    """Write the compact record: one entry per configuration with its featurisation and runs (last wins)."""
    configs = design(meta["n_configs"], meta["design_seed"])
    feats, runs = {}, {}
    for e in entries:
        if e.get("kind") == "featurize":
            feats[e["index"]] = {k: v for k, v in e.items() if k not in ("kind", "index")}
        elif e.get("kind") == "run":
            runs[run_key(e["index"], e["seed"], e["fraction"])] = {k: v for k, v in e.items()
                                                                   if k not in ("kind", "index")}
    out_configs = []
    for i, c in enumerate(configs):
        rs = [runs[k] for s in meta["seeds"] for f in meta["fractions"] if (k := run_key(i, s, f)) in runs]
        if i in feats and rs:
            out_configs.append({"index": i, "config": c, "featurize": feats[i], "runs": rs})
    sessions = [e for e in entries if e.get("kind") == "session"]
    about = DATASETS[dataset]["about"] if not meta.get("files") else f"training {meta['files'][0]}, test {meta['files'][1]}"
    data = {"format": FORMAT, "name": f"mlip_{dataset}", "dataset": dataset, "about": about,
            "space": SPACE, "design": {"kind": "scrambled Sobol", "seed": meta["design_seed"],
                                       "n_configs": meta["n_configs"]},
            "fractions": meta["fractions"], "seeds": meta["seeds"], "max_epochs": meta["epochs"],
            "base_config": base_config(meta["epochs"]),
            # every TrainConfig field the runs had besides the design's: the trainer's defaults change
            # over time, so the record keeps them (as the code that writes the record resolves them)
            "train_config": _resolved_base(meta["epochs"]), "metrics": list(METRICS), "metric_units": METRIC_UNITS,
            "default_metric": DEFAULT_METRIC, "default_clock": "cpu",
            "cost_model": "cost(f, t) = featurize test + f x featurize pool + setup + sum(epoch_s[:t])",
            "generator": "analysis/benchmarks/mlip/record.py", "environment": meta.get("environment", {}),
            "sessions": [{k: s.get(k) for k in ("started", "wall_s", "cpu_s", "n_runs", "workers")}
                         for s in sessions],
            "configs": out_configs}
    tmp = out.with_name(out.name + ".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=9) as fh:
        json.dump(data, fh, separators=(",", ":"))
    os.replace(tmp, out)
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=sorted(DATASETS), required=True)
    ap.add_argument("--train", default=None, help="training pool file instead of the dataset's (with --test)")
    ap.add_argument("--test", default=None, help="test split file instead of the dataset's (with --train)")
    ap.add_argument("--n-configs", type=int, default=64, help="Sobol design size (a prefix of a longer design)")
    ap.add_argument("--design-seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=3, help="training seeds 1..N per cell")
    ap.add_argument("--epochs", type=int, default=10, help="epochs of every run (the largest epoch fidelity)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.125, 0.25, 0.5, 1.0])
    ap.add_argument("--workers", type=int, default=1, help="Dask LocalCluster workers (1: in this process)")
    ap.add_argument("--limit", type=int, default=None, help="stop after this many new configurations")
    ap.add_argument("--out", type=Path, default=HERE, help="folder of the progress log and the compact record")
    ap.add_argument("--compact-only", action="store_true", help="rewrite the compact record and exit")
    args = ap.parse_args(argv)
    if args.n_configs < 1 or args.seeds < 1 or args.epochs < 1 or args.workers < 1:
        ap.error("--n-configs, --seeds, --epochs and --workers must be positive")
    if not all(0 < f <= 1 for f in args.fractions):
        ap.error("--fractions must lie in (0, 1]")
    if (args.train is None) != (args.test is None):
        ap.error("--train and --test go together")
    files = (str(Path(args.train).resolve()), str(Path(args.test).resolve())) if args.train else None
    for f in files or ():
        if not Path(f).is_file():
            ap.error(f"{f} not found")
    _limit_threads()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / f"{args.dataset}.progress.jsonl"
    packed = args.out / f"{args.dataset}.json.gz"
    fractions = sorted(set(args.fractions))
    meta = {"n_configs": args.n_configs, "design_seed": args.design_seed, "seeds": list(range(1, args.seeds + 1)),
            "fractions": fractions, "epochs": args.epochs, "files": files}
    _drop_partial_line(log)
    entries = read_progress(log)
    if not entries and (old := read_compact(packed)) is not None:
        entries = entries_of_compact(old)
        entries += [{"kind": "session", **s} for s in old.get("sessions", [])]
    for e in entries:  # a recording may only grow: the run settings must not change under it
        if e.get("kind") == "settings":
            for k in ("design_seed", "epochs"):
                if e[k] != meta[k]:
                    raise SystemExit(f"record: {log} was recorded with {k}={e[k]}, not {meta[k]}; use another "
                                     "--out folder or the same setting")
    meta["environment"] = environment()
    if args.compact_only:
        compact(args.dataset, entries, meta, packed)
        print(f"wrote {packed}")
        return 0
    if not any(e.get("kind") == "settings" for e in entries):
        _append(str(log), {"kind": "settings", "design_seed": args.design_seed, "epochs": args.epochs})
    done = {run_key(e["index"], e["seed"], e["fraction"]) for e in entries if e.get("kind") == "run"}
    done |= {run_key(e["index"], -1, 0) for e in entries if e.get("kind") == "featurize"}
    configs = design(args.n_configs, args.design_seed)
    todo = []
    for i, c in enumerate(configs):
        missing = [run_key(i, s, f) for s in meta["seeds"] for f in fractions if run_key(i, s, f) not in done]
        if missing:
            todo.append((i, c))
    if args.limit is not None:
        todo = todo[: args.limit]
    n_runs = len(configs) * len(meta["seeds"]) * len(fractions)
    n_done = sum(1 for k in done if not k.endswith(":-1:0"))
    print(f"record {args.dataset}: {n_done} of {n_runs} runs "
          f"in {log.name}; {len(todo)} configurations to go", flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    n_new = 0
    done_list = sorted(done)

    def finished(k: int, i: int) -> None:
        entries_now = read_progress(log)
        compact(args.dataset, entries_now, meta, packed)
        print(f"  [{k}/{len(todo)}] configuration {i} done; {time.perf_counter() - t0:.0f} s", flush=True)

    if args.workers == 1:
        for k, (i, c) in enumerate(todo, 1):
            n_new += record_config(args.dataset, i, c, meta["seeds"], fractions, args.epochs, str(log), done_list,
                                   files)
            finished(k, i)
    else:
        from distributed import Client, LocalCluster, as_completed

        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            futs = {client.submit(record_config, args.dataset, i, c, meta["seeds"], fractions, args.epochs,
                                  str(log), done_list, files, pure=False): i for i, c in todo}
            for k, fut in enumerate(as_completed(futs), 1):
                n_new += fut.result()
                finished(k, futs[fut])
    session = {"kind": "session", "started": started, "wall_s": _round(time.perf_counter() - t0),
               "cpu_s": _round(time.process_time() - c0), "n_runs": n_new, "workers": args.workers}
    _append(str(log), session)
    compact(args.dataset, read_progress(log), meta, packed)
    print(f"recorded {n_new} runs in {session['wall_s']:.0f} s; wrote {packed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
