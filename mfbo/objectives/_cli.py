"""``mfbo export``: the best configuration of a study as an AMPTorch or built-in trainer config."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a study's best configuration as an AMPTorch or mfbo trainer config",
        description=(
            "Write the best configuration of STUDY_DIR (from its best.json) as an AMPTorch "
            "AtomsTrainer config (amptorch_config.py defining `config`, and amptorch_config.json) "
            "or as the built-in trainer's config (mfbo_config.json)."
        ),
    )
    parser.add_argument("study_dir", metavar="STUDY_DIR", help="study output directory holding best.json")
    parser.add_argument("--format", choices=("amptorch", "mfbo"), default="amptorch", help="config format (default: amptorch)")
    parser.add_argument("--out", metavar="DIR", default=None, help="output directory (default: STUDY_DIR/export)")
    parser.add_argument("--raw-data", metavar="PATH", default=None,
                        help="training-data path to put in the exported config (default: the study's)")
    parser.add_argument("--check", action="store_true",
                        help="first train the exported config for 1 epoch on two tiny images in AMPTorch's "
                             "interpreter; write nothing if that fails")
    parser.add_argument("--python", metavar="PATH", default=None,
                        help="AMPTorch's interpreter for --check (default: $MFBO_AMPTORCH_PYTHON, else the "
                             "environment .ci/setup-amptorch.sh builds)")
    parser.set_defaults(func=_handle)


def _handle(args) -> int:
    from mfbo.objectives._export import export_amptorch, export_mfbo

    if args.format == "mfbo":
        if args.check:
            from mfbo.errors import ConfigError

            raise ConfigError("--check applies to --format amptorch only")
        print(export_mfbo(args.study_dir, args.out, raw_data=args.raw_data))
        return 0
    if args.check:
        _check(args)
    py_path, json_path = export_amptorch(args.study_dir, args.out, raw_data=args.raw_data)
    print(py_path)
    print(json_path)
    return 0


def _check(args) -> None:
    """The smoke fit of the config as written, in a scratch folder, before the real export."""
    import shutil
    import tempfile

    from mfbo.objectives._amptorch_env import find_python, smoke_check
    from mfbo.objectives._export import export_amptorch, load_amptorch_config_py

    python = find_python(args.python)  # no interpreter: fail before anything is written
    scratch = tempfile.mkdtemp(prefix="mfbo-export-check-")
    try:
        py_path, _ = export_amptorch(args.study_dir, scratch, raw_data=args.raw_data)
        smoke_check(python, load_amptorch_config_py(py_path, resolve=False), cache=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
