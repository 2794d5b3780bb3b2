"""Exhaustive GMP + SingleNN grid on a fixed OC20 subset: the table behind the ``oc20_gmp`` benchmark.

Every configuration of a small full-factorial grid (:data:`AXES`) is trained with mfbo's built-in trainer
through :class:`mfbo.objectives.BuiltinObjective` -- the path a ``backend = "builtin"`` study takes -- at
every level of a fixed data-fraction ladder (nested subsets, one fixed validation set), for the maximum
number of epochs. After every epoch the validation metrics are recorded, and so are the CPU and wall
seconds of featurisation, of the rest of the set-up and of every epoch, so the cost of a run truncated at
any epoch count is known. The result is ``table.json`` here, which
:class:`mfbo.optimize.problems.TabularProblem` replays (``get_problem("oc20_gmp")``).

Data (the recipe of a study's ``[data] subsample = 160, val_fraction = 0.2, seed = 0``): 160 images drawn
from the bundled 569-image OC20 pool with seed 0, split into 128 training and 32 validation images with
seed 1. Data-fraction ladder 0.125 / 0.25 / 0.5 / 1 = 16 / 32 / 64 / 128 training images.

Featurisation cost: fingerprints of one GMP setting are computed once (cold, no disk cache) in the nested
order of the ladder -- the validation set, then each fraction's new training images -- and each chunk's
seconds are recorded; the featurisation cost of a run at fraction ``f`` is the validation chunk plus the
chunks up to ``f``: what a run pays on a cold fingerprint cache. The runs themselves then reuse the
fingerprints (in-process memo), so their measured set-up time is the rest of the set-up (packing,
scalers).

Resumable: every finished run (and every featurisation measurement) is appended to ``runs.jsonl`` as it
completes; a rerun skips what is there, then (re)writes ``table.json`` and prints the best configuration.

Run (about half an hour of CPU on one core)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python analysis/benchmarks/oc20_gmp/exhaustive.py

Options: ``--measure`` times one configuration's ladder and the featurisation of the heaviest GMP
setting, then exits (used to size the grid); ``--table-only`` rebuilds ``table.json`` from ``runs.jsonl``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FORMAT = "mfbo-tabular-1"

# -- the experiment -------------------------------------------------------------------------------
N_IMAGES = 160  # drawn from the 569-image pool
VAL_FRACTION = 0.2  # 32 validation images, 128 training images
DATA_SEED = 0  # seed of the subsample; the train/validation split uses DATA_SEED + 1 (as a study does)
FRACTIONS = (0.125, 0.25, 0.5, 1.0)
MAX_EPOCHS = 20
BASE_CONFIG = {  # every field not on a grid axis; the trainer's defaults otherwise
    "epochs": MAX_EPOCHS,
    "batch_size": 16,
    "seed": 1,  # initialisation, shuffling and the nested-subset permutation
    "num_threads": 1,
}
GMP_FIXED = {"sigma_min": 0.25, "sigma_max": 2.0, "sigma_spacing": "log", "cutoff": 6.0}
# Grid axes, in order. Each value is a trainer hyperparameter (mfbo.training.config_from_hyperparameters).
AXES = {
    "mcsh_order": [0, 1, 2],
    "n_sigmas": [3, 4, 5],
    "num_nodes": [8, 32],
    "lr": [0.001, 0.003, 0.01],
    "force_coefficient": [0.01, 0.1, 1.0],
}
GMP_AXES = ("mcsh_order", "n_sigmas")  # axes that change the fingerprints
METRICS = ("val_energy_mae_per_atom", "val_energy_mae", "val_force_mae", "val_force_mae_free")
# The objective oc20_gmp minimises by default: energy MAE (eV/atom) + free-atom force MAE (eV/A).
DEFAULT_METRIC = {"val_energy_mae_per_atom": 1.0, "val_force_mae_free": 1.0}


def _limit_threads() -> None:
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import torch

    torch.set_num_threads(1)


def load_split():
    """(training pool of 128, validation set of 32): the recipe of mfbo.study's prepare_data."""
    import numpy as np

    from mfbo.datasets import OC20_TRAIN_POOL
    from mfbo.training import load_images

    images = load_images(OC20_TRAIN_POOL, require_forces=True)
    idx = np.random.default_rng(DATA_SEED).permutation(len(images))[:N_IMAGES]
    images = [images[i] for i in sorted(idx)]
    perm = np.random.default_rng(DATA_SEED + 1).permutation(len(images))
    n_val = max(1, int(round(VAL_FRACTION * len(images))))
    val = [images[i] for i in sorted(perm[:n_val])]
    train = [images[i] for i in sorted(perm[n_val:])]
    return train, val


