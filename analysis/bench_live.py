"""Live end-to-end comparison: an mfbo study against an AmpOpt-style Optuna study at equal wall time.

For each dataset and seed, two searches run one after the other on this machine, each with one worker
and the same wall time ``W`` (s):

* **mfbo**: ``mfbo init TRAIN --test TEST --out S.toml --wall-time W --workers 1 --seed SEED`` then
  ``mfbo run S.toml --no-progress`` (the real CLI in subprocesses). Its clock starts when ``mfbo init``
  starts, so the probe training and the final retraining count against ``W``.
* **optuna**: AmpOpt-style, as Optuna's documentation configures it: ``TPESampler(seed=SEED)`` with a
  ``HyperbandPruner(min_resource=1, max_resource=E, reduction_factor=3)`` on epochs. Every trial trains
  on the whole training split for the target ``E`` epochs with :func:`mfbo.training.train` and reports
  each epoch's validation objective (``trial.report``, from train's ``on_epoch`` callback); when
  ``trial.should_prune()`` fires the trial stops there. It searches the mfbo study's own search space
  (same parameters, ranges, constraints; no prior), optimises the same objective (the study's metric)
  on the same split (the study's ``data/{train,val}.traj``) with the same base TrainConfig, and stops at
  ``W`` (a trial running then is cut and discarded). Its fingerprint cache starts empty.

Checkpoints at 1/4, 1/2, 3/4 and 1 of ``W``: each method's recommendation at that time is trained at full
fidelity and tested on TEST (energy MAE per atom, force MAE per component; outside the timed budget):

* mfbo before the end: the study's optimiser rebuilt from the trials that had finished by then
  (``recommend()``, the rule ``mfbo best`` hands over), retrained with the study's objective
  (``fit`` at target fidelity, as the study's final run does); at the end: ``mfbo best --json`` (the
  study's own retraining and test), placed at the time the study actually finished.
* optuna: the best complete trial so far by validation objective (Optuna's ``best_trial``); a complete
  trial is the full-fidelity training of its configuration with the trainer's fixed seed, so its model
  is tested as it is. Before any trial completes, the pruned trial that reached the most epochs (lowest
  value among them) is retrained at full fidelity.

The test *score* is ``mean(E_MAE/atom / linear-fit E_MAE/atom, F_MAE / zero-force F_MAE)`` on the test
set (1 = no better than the trivial baselines): the study's objective, measured on test data.

Usage::

    OMP_NUM_THREADS=1 python analysis/bench_live.py [--datasets si oc20] [--seeds 0 1 2]
        [--wall-time 300] [--out analysis/live_results] [--report-only]

Writes ``OUT/results.json`` (finished (dataset, seed, method) cells are kept and not rerun; delete one
to redo it), ``OUT/live_<dataset>.png`` and prints the tables: medians over seeds at each checkpoint,
the ratio mfbo/optuna of the medians, and the fraction of ``W`` at which mfbo's test error first was at
most optuna's final test error (checkpoint resolution, per seed; ``-`` = not within ``W``), then the
per-seed errors as a markdown table. Study
folders go to ``OUT/work`` (not committed); a finished cell's fingerprint caches are removed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FRACTIONS = (0.25, 0.5, 0.75, 1.0)
METHODS = ("mfbo", "optuna")
# Zuo et al., J. Phys. Chem. A 124, 731 (2020), NNP on the mlearn Si test split: (meV/atom, eV/Å).
PUBLISHED_NNP = {"si": (5.63, 0.109)}


def datasets() -> dict[str, tuple[Path, Path]]:
    from mfbo.datasets import OC20_TEST, OC20_TRAIN_POOL, SI_TEST, SI_TRAIN

    return {"si": (SI_TRAIN, SI_TEST), "oc20": (OC20_TRAIN_POOL, OC20_TEST)}


# ----------------------------------------------------------------------------------------- helpers
def _cli(*args, cwd: Path, log: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    with open(log, "a") as fh:
        fh.write(f"$ mfbo {' '.join(map(str, args))}\n")
        fh.flush()
        proc = subprocess.run([sys.executable, "-m", "mfbo.cli", *map(str, args)], cwd=cwd, env=full_env,
                              stdout=subprocess.PIPE, stderr=fh, text=True)
        fh.write(proc.stdout)
    if proc.returncode:
        raise SystemExit(f"mfbo {args[0]} failed (exit {proc.returncode}); see {log}")
    return proc


def _score(metrics: dict, baselines: dict) -> float:
    """Test score: mean of energy and force MAE over their trivial baselines (dimensionless)."""
    terms = [metrics["energy_mae_per_atom"] / baselines["linear_fit"]["energy_mae_per_atom"]]
    if metrics.get("force_mae") is not None and baselines["zero_forces"]["force_mae"]:
        terms.append(metrics["force_mae"] / baselines["zero_forces"]["force_mae"])
    return float(sum(terms) / len(terms))


def _plain_metrics(metrics: dict) -> dict:
    return {k: (float(v) if isinstance(v, float) else v) for k, v in metrics.items()}


def _study_objective(study_dir: Path, cache_dir: Path):
    """(study config, objective, space, constraints, data paths, target fidelities) of an mfbo study."""
    from mfbo.study import Study
    from mfbo.study._setup import build_objective, build_space

    study = Study.load(study_dir, readonly=True)
    data = {k: str(study_dir / "data" / f"{k}.traj") for k in ("train", "val", "test")}
    objective = build_objective(study.config, data)
    objective.cache_dir = str(cache_dir)
    space, prior, constraints = build_space(study.config, objective)
    return study, objective, space, prior, constraints, data


def _targets(space) -> tuple[float, int]:
    """(data fraction, epochs) at target fidelity."""
    targets = space.target_fidelities()
    df = targets[space.data_fidelity.name] if space.data_fidelity is not None else 1.0
    ep = targets[space.iteration_fidelity.name]
    return float(df), int(ep)


# ------------------------------------------------------------------------------------------ mfbo
def run_mfbo(train: Path, test: Path, seed: int, wall_time: float, work: Path, log: Path) -> dict:
    """One mfbo cell: init + run through the CLI, then its recommendation at each checkpoint, tested."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    env = {"MFBO_CACHE_DIR": str(work / "cache")}  # an empty fingerprint cache, as the optuna side gets
    t0 = time.time()
    plan = json.loads(_cli("init", train, "--test", test, "--out", work / "study.toml", "--wall-time",
                           int(wall_time), "--workers", 1, "--seed", seed, "--json", cwd=work, log=log,
                           env=env).stdout)
    t_run = time.time()
    _cli("run", work / "study.toml", "--no-progress", cwd=work, log=log, env=env)
    t_end = time.time()
    study_dir = work / "runs" / plan["name"]
    best = json.loads(_cli("best", study_dir, "--json", cwd=work, log=log, env=env).stdout)
    finished = _finished_s(best, t_run - t0, t_end - t0)
    checkpoints = mfbo_checkpoints(study_dir, t0, wall_time, best, finished, work / "retrain-cache")
    study, *_ = _study_objective(study_dir, work / "retrain-cache")
    rows = study.trial_rows()
    return {
        "study_dir": str(study_dir), "seed": seed, "wall_time_s": wall_time, "elapsed_s": finished,
        "init_s": t_run - t0, "plan": {k: plan[k] for k in ("target_epochs", "budget_ffe", "search_wall_time",
                                                             "full_training_s", "n_pool", "n_test")},
        "trials": _trial_counts([r["status"] for r in rows]),
        "test_baselines": best.get("test_baselines"), "checkpoints": checkpoints,
    }


