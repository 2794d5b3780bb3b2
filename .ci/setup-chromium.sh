#!/usr/bin/env bash
# Headless Chromium (Debian package) for tests/inspect: the HTML report must open offline
# with no console errors and every image loaded. Idempotent: does nothing when present.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(command -v chromium || echo /usr/bin/chromium)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "setup-chromium: not root and no sudo; the Chromium test will be skipped" >&2
        exit 0
    fi
fi
export DEBIAN_FRONTEND=noninteractive
# Another setup script may hold the apt lock; wait for it rather than fail.
for _ in $(seq 1 60); do
    if $SUDO apt-get install -y -qq chromium >/dev/null 2>&1; then break; fi
    if $SUDO apt-get update -qq >/dev/null 2>&1 && $SUDO apt-get install -y -qq chromium; then break; fi
    sleep 5
done
command -v chromium >/dev/null 2>&1 || { echo "setup-chromium: install failed" >&2; exit 1; }
echo "chromium installed: $(chromium --version 2>/dev/null | head -1)"