def grid() -> list[dict]:
    """Every configuration, GMP settings outermost (so each setting is featurised once)."""
    names = list(AXES)
    return [dict(zip(names, values)) for values in itertools.product(*AXES.values())]


def hyperparameters(config: dict) -> dict:
    return {**GMP_FIXED, **config}


def gmp_key(config: dict) -> str:
    return json.dumps({k: config[k] for k in GMP_AXES}, sort_keys=True)


def run_key(config: dict, fraction: float) -> str:
    return json.dumps({"config": config, "fraction": fraction}, sort_keys=True)


def _round(x: float, digits: int = 6) -> float:
    return float(f"{x:.{digits}g}")


def measure_featurization(objective, config: dict) -> dict:
    """Cold featurisation seconds of the validation set and of each fraction's new training images;
    fills the objective's in-process fingerprint memo on the way."""
    import mfbo.training._train as train_module
    from mfbo.training._data import nested_subset
    from mfbo.training._featurize import gmp_params_of

    train_module._warm_up()
    train, val = objective.datasets()
    cfg = objective.config(hyperparameters(config))
    params = gmp_params_of(cfg)
    cache = objective.fingerprint_cache()
    chunks = {}

    def timed(images):
        w, c = time.perf_counter(), time.process_time()
        cache.featurize_many(images, params, derivatives=True)
        return time.process_time() - c, time.perf_counter() - w

    chunks["val"] = timed(val)
    seen: set[int] = set()
    for f in FRACTIONS:
        subset = nested_subset(train, f, cfg.seed)
        new = [a for a in subset if id(a) not in seen]
        seen.update(id(a) for a in subset)
        chunks[str(f)] = timed(new)
    return {"kind": "featurize", "gmp": gmp_key(config), "n_features": params.n_features,
            "chunks_cpu_s": {k: _round(v[0]) for k, v in chunks.items()},
            "chunks_wall_s": {k: _round(v[1]) for k, v in chunks.items()}}


def train_run(objective, config: dict, fraction: float) -> dict:
    from mfbo.errors import TrainingDiverged

    w, c = time.perf_counter(), time.process_time()
    record: dict = {"kind": "run", "config": config, "fraction": fraction}
    try:
        out = objective.evaluate(hyperparameters(config), fraction, MAX_EPOCHS)
        records, timings = out["records"], out["metadata"]["timings"]
        record["n_train"] = out["metadata"]["n_train"]
    except TrainingDiverged as exc:  # recorded: the curve ends where training blew up
        records, timings = [], {}
        record["diverged_at"] = exc.epoch
    record["curves"] = {m: [_round(r[m]) for r in records] for m in METRICS}
    record["epoch_cpu_s"] = [_round(r["epoch_cpu_time"]) for r in records]
    record["epoch_wall_s"] = [_round(r["epoch_time"]) for r in records]
    # Set-up besides featurisation (the fingerprints come from the memo here; featurisation is
    # charged from the cold measurement).
    record["setup_cpu_s"] = _round(max(timings.get("setup_cpu", 0.0) - timings.get("featurize_cpu", 0.0), 0.0))
    record["setup_wall_s"] = _round(max(timings.get("setup", 0.0) - timings.get("featurize", 0.0), 0.0))
    record["total_cpu_s"] = _round(time.process_time() - c)
    record["total_wall_s"] = _round(time.perf_counter() - w)
    return record


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill: that run is redone
            continue
    return out


