"""``mfbo run / resume / status / best``: the study commands (heavy imports inside handlers)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "init", help="write a study file for your own data, sized to a wall-time budget",
        description="Read TRAIN (ASE-readable, with DFT energies and ideally forces), hold out a test set "
                    "(or use --test), derive a GMP prior from the data's neighbour distances, time a short "
                    "probe training, and write a study file whose search plus final retraining fit in "
                    "--wall-time. Prints what it chose and why.")
    p.add_argument("train", metavar="TRAIN", help="training data (ASE-readable: .traj, .extxyz, .db, ...)")
    p.add_argument("--test", help="test data (default: hold out 10%% of TRAIN)")
    p.add_argument("--out", required=True, metavar="STUDY.toml", help="study file to write")
    p.add_argument("--wall-time", type=float, default=1200.0, metavar="SECONDS",
                   help="seconds for the whole study, final retraining included (default 1200)")
    p.add_argument("--workers", type=int, help="parallel trials (default: cores, at most 4)")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the probe and the study (default 0)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=_init)

    p = subparsers.add_parser("run", help="run a study from a study file (TOML)",
                              description="Validate STUDY, create its directory and run it until the budget "
                                          "is spent; then retrain the best configuration and test it.")
    p.add_argument("study", metavar="STUDY", help="study file (TOML), e.g. studies/quickstart.toml")
    _progress_options(p)
    p.add_argument("--check", action="store_true",
                   help="only check the study (file, data, base config, priors, optimiser options, storage) "
                        "as 'run' would, then exit; writes nothing")
    p.add_argument("--resume", action="store_true",
                   help="if the output directory already holds this study, resume it (a finished one just "
                        "prints its result) instead of refusing")
    p.set_defaults(func=_run)

    p = subparsers.add_parser("resume", help="resume a study directory (after a crash, kill or stop)")
    p.add_argument("dir", metavar="DIR", help="study directory")
    _progress_options(p)
    p.set_defaults(func=_resume)

    p = subparsers.add_parser("status", help="trials running/done/failed, best so far, budget used")
    p.add_argument("dir", metavar="DIR", help="study directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_status)

    p = subparsers.add_parser("best", help="the best configuration (best.json) of a study")
    p.add_argument("dir", metavar="DIR", help="study directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_best)

    # `mfbo inspect DIR` (the report) is mfbo.inspect's; it gets the study loader from here.
    from mfbo.inspect._cli import register as register_inspect

    register_inspect(subparsers, load_study=_load_readonly)


def _load_readonly(directory):
    from mfbo.study._study import Study

    return Study.load(directory, readonly=True)


def _progress_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress on stderr (study.log still gets it)")
    p.add_argument("--progress-every", type=float, default=30.0, metavar="S",
                   help="without a terminal, one plain progress line every S seconds (default 30)")


def _finish(study, args) -> int:
    result = study.run(progress=not args.no_progress, progress_every=args.progress_every)
    _print_status(result, sys.stdout)
    best = result.get("best")
    if best and best.get("final"):
        print("best configuration (retrained at target fidelity):", file=sys.stdout)
        print(f"  {json.dumps(best['params'], default=str)}", file=sys.stdout)
        print(f"  validation {best['metric'] if isinstance(best['metric'], str) else 'metric'}: "
              f"{_fmt(best.get('validation_value'))}", file=sys.stdout)
        if best.get("z") is not None:
            pred = best["prediction"]
            print(f"  predicted before the retraining: {pred['mean']:.6g} ± {pred['sd']:.2g} (z = {best['z']:.2f})",
                  file=sys.stdout)
        for line in _quality(best):
            print(f"  {line}", file=sys.stdout)
        if best.get("model_path"):
            print(f"  model: {best['model_path']}", file=sys.stdout)
    return 0


def _quality(best: dict) -> list[str]:
    """The test errors with units, beside the trivial baselines, and a warning on unseen elements."""
    from mfbo.training._baselines import quality_lines

    metrics = best.get("test_metrics")
    if not metrics:
        return []
    lines = quality_lines(metrics, best.get("test_baselines"), "test")
    if best.get("unseen_test_elements"):
        lines.append(f"  warning: test images hold element(s) {', '.join(best['unseen_test_elements'])} that no "
                     "training image has; errors there are extrapolation")
    return lines


def _run(args) -> int:
    from mfbo.study import Study, load_study_file

    config = load_study_file(args.study)
    study = Study(config)
    if study.uid is not None and args.resume:
        if args.check:
            print(f"{args.study}: OK (output {config.output} holds this study; --resume continues it)")
            return 0
        return _finish(Study.load(config.output), args)
    checked = study.check()  # refuses whatever run would, before anything is written
    if args.check:
        split = checked.get("split") or {}
        sizes = ", ".join(f"{len(v)} {k}" for k, v in split.items() if v is not None)
        print(f"{args.study}: OK (output {config.output}" + (f"; images: {sizes}" if sizes else "") + ")")
        return 0
    print(f"study {config.name}: directory {config.output}", file=sys.stderr)
    return _finish(study, args)


def _resume(args) -> int:
    from mfbo.study import Study

    return _finish(Study.load(args.dir), args)


def _fmt(v) -> str:
    return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _print_status(st: dict, out) -> None:
    t = st["trials"]
    b = st["budget"]
    print(f"study {st['name']} ({st['dir']}): {st['status']}", file=out)
    if st.get("stop_reason"):
        print(f"  reason: {st['stop_reason']}", file=out)
    print(f"  trials: {t['running']} running, {t['completed']} done, {t['failed']} failed, "
          f"{t['abandoned']} abandoned", file=out)
    print(f"  budget: {b['ffe_used']:.3f} / {_fmt(b['ffe_budget'])} FFE, "
          f"{b['wall_time_used_s']:.0f} / {_fmt(b['wall_time_budget_s'])} s", file=out)
    if b.get("optimizer_s") is not None:
        from mfbo.study._study import optimizer_share_text

        print(f"  optimiser's own time: {b['optimizer_s']:.1f} s ("
              f"{optimizer_share_text(b['optimizer_s'], b['wall_time_used_s'], t['completed'] + t['failed'])})",
              file=out)
    best = st.get("best_so_far")
    if best and best.get("value") is not None:
        print(f"  best so far at target fidelity: {best['value']:.6g} (trial {best['trial_id']}, fraction "
              f"{best['data_fraction']:.3g}, {best['epochs']} epochs)", file=out)
        print(f"    {json.dumps(best['params'], default=str)}", file=out)
    elif best:
        pred = best.get("prediction") or {}
        guess = (f"; the recommendation is predicted {pred['mean']:.6g} ± {pred['sd']:.2g} there"
                 if pred.get("mean") is not None else "")
        print(f"  best so far: no trial has run at target fidelity yet{guess}", file=out)
        print(f"    recommendation: {json.dumps(best['params'], default=str)}", file=out)
    cal = st.get("calibration")
    if cal and cal.get("z") is not None:
        print(f"  final retraining: {cal['value']:.6g} against the predicted {cal['prediction']['mean']:.6g} ± "
              f"{cal['prediction']['sd']:.2g} (z = {cal['z']:.2f})", file=out)
    print(f"  storage: {st['storage']}; executor: {st['executor']} ({st['workers']} workers)", file=out)
    if st.get("best_json"):
        print(f"  best configuration: {st['best_json']} (mfbo best {st['dir']})", file=out)


def _status(args) -> int:
    from mfbo.study import Study

    st = Study.load(args.dir).status()
    if args.json:
        print(json.dumps(st, indent=1, default=str))
    else:
        _print_status(st, sys.stdout)
    return 0


def _best(args) -> int:
    from mfbo.study import Study

    best = Study.load(args.dir).best()
    if args.json:
        print(json.dumps(best, indent=1, default=str))
        return 0
    if not best.get("final", True):
        if best.get("best_trial"):
            print(f"study not finished: best target-fidelity trial so far (trial {best['best_trial']['trial_id']}, "
                  f"value {_fmt(best['best_trial']['value'])}; not retrained)")
        else:
            pred = best.get("prediction") or {}
            print("study not finished and no trial has run at target fidelity yet: the recommendation"
                  + (f", predicted {pred['mean']:.6g} ± {pred['sd']:.2g} at target" if pred.get("mean") is not None
                     else ""))
    print("parameters:")
    for k, v in best["params"].items():
        print(f"  {k} = {_fmt(v)}")
    if best.get("fidelity"):
        print(f"retrained at data_fraction {best['fidelity']['data_fraction']}, {best['fidelity']['epochs']} epochs; "
              f"validation {_fmt(best.get('validation_value'))}")
    if best.get("z") is not None:
        pred = best["prediction"]
        print(f"predicted before the retraining: {pred['mean']:.6g} ± {pred['sd']:.2g} (z = {best['z']:.2f})")
    for line in _quality(best):
        print(line)
    if best.get("model_path"):
        print(f"model: {best['model_path']}")
    return 0


def _init(args) -> int:
    from pathlib import Path

    from mfbo.errors import ConfigError
    from mfbo.study._init import plan_study, write_study_file

    out = Path(args.out)
    if out.exists():
        raise ConfigError(f"--out {out} exists; choose another path or remove it")
    if not Path(args.train).is_file():
        raise ConfigError(f"training data {args.train} not found")
    if args.test is not None and not Path(args.test).is_file():
        raise ConfigError(f"--test {args.test} not found")
    plan = plan_study(args.train, out=out, test=args.test, wall_time=args.wall_time, workers=args.workers,
                      seed=args.seed)
    path = write_study_file(plan)
    if args.json:
        print(json.dumps(plan.to_dict(), indent=1))
        return 0
    print(f"wrote {path}")
    for reason in plan.reasons:
        print(f"  {reason}")
    print(f"next: mfbo run {path}   (then mfbo best {path.parent / 'runs' / plan.name})")
    return 0
