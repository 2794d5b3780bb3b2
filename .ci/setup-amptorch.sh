#!/usr/bin/env bash
# A separate AMPTorch environment for the tests and benchmarks that run real AMPTorch
# (tests/objectives/test_amptorch_real.py, analysis/bench_fingerprints.py, docs/amptorch.md).
#
# AMPTorch (GPL-3.0) is built from the verbatim source archive in ../shared/vendor into its own
# virtualenv OUTSIDE the repository; nothing of it is copied into mfbo. It needs numpy < 1.24 and
# skorch 0.10, which mfbo's own environment must not get, hence a second interpreter.
#
#   where:   $MFBO_AMPTORCH_ENV (default ~/.cache/mfbo/amptorch-02e5af3)
#            <env>/venv/bin/python is the interpreter; mfbo finds it there by default, and
#            MFBO_AMPTORCH_PYTHON=PATH overrides.
#   archive: $MFBO_AMPTORCH_ARCHIVE (default ../shared/vendor/amptorch-02e5af3.tar.gz, relative
#            to the repository root). Absent archive: prints why and exits 0 (the tests then skip).
#   python:  $MFBO_AMPTORCH_BASE_PYTHON (default python3.11).
#
# Idempotent: a second run only checks that the environment still imports AMPTorch (about 10-20 s).
set -euo pipefail
cd "$(dirname "$0")/.."

ARCHIVE="${MFBO_AMPTORCH_ARCHIVE:-../shared/vendor/amptorch-02e5af3.tar.gz}"
ENV_DIR="${MFBO_AMPTORCH_ENV:-$HOME/.cache/mfbo/amptorch-02e5af3}"
BASE_PYTHON="${MFBO_AMPTORCH_BASE_PYTHON:-python3.11}"
# Bump when the recipe below changes, so an existing environment is rebuilt.
RECIPE=1

if [ ! -f "$ARCHIVE" ]; then
    echo "setup-amptorch: skipped: no AMPTorch source archive at $ARCHIVE (the real-AMPTorch tests will skip)"
    exit 0
fi
if ! command -v "$BASE_PYTHON" > /dev/null; then
    echo "setup-amptorch: skipped: $BASE_PYTHON not found (AMPTorch's environment is built with Python 3.11)"
    exit 0
fi

PY="$ENV_DIR/venv/bin/python"
STAMP="$ENV_DIR/.ready"
WANT="recipe=$RECIPE archive=$(sha256sum "$ARCHIVE" | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$PY" ] \
        && (cd / && "$PY" -c "import amptorch.trainer" > /dev/null 2>&1); then
    echo "setup-amptorch: ready: $PY"
    exit 0
fi

echo "setup-amptorch: building AMPTorch's environment in $ENV_DIR"
rm -rf "$ENV_DIR"
mkdir -p "$ENV_DIR/src"
tar -xzf "$ARCHIVE" -C "$ENV_DIR/src"
SRC="$(find "$ENV_DIR/src" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
"$BASE_PYTHON" -m venv "$ENV_DIR/venv"
pip_install() {
    # The local package mirrors' "is ignored" warnings are noise; pip's own exit status is kept.
    "$PY" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
        | { grep -v "neither a file nor a directory" || true; }
}
# torch first and alone: a CPU wheel (a bare `pip install torch` resolves to the CUDA build).
pip_install "torch==2.13.0"
# numpy < 1.24: skorch 0.10's scoring concatenates AMPTorch's uneven [energy, forces] targets,
# which numpy >= 1.24 refuses. skorch 0.10 (AMPTorch uses CVSplit, gone in skorch 1.x) imports
# pkg_resources, so setuptools < 81.
pip_install "numpy==1.23.5" "skorch==0.10.0" "setuptools<81" torch-geometric lmdb h5py scikit-learn \
    cffi scipy ase tqdm wheel

# torch_scatter has no wheel for current torch. AMPTorch calls only scatter(src, index, dim=0),
# a sum, which torch_geometric.utils.scatter computes with the same meaning.
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
mkdir -p "$SITE/torch_scatter"
cat > "$SITE/torch_scatter/__init__.py" <<'EOF'
"""Stand-in for torch_scatter's scatter(), written for mfbo's AMPTorch test environment."""
from torch_geometric.utils import scatter as _pyg_scatter

__version__ = "0.0+pyg"


def scatter(src, index, dim=-1, out=None, dim_size=None, reduce="sum"):
    if out is not None:
        raise NotImplementedError("this torch_scatter stand-in does not support out=")
    return _pyg_scatter(src, index, dim=dim, dim_size=dim_size, reduce=reduce)
EOF

# Editable install: keeps AMPTorch's default .g valence-density files, which a regular install
# leaves out; compiles the GMP C++ kernels with cffi + g++.
pip_install --no-build-isolation -e "$SRC"

(cd / && "$PY" -W ignore -c "import amptorch.trainer, numpy, skorch; print('setup-amptorch: numpy', numpy.__version__, 'skorch', skorch.__version__)")
echo "$WANT" > "$STAMP"
echo "setup-amptorch: ready: $PY"
