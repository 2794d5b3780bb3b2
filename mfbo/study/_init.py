"""``mfbo init``: a study file for the user's own data, sized to a wall-time budget.

From one labelled dataset (and optionally a test set) it chooses, and says why:

* the split: a seeded test hold-out when no test set is given (written beside the study file);
* the search space: a GMP prior derived from the data's own neighbour distances
  (:func:`mfbo.priors.derive_gmp_prior`) plus the network/training prior shipped with mfbo
  (``bundled:nn_defaults``);
* the objective: validation energy and force errors, each divided by its trivial baseline on this
  data (per-element linear fit; zero forces), so neither unit dominates;
* fidelities and budget: a short probe training measures seconds per image-epoch on this machine,
  then the target epoch count and the number of full-fidelity trainings are chosen so that the
  search plus the final retraining fit in the wall time.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mfbo.errors import ConfigError, DataError

__all__ = ["StudyPlan", "plan_study", "write_study_file"]

# Fraction of the search wall time that trials are assumed to use (the rest: optimiser, start-up, tails).
_EFFICIENCY = 0.6
# Aim for at least this many full-fidelity-equivalents of search; fewer epochs per trial if needed.
# Longer trainings matter more than more search: on mlearn Si, a study whose budget forced 30 target
# epochs handed over a potential with 1.7x the energy error of 100 default epochs.
_MIN_FFE = 6.0
_EPOCH_RANGE = (30, 300)


@dataclass
class StudyPlan:
    """What ``mfbo init`` chose (all times in seconds).

    Attributes:
        name: study name.
        study_file: where the study file goes.
        train, test: dataset paths written into the study file (relative to it when possible).
        n_pool, n_test: images in the training pool (train + validation) and the test set.
        elements: chemical symbols in the pool.
        forces: the data carries forces (trained on and scored).
        baselines: per-element linear fit energy MAE (eV/atom) and zero-force MAE (eV/Å) on the pool.
        metric: record key -> weight (1 / (2 x baseline)).
        seconds_per_image_epoch, seconds_featurize_per_image: measured by the probe training.
        target_epochs, full_training_s: the target fidelity and its estimated cost.
        search_wall_time, budget_ffe, workers: the search's limits.
        seed: the study's seed (``[study] seed``; it also seeded the split and the probe).
        reasons: one line per choice.
    """

    name: str
    study_file: str
    train: str
    test: str
    n_pool: int
    n_test: int
    elements: list[str]
    forces: bool
    baselines: dict
    metric: dict
    seconds_per_image_epoch: float
    seconds_featurize_per_image: float
    target_epochs: int
    full_training_s: float
    wall_time: float
    search_wall_time: float
    budget_ffe: float
    workers: int
    data_fraction_min: float
    prior_file: str
    seed: int = 0
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _read(path: Path, what: str) -> list:
    from mfbo.training import load_images

    try:
        return load_images(path)
    except DataError as exc:
        raise DataError(f"{what} {path}: {exc}") from None


def _has_forces(images) -> bool:
    from mfbo.training._data import image_forces

    return all(image_forces(a) is not None for a in images)


def _probe(pool: list, forces: bool, seed: int) -> tuple[float, float]:
    """Seconds per image-epoch and per image featurised, from a 2-epoch training on a small subset."""
    from mfbo.training import TrainConfig
    from mfbo.training._train import train

    rng = np.random.default_rng(seed)
    n = min(len(pool), 40)
    pick = [pool[i] for i in sorted(rng.permutation(len(pool))[:n])]
    n_val = max(1, n // 8)
    config = TrainConfig(epochs=2, get_forces=forces, num_threads=1, seed=seed)
    result = train(config, pick[n_val:], pick[:n_val], cache=None)
    per_image_epoch = result.timings["train"] / (2 * max(1, n - n_val))
    per_image_fp = result.timings["featurize"] / n
    return per_image_epoch, per_image_fp


def _rel(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def plan_study(
    train,
    *,
    out,
    test=None,
    wall_time: float = 1200.0,
    workers: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.1,
    name: str | None = None,
) -> StudyPlan:
    """Choose a study for a dataset and write its data split and derived prior beside ``out``.

    Args:
        train: ASE-readable file of labelled structures (energies; forces when available).
        out: path of the study file to write (its folder receives ``<stem>_data/`` and
            ``<stem>_gmp_prior.toml``).
        test: optional test-set file; without one, ``test_fraction`` of ``train`` is held out.
        wall_time: seconds for the whole study, final retraining included.
        workers: parallel trials (default: the machine's cores, at most 4).
        seed: seeds the split, the probe and the study.
        test_fraction: held-out fraction when ``test`` is None.
        name: study name (default: the study file's stem).

    Returns:
        the :class:`StudyPlan` (the study file itself is written by :func:`write_study_file`).

    Raises:
        DataError: unreadable data, missing energies, too few images (file named).
        ConfigError: a non-positive wall time or worker count.
    """
    import os

    import ase.io

    from mfbo.priors import derive_gmp_prior
    from mfbo.training._baselines import LabelSet, baseline_metrics, is_error_scale, unseen_elements

    out = Path(out)
    if not wall_time > 0:
        raise ConfigError(f"--wall-time {wall_time!r} must be a positive number of seconds")
    if workers is None:
        workers = max(1, min(4, os.cpu_count() or 1))
    if workers < 1:
        raise ConfigError(f"--workers {workers!r} must be at least 1")
    name = name or out.stem
    train_path = Path(train)
    images = _read(train_path, "training data")
    if len(images) < 10:
        raise DataError(f"training data {train_path}: {len(images)} images; a study needs at least 10")
    reasons: list[str] = []
    folder = out.resolve().parent
    data_dir = folder / f"{out.stem}_data"
    if test is None:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(images))
        n_test = max(1, int(round(test_fraction * len(images))))
        test_images = [images[i] for i in sorted(perm[:n_test])]
        pool = [images[i] for i in sorted(perm[n_test:])]
        data_dir.mkdir(parents=True, exist_ok=True)
        pool_path, test_path = data_dir / "pool.traj", data_dir / "test.traj"
        ase.io.write(str(pool_path), pool)
        ase.io.write(str(test_path), test_images)
        reasons.append(
            f"split: no test set given, so {n_test} of {len(images)} images (seed {seed}) are held out in "
            f"{_rel(test_path, folder)}; the study splits its validation set off the other {len(pool)}"
        )
    else:
        test_path = Path(test)
        test_images = _read(test_path, "test data")
        pool, pool_path = images, train_path
        reasons.append(f"split: test set {test_path} ({len(test_images)} images) is held out; the study splits "
                       f"its validation set off the {len(pool)} training images")
    missing = unseen_elements(pool, test_images)
    if missing:
        reasons.append(f"warning: test images hold element(s) {', '.join(missing)} that no training image has")

    forces = _has_forces(pool)
    labels = LabelSet.of(pool)
    base = baseline_metrics(labels, labels)
    e_base = base["linear_fit"]["energy_mae_per_atom"]
    f_base = base["zero_forces"]["force_mae_free"] if forces else None
    e_ok, f_ok = is_error_scale(e_base), forces and is_error_scale(f_base)
    if e_ok and f_ok:
        metric = {"val_energy_mae_per_atom": _sig(0.5 / e_base), "val_force_mae_free": _sig(0.5 / f_base)}
        reasons.append(
            f"objective: validation energy and force errors, each over its trivial baseline on this data "
            f"(linear fit {e_base * 1000:.3g} meV/atom, zero forces {f_base:.3g} eV/Å), averaged: 1 = no better "
            "than the baselines"
        )
    elif e_ok:
        metric = {"val_energy_mae_per_atom": _sig(1.0 / e_base)}
        why = "the data has no forces" if not forces else "its forces are all zero"
        reasons.append(f"objective: validation energy error over the linear-fit baseline ({why})")
    elif f_ok:
        metric = {"val_force_mae_free": _sig(1.0 / f_base)}
        reasons.append("objective: validation force error over the zero-force baseline (the energies are exactly "
                       "a per-element constant times the atom counts)")
    else:
        raise DataError(
            f"training data {train_path}: the energies are exactly a per-element constant times the atom counts "
            "and there are no nonzero forces, so there is nothing for a potential to learn; check that the file "
            "holds DFT energies and forces"
        )

    per_epoch, per_fp = _probe(pool, forces, seed)
    n_train = int(len(pool) * 0.9)
    featurize_s = per_fp * len(pool)
    # Trials run side by side on `workers` cores, so each has one core: the probe ran on one thread.
    search = wall_time
    target_epochs = _EPOCH_RANGE[1]
    for epochs in range(_EPOCH_RANGE[1], _EPOCH_RANGE[0] - 1, -10):
        full = featurize_s + epochs * per_epoch * n_train
        search = wall_time - 1.3 * full - 30.0
        target_epochs = epochs
        if search > 0 and search * workers * _EFFICIENCY / full >= _MIN_FFE:
            break
    full = featurize_s + target_epochs * per_epoch * n_train
    search = wall_time - 1.3 * full - 30.0
    if search <= 0:
        raise ConfigError(
            f"--wall-time {wall_time:g} s is too short: one training of {n_train} images for "
            f"{_EPOCH_RANGE[0]} epochs takes about {full:.0f} s here; give at least {3 * full + 60:.0f} s"
        )
    budget = max(1.0, round(search * workers * _EFFICIENCY / full, 1))
    reasons.append(
        f"cost: a probe training measured {per_epoch * 1000:.3g} ms per image-epoch and {per_fp * 1000:.3g} ms "
        f"per image featurised on one core; one full training ({n_train} images x {target_epochs} epochs) "
        f"takes about {full:.0f} s"
    )
    reasons.append(
        f"budget: {search:.0f} s of search on {workers} worker(s), about {budget:g} full-training equivalents, then "
        f"the final retraining (about {full:.0f} s) of the recommendation; {target_epochs} target epochs is the "
        f"most that leaves at least {_MIN_FFE:g} equivalents (range {_EPOCH_RANGE[0]}-{_EPOCH_RANGE[1]})"
    )
    df_min = _sig(max(0.05, min(0.5, 20.0 / max(n_train, 1))))
    reasons.append(
        f"fidelities: training-subset fraction {df_min:g}-1 (at least ~20 images) and 1-{target_epochs} epochs; "
        "cheap trials use both"
    )
    prior = derive_gmp_prior(pool, name=f"{name}_gmp", seed=seed, data_fraction=(df_min, 1.0),
                             max_epochs=target_epochs)
    prior_path = folder / f"{out.stem}_gmp_prior.toml"
    prior.write(prior_path)
    lo, hi = prior.ranges["cutoff"]
    reasons.append(
        f"space: GMP widths and cutoff ({lo:g}-{hi:g} Å) derived from the data's neighbour shells "
        f"({', '.join(f'{x:.2f}' for x in prior.stats.shells)} Å) in {_rel(prior_path, folder)}; network and "
        "training (width, depth, activation, learning rate, schedule, force weight, batch size) from "
        "bundled:nn_defaults"
    )
    symbols = sorted({s for a in pool for s in a.get_chemical_symbols()})
    return StudyPlan(
        name=name,
        study_file=str(out),
        train=_rel(pool_path, folder),
        test=_rel(test_path, folder),
        n_pool=len(pool),
        n_test=len(test_images),
        elements=symbols,
        forces=forces,
        baselines={"linear_fit_energy_mae_per_atom": e_base, "zero_forces_force_mae_free": f_base},
        metric=metric,
        seconds_per_image_epoch=per_epoch,
        seconds_featurize_per_image=per_fp,
        target_epochs=int(target_epochs),
        full_training_s=float(full),
        wall_time=float(wall_time),
        search_wall_time=float(round(search)),
        budget_ffe=float(budget),
        workers=int(workers),
        data_fraction_min=float(df_min),
        prior_file=_rel(prior_path, folder),
        seed=int(seed),
        reasons=reasons,
    )


def _sig(x: float, digits: int = 3) -> float:
    if x == 0 or not math.isfinite(x):
        return float(x)
    return float(f"{x:.{digits}g}")


def write_study_file(plan: StudyPlan) -> Path:
    """Write the study file of a plan (TOML, with the reasons as comments)."""
    metric = ", ".join(f"{k} = {v!r}" for k, v in plan.metric.items())
    timeout = int(math.ceil(3 * plan.full_training_s + 120))
    lines = [
        f"# Study written by `mfbo init` on {time.strftime('%Y-%m-%d')}: run it with `mfbo run {Path(plan.study_file).name}`.",
        "# Paths are relative to this file. Schema: docs/study.md. Why each choice:",
        *(f"#   {r}" for r in plan.reasons),
        "",
        "[study]",
        f'name = "{plan.name}"',
        f'output = "runs/{plan.name}"',
        f"seed = {int(plan.seed)}",
        "",
        "[data]",
        f'train = "{plan.train}"   # {plan.n_pool} images; elements {" ".join(plan.elements)}',
        f'test = "{plan.test}"     # {plan.n_test} images, never trained on',
        "val_fraction = 0.1",
        "",
        "[objective]",
        'backend = "builtin"',
        f"metric = {{ {metric} }}   # each weight = 1 / (2 x its baseline)",
        "",
        "[objective.base_config]",
        f"epochs = {plan.target_epochs}",
        f"get_forces = {'true' if plan.forces else 'false'}",
        "num_threads = 1   # one core per trial; trials run side by side",
        "",
        "[priors]",
        f'files = ["{plan.prior_file}", "bundled:nn_defaults"]',
        "",
        "[fidelity]",
        f"data_fraction = [{plan.data_fraction_min}, 1.0]",
        f"epochs = [1, {plan.target_epochs}]",
        "",
        "[budget]",
        f"ffe = {plan.budget_ffe}          # full-fidelity-equivalent trainings",
        f"wall_time = {int(plan.search_wall_time)}   # seconds of search; the final retraining comes after",
        "",
        "[execution]",
        f"workers = {plan.workers}",
        'executor = "local"',
        f"trial_timeout = {timeout}",
        "max_failure_rate = 0.5",
        "",
        "[final]",
        "enabled = true",
        f"timeout = {timeout}",
        "",
    ]
    path = Path(plan.study_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
