"""``mfbo run / resume / status / best``: the study commands (heavy imports inside handlers)."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("run", help="run a study from a study file (TOML)",
                              description="Validate STUDY, create its directory and run it until the budget "
                                          "is spent; then retrain the best configuration and test it.")
    p.add_argument("study", metavar="STUDY", help="study file (TOML), e.g. studies/quickstart.toml")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    p.add_argument("--check", action="store_true", help="only validate the study file, then exit")
    p.add_argument("--resume", action="store_true",
                   help="if the output directory already holds this study, resume it (a finished one just "
                        "prints its result) instead of refusing")
    p.set_defaults(func=_run)

    p = subparsers.add_parser("resume", help="resume a study directory (after a crash, kill or stop)")
    p.add_argument("dir", metavar="DIR", help="study directory")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
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


def _finish(study, args) -> int:
    result = study.run(progress=not args.no_progress)
    _print_status(result, sys.stdout)
    best = result.get("best")
    if best and best.get("final"):
        print("best configuration (retrained at target fidelity):", file=sys.stdout)
        print(f"  {json.dumps(best['params'], default=str)}", file=sys.stdout)
        print(f"  validation {best['metric'] if isinstance(best['metric'], str) else 'metric'}: "
              f"{_fmt(best.get('validation_value'))}", file=sys.stdout)
        for k, v in (best.get("test_metrics") or {}).items():
            print(f"  test {k}: {_fmt(v)}", file=sys.stdout)
        if best.get("model_path"):
            print(f"  model: {best['model_path']}", file=sys.stdout)
    return 0


def _run(args) -> int:
    from mfbo.study import Study, load_study_file

    config = load_study_file(args.study)
    if args.check:
        print(f"{args.study}: OK (output {config.output})")
        return 0
    from mfbo.errors import StudyError

    study = Study(config)
    if study.uid is not None and args.resume:
        return _finish(Study.load(config.output), args)
    if study.uid is not None:
        raise StudyError(f"{config.output} already holds a study; continue it with 'mfbo resume {config.output}' "
                         "or choose another [study] output")
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
    best = st.get("best_so_far")
    if best:
        print(f"  best so far: {best['value']:.6g} (trial {best['trial_id']}, fraction {best['data_fraction']:.3g}, "
              f"{best['epochs']} epochs)", file=out)
        print(f"    {json.dumps(best['params'], default=str)}", file=out)
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
        print("study not finished: best trial so far (not retrained)")
    print("parameters:")
    for k, v in best["params"].items():
        print(f"  {k} = {_fmt(v)}")
    if best.get("fidelity"):
        print(f"retrained at data_fraction {best['fidelity']['data_fraction']}, {best['fidelity']['epochs']} epochs; "
              f"validation {_fmt(best.get('validation_value'))}")
    if best.get("test_metrics"):
        print("test metrics:")
        for k, v in best["test_metrics"].items():
            print(f"  {k} = {_fmt(v)}")
    if best.get("model_path"):
        print(f"model: {best['model_path']}")
    return 0