def _finished_s(best: dict, init_s: float, returned_s: float) -> float:
    """Seconds from ``mfbo init``'s start to the study's end: the init plus the study's own wall clock
    (``best.json``), or when ``mfbo run`` returned if that was earlier or the clock is missing (a
    process that kept the command's output open would otherwise delay the return past the study's end)."""
    wall = (best.get("study") or {}).get("wall_time_s")
    return min(returned_s, init_s + float(wall)) if wall is not None else returned_s


def _trial_counts(states: list[str]) -> dict:
    return {s: states.count(s) for s in sorted(set(states))}


def mfbo_checkpoints(study_dir: Path, t0: float, wall_time: float, best: dict, elapsed: float,
                     cache_dir: Path) -> list[dict]:
    """The study's recommendation at each checkpoint (trials finished by then), retrained and tested."""
    from mfbo.study._study import _replay

    study, objective, space, prior, constraints, data = _study_objective(study_dir, cache_dir)
    df, ep = _targets(space)
    rows = sorted(study.trial_rows(), key=lambda r: r["trial_id"])
    out, tested = [], {}
    for frac in FRACTIONS:
        if frac == 1.0:
            out.append({"fraction": 1.0, "time_s": elapsed, "params": best["params"], "source": "mfbo best",
                        "test_metrics": _plain_metrics(best["test_metrics"])})
            continue
        cutoff = t0 + frac * wall_time
        done = [r for r in rows if r["status"] != "running" and r["finished_at"] is not None
                and r["finished_at"] <= cutoff]
        entry = {"fraction": frac, "time_s": frac * wall_time, "params": None, "source": None,
                 "test_metrics": None, "n_finished_trials": len(done)}
        if any(r["status"] == "completed" for r in done):
            from mfbo.study._setup import build_optimizer

            opt = build_optimizer(study.config, space, prior, constraints)
            _replay(opt, done)
            params = opt.recommend()
            key = json.dumps(params, sort_keys=True, default=str)
            if key not in tested:
                result = objective.fit(params, df, ep, test=data["test"])
                tested[key] = _plain_metrics(result.test_metrics)
            entry.update(params=params, source="study optimiser, trials finished by then",
                         test_metrics=tested[key])
        out.append(entry)
    return out


