"""Helpers shared by the inspect tests (a uniquely named module: tests/inspect is on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys


def run_mfbo(*args, cwd=None) -> subprocess.CompletedProcess:
    """The real ``mfbo`` CLI in a subprocess (one torch thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mfbo.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=600)
