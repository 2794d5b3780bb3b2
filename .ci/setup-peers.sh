#!/usr/bin/env bash
# A separate environment for the DEHB and SMAC3 peers of the benchmark (mfbo.optimize.baselines._peers,
# analysis/benchmarks/run.py --methods dehb smac-mf, tests/optimize/test_peers.py).
#
# dehb 0.1.2 requires numpy < 2 and smac 2.4.1 pins ConfigSpace 1.2.0; mfbo's own environment keeps numpy 2,
# so the peers get their own virtualenv and evaluate the benchmark problems across a process boundary.
#
#   where:   $MFBO_PEERS_ENV (default ~/.cache/mfbo/peers-1); <env>/venv/bin/python is the interpreter
#            mfbo finds by default (MFBO_PEERS_PYTHON=PATH overrides).
#   python:  $MFBO_PEERS_BASE_PYTHON (default python3.11).
#
# About 1.5 min once; idempotent: a second run only checks that both packages still import.
set -euo pipefail
cd "$(dirname "$0")/.."

ENV_DIR="${MFBO_PEERS_ENV:-$HOME/.cache/mfbo/peers-1}"
BASE_PYTHON="${MFBO_PEERS_BASE_PYTHON:-python3.11}"
PY="$ENV_DIR/venv/bin/python"
STAMP="$ENV_DIR/.ready"
# Bump when the recipe below changes, so an existing environment is rebuilt.
WANT="recipe=1 dehb==0.1.2 smac==2.4.1"

if ! command -v "$BASE_PYTHON" > /dev/null; then
    echo "setup-peers: skipped: $BASE_PYTHON not found (the DEHB/SMAC3 tests will skip)"
    exit 0
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && [ -x "$PY" ] \
        && (cd / && "$PY" -c "import dehb, smac" > /dev/null 2>&1); then
    echo "setup-peers: ready: $PY"
    exit 0
fi

echo "setup-peers: building the DEHB/SMAC3 environment in $ENV_DIR"
rm -rf "$ENV_DIR"
mkdir -p "$ENV_DIR"
"$BASE_PYTHON" -m venv "$ENV_DIR/venv"
# The local package mirrors' "is ignored" warnings are noise; pip's own exit status is kept.
"$PY" -m pip install --quiet --disable-pip-version-check "dehb==0.1.2" "smac==2.4.1" 2>&1 \
    | { grep -v "neither a file nor a directory" || true; }
(cd / && "$PY" -c "import dehb, smac")
echo "$WANT" > "$STAMP"
echo "setup-peers: ready: $PY"