# ---------------------------------------------------------------------------------------- optuna
class _Deadline(Exception):
    """The wall time ran out during a trial."""


def run_optuna(study_dir: Path, seed: int, wall_time: float, work: Path, test_baselines: dict) -> dict:
    """One AmpOpt-style cell on the mfbo study's split, space and objective, for ``wall_time`` s."""
    import optuna

    from mfbo.errors import MfboError
    from mfbo.objectives._record import metric_curve
    from mfbo.optimize.baselines._common import feasible
    from mfbo.optimize.baselines._optuna_tpe_hb import _suggest  # the replay peer's search-space mapping
    from mfbo.training._train import evaluate_model

    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    t0 = time.time()
    deadline = t0 + wall_time
    study_cfg, objective, space, _prior, constraints, data = _study_objective(study_dir, work / "cache")
    metric = study_cfg.config.metric
    df, ep = _targets(space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed)
    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=ep, reduction_factor=3)
    # A fixed name: the HyperbandPruner assigns brackets by hashing it.
    study = optuna.create_study(study_name=f"bench-live-seed{seed}", direction="minimize", sampler=sampler,
                                pruner=pruner)
    trials: list[dict] = []
    models: dict[int, object] = {}  # trial number -> model, kept for complete trials that were best
    best_value = math.inf
    while time.time() < deadline:
        trial = study.ask()
        cfg = _suggest(trial, space)
        if constraints and not feasible(cfg, constraints):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            trials.append({"number": trial.number, "state": "infeasible", "t": time.time() - t0})
            continue
        values: list[float] = []

        def on_epoch(record, trial=trial, values=values):
            values.append(metric_curve([record], metric)[0])
            if time.time() >= deadline:
                raise _Deadline
            trial.report(values[-1], record["epoch"])
            if record["epoch"] < ep and trial.should_prune():
                raise optuna.TrialPruned

        entry = {"number": trial.number, "params": cfg}
        try:
            result = objective.fit(cfg, df, ep, test=False, on_epoch=on_epoch)
        except optuna.TrialPruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            entry.update(state="pruned", epochs=len(values), value=values[-1])
        except _Deadline:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            entry.update(state="cut at the deadline", epochs=len(values))
        except MfboError as exc:  # a diverged or failed training
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            entry.update(state="failed", epochs=len(values), error=str(exc).splitlines()[0])
        else:
            value = metric_curve(result.curve, metric)[-1]
            study.tell(trial, value)
            entry.update(state="complete", epochs=ep, value=value)
            if value < best_value:
                best_value = value
                models[trial.number] = result.model
        entry["t"] = time.time() - t0
        trials.append(entry)
    elapsed = time.time() - t0

    checkpoints, tested = [], {}
    for frac in FRACTIONS:
        cutoff = frac * wall_time
        seen = [t for t in trials if t["t"] <= cutoff]
        complete = [t for t in seen if t["state"] == "complete"]
        pruned = [t for t in seen if t["state"] == "pruned"]
        entry = {"fraction": frac, "time_s": cutoff, "params": None, "source": None, "test_metrics": None,
                 "n_finished_trials": len(seen)}
        if complete:
            pick = min(complete, key=lambda t: t["value"])
            if pick["number"] not in tested:
                model = models[pick["number"]]
                tested[pick["number"]] = _plain_metrics(
                    evaluate_model(model, data["test"], forces=model.config.get_forces,
                                   cache=objective.fingerprint_cache()))
            entry.update(params=pick["params"], source=f"best complete trial {pick['number']}",
                         test_metrics=tested[pick["number"]])
        elif pruned:
            pick = min(pruned, key=lambda t: (-t["epochs"], t["value"]))
            if pick["number"] not in tested:
                tested[pick["number"]] = _plain_metrics(objective.fit(pick["params"], df, ep,
                                                                      test=data["test"]).test_metrics)
            entry.update(params=pick["params"], source=f"pruned trial {pick['number']} retrained",
                         test_metrics=tested[pick["number"]])
        checkpoints.append(entry)
    return {"study_dir": str(study_dir), "seed": seed, "wall_time_s": wall_time, "elapsed_s": elapsed,
            "target_epochs": ep, "trials": _trial_counts([t["state"] for t in trials]),
            "trial_log": trials, "test_baselines": test_baselines, "checkpoints": checkpoints}


