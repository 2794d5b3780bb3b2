"""``mfbo inspect DIR``: the surrogate report of a study (running or finished).

The study package registers this command and hands it its study loader
(``register(subparsers, load_study=...)``), so ``mfbo.inspect`` never imports ``mfbo.study``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers, load_study=None) -> None:
    """Add ``mfbo inspect``.

    Args:
        subparsers: the ``mfbo`` command's subparsers.
        load_study: ``load_study(path) -> study``, opening a study directory read-only.
    """
    p = subparsers.add_parser(
        "inspect",
        help="write an HTML report of a study's surrogate model",
        description="Write a self-contained HTML report (figures inline, opens offline) of what a study's "
                    "multi-fidelity surrogate believes, with PNG copies of each figure and report.json. "
                    "Works on a running study: it reads a consistent snapshot.",
    )
    p.add_argument("study_dir", metavar="DIR", help="study directory")
    p.add_argument("--out", metavar="DIR", default=None, help="output directory (default: DIR/inspect)")
    p.add_argument("--json", action="store_true", help="print the report's numbers as JSON on stdout")
    p.add_argument("--seed", type=int, default=0, help="seed of the report's random draws (default 0)")
    p.set_defaults(func=_handle, load_study=load_study)


def _handle(args: argparse.Namespace) -> int:
    from mfbo.inspect._report import build_report
    from mfbo.inspect._snapshot import load_view
    from mfbo.inspect._view import InspectError

    if args.load_study is None:
        raise InspectError("no study loader was registered with this command; run it as 'mfbo inspect DIR'")
    out = Path(args.out) if args.out else Path(args.study_dir) / "inspect"
    if Path(args.study_dir).is_dir():
        _check_writable(out, InspectError)
    view, tmp = load_view(args.study_dir, args.load_study, seed=args.seed)
    try:
        title = f"mfbo study report: {Path(args.study_dir).resolve().name}"
        res = build_report(view, out, title=title, progress=sys.stderr.isatty())
    finally:
        tmp.cleanup()
    if args.json:
        json.dump(res["numbers"], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        loo = res["numbers"]["loo"]
        cov = "n/a" if loo["coverage_95"] is None else f"{loo['coverage_95']:.0%}"
        print(f"report: {res['html']} ({len(res['figures'])} figures in {out / 'figures'}; "
              f"LOO 95% coverage {cov})")
    return 0


def _check_writable(out: Path, error: type) -> None:
    """Refuse, before the (slow) report is made, an output directory that cannot be written."""
    probe = out / ".mfbo-write-test"
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise error(f"cannot write the report to {out} ({exc.strerror or exc}); pass --out DIR to write it "
                    "elsewhere (a read-only study directory can still be inspected)") from None
