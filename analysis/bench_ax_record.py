"""Saving a study's Ax record: whole after every change against trial by trial.

    .venv/bin/python analysis/bench_ax_record.py [--trials 40] [--epochs 30]

The worst case of a study's Ax record: saved after every change (a trial submitted, a trial finished; a
study's driver saves it at most every 5 min and at the end). This replays that sequence for ``--trials``
trials of a 12-parameter space with ``--epochs``-point learning curves, into two fresh SQLite study
stores in this process, one per mode: ``StudyStore.save_experiment(experiment)`` every time (the whole
record), and with the state the previous call returned (only the trials that finished since, each once).
It prints the seconds per save of each, their ratio, the seconds of the last ten saves (the whole record
grows with the trial count) and checks that both stores load back the same trials and final values.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path


def _space():
    from mfbo.optimize import SearchSpace

    params = {f"x{k}": {"type": "float", "bounds": [0.0, 1.0]} for k in range(10)}
    params["activation"] = {"type": "categorical", "choices": ["tanh", "silu", "gelu", "softplus"]}
    params["num_layers"] = {"type": "int", "bounds": [1, 4]}
    params["data_fraction"] = {"type": "fidelity", "bounds": [0.1, 1.0], "target": 1.0}
    params["epochs"] = {"type": "fidelity", "bounds": [1, 30], "target": 30}
    return SearchSpace.from_dict(params)


def replay(store_dir: Path, n_trials: int, n_epochs: int, incremental: bool, seed: int = 0) -> dict:
    """Seconds of every save while ``n_trials`` trials are submitted and completed one after another."""
    import numpy as np

    from mfbo.optimize._ax_record import AxRecord
    from mfbo.study._storage import StudyStore

    rng = np.random.default_rng(seed)
    store = StudyStore(f"sqlite:///{store_dir / 'study.db'}", "bench")
    record = AxRecord(_space(), name=f"bench-{'incremental' if incremental else 'whole'}")
    saved = None
    seconds = []

    def save():
        nonlocal saved
        t0 = time.perf_counter()
        state = store.save_experiment(record.experiment, saved if incremental else None)
        seconds.append(time.perf_counter() - t0)
        saved = state

    finals = []
    for i in range(n_trials):
        params = {f"x{k}": float(rng.random()) for k in range(10)}
        params.update(activation=str(rng.choice(["tanh", "silu", "gelu", "softplus"])), num_layers=int(rng.integers(1, 5)))
        epochs = int(rng.integers(1, n_epochs + 1))
        record.new_trial(i, params, float(rng.uniform(0.1, 1.0)), epochs, "bench")
        save()
        curve = list(np.exp(-np.arange(1, epochs + 1) / 10.0) + rng.random())
        record.complete(i, curve, cost=1.0, metadata={"effort": "full"})
        finals.append(curve[-1])
        save()
    loaded = store.load_experiment(record.experiment.name)
    df = loaded.lookup_data().df.sort_values(["trial_index", "step"])
    stored_finals = df.groupby("trial_index")["mean"].last().tolist()
    ok = (sum(t.status.is_completed for t in loaded.trials.values()) == n_trials
          and np.allclose(stored_finals, finals, rtol=1e-8))
    store.close()
    return {"seconds": seconds, "loaded_back": bool(ok)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for incremental in (False, True):
            d = Path(tmp) / ("incremental" if incremental else "whole")
            d.mkdir()
            out[incremental] = replay(d, args.trials, args.epochs, incremental)
    for incremental, name in ((False, "whole record"), (True, "trial by trial")):
        s = out[incremental]["seconds"]
        print(f"{name}: {len(s)} saves, {sum(s) / len(s):.3f} s per save, last ten {sum(s[-10:]) / 10:.3f} s per "
              f"save, {sum(s):.1f} s in all; loaded back the same trials and final values: "
              f"{out[incremental]['loaded_back']}")
    whole, incr = (sum(out[m]["seconds"]) for m in (False, True))
    print(f"trial by trial / whole record: {incr / whole:.3f}x the seconds ({whole / incr:.1f}x faster)")
    return 0 if all(o["loaded_back"] for o in out.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