# --------------------------------------------------------------------------------------- reports
def _error(cp: dict, key: str, baselines: dict) -> float:
    """meV/atom (energy), eV/Å (force) or the dimensionless score of a checkpoint; NaN without one."""
    m = cp.get("test_metrics")
    if not m:
        return math.nan
    if key == "energy":
        return m["energy_mae_per_atom"] * 1e3
    if key == "force":
        return m["force_mae"] if m.get("force_mae") is not None else math.nan
    return _score(m, baselines)


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def summarise(entry: dict) -> dict:
    """Medians over seeds per checkpoint, ratios mfbo/optuna, and mfbo's time to optuna's final error."""
    seeds = sorted(k for k, v in entry.items() if isinstance(v, dict) and all(m in v for m in METHODS))
    out = {"seeds": seeds, "checkpoints": [], "time_to_optuna_final": {}}
    if not seeds:
        return out
    for i, frac in enumerate(FRACTIONS):
        row = {"fraction": frac}
        for key in ("energy", "force", "score"):
            for method in METHODS:
                row[f"{method}_{key}"] = [_error(entry[s][method]["checkpoints"][i], key,
                                                 entry[s]["mfbo"]["test_baselines"]) for s in seeds]
            mf, op = _median(row[f"mfbo_{key}"]), _median(row[f"optuna_{key}"])
            row[f"ratio_{key}"] = mf / op if op and not math.isnan(op) else math.nan
        out["checkpoints"].append(row)
    for key in ("energy", "force", "score"):
        per_seed = []
        for s in seeds:
            base = entry[s]["mfbo"]["test_baselines"]
            target = _error(entry[s]["optuna"]["checkpoints"][-1], key, base)
            hit = None
            for cp in entry[s]["mfbo"]["checkpoints"]:
                value = _error(cp, key, base)
                if not math.isnan(value) and not math.isnan(target) and value <= target:
                    hit = cp["fraction"]
                    break
            per_seed.append(hit)
        out["time_to_optuna_final"][key] = per_seed
    return out


