"""The ``mfbo`` command line: one entry point, small subcommands.

Each subpackage that owns a subcommand provides a ``_cli`` module with a
``register(subparsers)`` function that adds its parser(s) and sets
``func=handler`` (handler(args) -> int exit code). Heavy imports happen inside
handlers so ``mfbo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from mfbo.errors import MfboError

# Subpackages contributing subcommands, in the order of the data flow (mfbo.study also adds
# mfbo.inspect's `inspect`, handing it the study loader).
_CLI_MODULES = (
    "mfbo.fingerprints._cli",
    "mfbo.training._cli",
    "mfbo.priors._cli",
    "mfbo.study._cli",
    "mfbo.objectives._cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfbo",
        description="Multi-fidelity Bayesian optimisation of GMP + SingleNN potentials.",
    )
    from mfbo import __version__

    parser.add_argument("--version", action="version", version=f"mfbo {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _CLI_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A subpackage without a CLI yet contributes no command.
            if exc.name is not None and module_name.startswith(exc.name):
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except MfboError as exc:
        print(f"mfbo {args.command}: error: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        print(f"mfbo {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `mfbo status DIR | head -3`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a file the command must write: one line naming it, no traceback
        where = f": {exc.filename}" if exc.filename else ""
        hint = "; write elsewhere with --out DIR" if hasattr(args, "out") else ""
        print(f"mfbo {args.command}: error: {exc.strerror or exc}{where}{hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
