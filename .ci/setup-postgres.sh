#!/usr/bin/env bash
# PostgreSQL server binaries from Debian's packages, for the study tests (tests/study). The tests start
# their own private server (initdb + pg_ctl on 127.0.0.1, a free port, a temporary directory), so
# nothing is configured or started here.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y postgresql