def table(name: str, summary: dict) -> str:
    if not summary["seeds"]:
        return f"{name}: no finished seed"
    head = (f"{name}: medians over seeds {', '.join(summary['seeds'])}\n"
            f"{'t/W':>5} {'E mfbo':>8} {'E optuna':>9} {'ratio':>6} {'F mfbo':>7} {'F optuna':>9} {'ratio':>6} "
            f"{'S mfbo':>7} {'S optuna':>9} {'ratio':>6}")
    lines = [head, "-" * len(head.splitlines()[-1])]
    for row in summary["checkpoints"]:
        lines.append(
            f"{row['fraction']:5.2f} {_median(row['mfbo_energy']):8.2f} {_median(row['optuna_energy']):9.2f} "
            f"{row['ratio_energy']:6.2f} {_median(row['mfbo_force']):7.3f} {_median(row['optuna_force']):9.3f} "
            f"{row['ratio_force']:6.2f} {_median(row['mfbo_score']):7.3f} {_median(row['optuna_score']):9.3f} "
            f"{row['ratio_score']:6.2f}")
    lines.append("E: test energy MAE (meV/atom); F: test force MAE (eV/Å); S: test score (mean of E and F over "
                 "their trivial baselines); ratio: mfbo/optuna of the medians")
    for key, hits in summary["time_to_optuna_final"].items():
        shown = ", ".join("-" if h is None else f"{h:g}" for h in hits)
        lines.append(f"time (fraction of W) mfbo needs to reach optuna's final {key} error, per seed: {shown}")
    return "\n".join(lines)


def markdown(name: str, entry: dict, summary: dict) -> str:
    """Per-seed and median test errors at each checkpoint as a markdown table (E / F / score)."""
    seeds = summary["seeds"]
    pretty = {"mfbo": "mfbo", "optuna": "Optuna"}
    head = "| seed | method | " + " | ".join(f"{f:g} W" for f in FRACTIONS) + " |"
    lines = [head, "|---|---|" + "---|" * len(FRACTIONS)]
    for s in seeds:
        base = entry[s]["mfbo"]["test_baselines"]
        for method in METHODS:
            cells = [" / ".join(f"{_error(cp, key, base):{fmt}}" for key, fmt in
                                (("energy", ".2f"), ("force", ".3f"), ("score", ".3f")))
                     for cp in entry[s][method]["checkpoints"]]
            lines.append(f"| {s} | {pretty[method]} | " + " | ".join(cells) + " |")
    for method in METHODS:
        cells = [" / ".join(f"{_median(row[f'{method}_{key}']):{fmt}}" for key, fmt in
                            (("energy", ".2f"), ("force", ".3f"), ("score", ".3f")))
                 for row in summary["checkpoints"]]
        lines.append(f"| median | {pretty[method]} | " + " | ".join(cells) + " |")
    cells = [" / ".join(f"{row[f'ratio_{key}']:.2f}" for key in ("energy", "force", "score"))
             for row in summary["checkpoints"]]
    lines.append("| ratio of medians | mfbo / Optuna | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(name: str, entry: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted(k for k, v in entry.items() if isinstance(v, dict) and all(m in v for m in METHODS))
    colours = {"mfbo": "#1f77b4", "optuna": "#ff7f0e"}
    labels = {"mfbo": "mfbo (init + run)", "optuna": "Optuna TPE + Hyperband"}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    panels = [("energy", "test energy MAE (meV/atom)"), ("force", "test force MAE (eV/Å)")]
    base = entry[seeds[0]]["mfbo"]["test_baselines"] if seeds else None
    for ax, (key, ylabel) in zip(axes, panels):
        for method in METHODS:
            series = []
            for s in seeds:
                cps = entry[s][method]["checkpoints"]
                xs = [cp["time_s"] for cp in cps]
                ys = [_error(cp, key, entry[s]["mfbo"]["test_baselines"]) for cp in cps]
                series.append(ys)
                ax.plot(xs, ys, color=colours[method], lw=0.8, alpha=0.5, marker=".")
            if series:
                wall = entry[seeds[0]][method]["wall_time_s"]
                med = [_median([ys[i] for ys in series]) for i in range(len(FRACTIONS))]
                ax.plot([f * wall for f in FRACTIONS], med, color=colours[method], lw=2.5, marker="o",
                        label=f"{labels[method]}, median of {len(series)} seeds")
        if base:
            ref = base["linear_fit"]["energy_mae_per_atom"] * 1e3 if key == "energy" \
                else base["zero_forces"]["force_mae"]
            ax.axhline(ref, color="k", ls="--", lw=0.8,
                       label="per-element linear fit" if key == "energy" else "zero forces")
        nnp = PUBLISHED_NNP.get(name)
        if nnp:
            ax.axhline(nnp[0] if key == "energy" else nnp[1], color="#d62728", lw=1.2,
                       label="published NNP (Zuo et al. 2020)")
        ax.set_yscale("log")
        ax.set_xlabel("wall time (s); mfbo's last point: when its study finished")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.suptitle(f"{name}: test error of each method's recommendation, retrained at full fidelity "
                 "(thin: seeds; bold: median)", fontsize=10)
    fig.savefig(path, dpi=130)
    plt.close(fig)


# ------------------------------------------------------------------------------------------ main
def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _store(path: Path, dataset: str, seed: str, method: str, cell: dict) -> dict:
    current = _load(path)  # re-read: another process may have finished another cell meanwhile
    current.setdefault(dataset, {}).setdefault(seed, {})[method] = cell
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=1, default=str))
    tmp.replace(path)
    return current