def environment() -> dict:
    import ase
    import numpy
    import torch

    import mfbo

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "mfbo": mfbo.__version__, "torch": torch.__version__,
            "numpy": numpy.__version__, "ase": ase.__version__, "platform": platform.platform(),
            "cpu": cpu, "n_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def build_table(entries: list[dict], out: Path) -> dict:
    """Assemble table.json from the JSONL entries (the last entry of a run key wins)."""
    import numpy as np

    feats = {e["gmp"]: e for e in entries if e.get("kind") == "featurize"}
    runs = {}
    for e in entries:
        if e.get("kind") == "run":
            runs[run_key(e["config"], e["fraction"])] = e
    sessions = [e for e in entries if e.get("kind") == "session"]
    table_runs = []
    for config in grid():
        for f in FRACTIONS:
            key = run_key(config, f)
            if key not in runs:
                raise SystemExit(f"run {key} missing from the JSONL; run the script without --table-only")
            r = runs[key]
            fe = feats[gmp_key(config)]
            chunks = ["val"] + [str(g) for g in FRACTIONS if g <= f]
            entry = {"config": config, "fraction": f, "curves": r["curves"],
                     "featurize_s": {"cpu": _round(sum(fe["chunks_cpu_s"][k] for k in chunks)),
                                     "wall": _round(sum(fe["chunks_wall_s"][k] for k in chunks))},
                     "setup_s": {"cpu": r["setup_cpu_s"], "wall": r["setup_wall_s"]},
                     "epoch_s": {"cpu": r["epoch_cpu_s"], "wall": r["epoch_wall_s"]},
                     "n_features": fe["n_features"]}
            if "diverged_at" in r:
                entry["diverged_at"] = r["diverged_at"]
            table_runs.append(entry)
    train_s = {"cpu": sum(r.get("total_cpu_s", 0.0) for r in runs.values()),
               "wall": sum(r.get("total_wall_s", 0.0) for r in runs.values())}
    feat_s = {"cpu": sum(sum(f["chunks_cpu_s"].values()) for f in feats.values()),
              "wall": sum(sum(f["chunks_wall_s"].values()) for f in feats.values())}
    table = {
        "format": FORMAT,
        "name": "oc20_gmp",
        "description": ("GMP + SingleNN (mfbo built-in trainer) on 160 OC20 images (128 train / 32 validation), "
                        "full-factorial grid, every data fraction of the ladder trained for max_epochs."),
        "axes": [{"name": k, "values": v} for k, v in AXES.items()],
        "fractions": list(FRACTIONS),
        "max_epochs": MAX_EPOCHS,
        "metrics": list(METRICS),
        "metric_units": {"val_energy_mae_per_atom": "eV/atom", "val_energy_mae": "eV/image",
                         "val_force_mae": "eV/A", "val_force_mae_free": "eV/A"},
        "default_metric": DEFAULT_METRIC,
        "default_clock": "cpu",
        "cost_model": ("cost(t epochs) = featurize_s + setup_s + sum(epoch_s[:t]); featurize_s = cold "
                       "featurisation of the validation set and the nested training subset"),
        "fixed": {"base_config": BASE_CONFIG, "gmp": GMP_FIXED, "data": {
            "pool": "mfbo/datasets/train_pool.traj (569 OC20 S2EF images, CC-BY-4.0)",
            "n_images": N_IMAGES, "val_fraction": VAL_FRACTION, "seed": DATA_SEED,
            "recipe": "subsample with seed, split train/validation with seed + 1 (mfbo.study prepare_data)"}},
        "generator": "analysis/benchmarks/oc20_gmp/exhaustive.py",
        "environment": sessions[-1]["environment"] if sessions else environment(),
        "timing": {"runs_s": {k: _round(v) for k, v in train_s.items()},
                   "featurize_s": {k: _round(v) for k, v in feat_s.items()},
                   "sessions": [{k: s[k] for k in ("started", "wall_s", "cpu_s", "n_done")} for s in sessions]},
        "runs": table_runs,
    }
    out.write_text(json.dumps(table, separators=(",", ":")) + "\n")
    # The best configuration at target fidelity under the default metric.
    finals = []
    for r in table_runs:
        if r["fraction"] == 1.0:
            n = len(r["curves"][next(iter(DEFAULT_METRIC))])
            value = sum(w * r["curves"][m][-1] for m, w in DEFAULT_METRIC.items()) if n == MAX_EPOCHS else np.inf
            finals.append((value, r["config"]))
    finals.sort(key=lambda t: t[0])
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {len(table_runs)} runs)")
    print("best configurations at target fidelity (energy MAE/atom + free-atom force MAE):")
    for value, config in finals[:5]:
        print(f"  {value:.5f}  {config}")
    return table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jsonl", type=Path, default=HERE / "runs.jsonl", help="progress file (resumable)")
    ap.add_argument("--out", type=Path, default=HERE / "table.json", help="table to write")
    ap.add_argument("--measure", action="store_true", help="time the heaviest and lightest ladders, then exit")
    ap.add_argument("--table-only", action="store_true", help="rebuild the table from the JSONL and exit")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    _limit_threads()
    import warnings

    warnings.filterwarnings("ignore")
    from tqdm.auto import tqdm

    from mfbo.objectives import BuiltinObjective

    if args.table_only:
        build_table(read_jsonl(args.jsonl), args.out)
        return 0

    train, val = load_split()
    base = {**BASE_CONFIG}

    def new_objective():
        return BuiltinObjective(train, val, base_config=base, metric=DEFAULT_METRIC, cache_dir=False)

    if args.measure:
        configs = grid()
        for config in (configs[-1], configs[0]):
            obj = new_objective()
            fe = measure_featurization(obj, config)
            print("featurize", fe, flush=True)
            for f in FRACTIONS:
                r = train_run(obj, config, f)
                print(f"{config} f={f}: cpu {r['total_cpu_s']:.2f}s wall {r['total_wall_s']:.2f}s "
                      f"epoch cpu {sum(r['epoch_cpu_s']):.2f}s final "
                      f"{ {m: r['curves'][m][-1] for m in DEFAULT_METRIC} }", flush=True)
        return 0

    entries = read_jsonl(args.jsonl)
    done = {run_key(e["config"], e["fraction"]) for e in entries if e.get("kind") == "run"}
    featurized = {e["gmp"]: e for e in entries if e.get("kind") == "featurize"}
    todo = [(c, f) for c in grid() for f in FRACTIONS if run_key(c, f) not in done]
    total = len(grid()) * len(FRACTIONS)
    print(f"{total - len(todo)} of {total} runs already in {args.jsonl}; {len(todo)} to go", flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    session = {"kind": "session", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": environment(),
               "command": " ".join([sys.executable, *sys.argv])}
    n_done = 0
    with args.jsonl.open("a") as fh:
        obj, current = None, None
        bar = tqdm(todo, desc="oc20_gmp grid", unit="run", disable=args.no_progress, smoothing=0.05)
        for config, f in bar:
            key = gmp_key(config)
            if key != current:
                obj, current = new_objective(), key
                fe = measure_featurization(obj, config)  # always re-featurise: fills the memo
                if key not in featurized:
                    featurized[key] = fe
                    fh.write(json.dumps(fe) + "\n")
                    fh.flush()
            rec = train_run(obj, config, f)
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            n_done += 1
            bar.set_postfix(cpu=f"{time.process_time() - c0:.0f}s")
        if n_done:
            session.update(wall_s=_round(time.perf_counter() - t0), cpu_s=_round(time.process_time() - c0),
                           n_done=n_done)
            fh.write(json.dumps(session) + "\n")
    build_table(read_jsonl(args.jsonl), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