def _drop_caches(folder: Path) -> None:
    """Remove a finished cell's fingerprint caches (several GB on Si); the study folder stays."""
    for name in ("cache", "retrain-cache"):
        shutil.rmtree(folder / name, ignore_errors=True)


def run_cells(names: list[str], seeds: list[int], wall_time: float, out: Path,
              paths: dict[str, tuple[Path, Path]] | None = None) -> dict:
    """Run every missing (dataset, seed, method) cell; returns the results dict."""
    out = Path(out).resolve()  # the CLI runs in the cell's folder
    out.mkdir(parents=True, exist_ok=True)
    (out / "work").mkdir(exist_ok=True)
    ignore = out / "work" / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    results_path = out / "results.json"
    paths = paths or datasets()
    results = _load(results_path)
    for name in names:
        train, test = paths[name]
        for seed in seeds:
            key = str(seed)
            cell = results.get(name, {}).get(key, {})
            work = out / "work" / f"{name}-s{seed}"
            log = out / f"{name}-s{seed}.log"
            if "mfbo" not in cell or cell["mfbo"].get("wall_time_s") != wall_time:
                print(f"{name} seed {seed}: mfbo init --wall-time {wall_time:g} + mfbo run ...", flush=True)
                cell.pop("optuna", None)
                results = _store(results_path, name, key, "mfbo",
                                 run_mfbo(train, test, seed, wall_time, work / "mfbo", log))
                cell = results[name][key]
                _drop_caches(work / "mfbo")
            if "optuna" not in cell or cell["optuna"].get("wall_time_s") != wall_time:
                print(f"{name} seed {seed}: Optuna TPE + Hyperband for {wall_time:g} s ...", flush=True)
                results = _store(results_path, name, key, "optuna",
                                 run_optuna(Path(cell["mfbo"]["study_dir"]), seed, wall_time, work / "optuna",
                                            cell["mfbo"]["test_baselines"]))
                _drop_caches(work / "optuna")
    return results


def report(results: dict, names: list[str], out: Path) -> dict:
    """Print the tables, draw the figures and write ``OUT/summary.json``; returns the summaries."""
    out.mkdir(parents=True, exist_ok=True)
    summaries = {}
    for name in names:
        if name not in results:
            continue
        summaries[name] = summarise(results[name])
        print(table(name, summaries[name]))
        if summaries[name]["seeds"]:
            print(markdown(name, results[name], summaries[name]))
            figure(name, results[name], out / f"live_{name}.png")
            print(f"wrote {out / f'live_{name}.png'}")
    (out / "summary.json").write_text(json.dumps(summaries, indent=1, default=str))
    return summaries


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["si"], choices=["si", "oc20"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--wall-time", type=float, default=300.0, help="seconds per method and seed")
    parser.add_argument("--out", type=Path, default=REPO / "analysis" / "live_results")
    parser.add_argument("--report-only", action="store_true", help="print the table and redraw the PNGs")
    args = parser.parse_args(argv)
    results = _load(args.out / "results.json") if args.report_only else \
        run_cells(args.datasets, args.seeds, args.wall_time, args.out)
    report(results, args.datasets, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
