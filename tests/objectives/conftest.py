"""AMPTorch's own interpreter for the tests that run real AMPTorch.

``MFBO_AMPTORCH_PYTHON`` names it; otherwise the environment ``.ci/setup-amptorch.sh`` builds
(``~/.cache/mfbo/amptorch-02e5af3``) is used, and built first when it is missing. The tests skip,
with the reason, only when AMPTorch's source archive (``../shared/vendor``) is absent.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARCHIVE = Path(os.environ.get("MFBO_AMPTORCH_ARCHIVE") or REPO.parent / "shared" / "vendor" / "amptorch-02e5af3.tar.gz")


@pytest.fixture(scope="session")
def amptorch_python() -> str:
    """Path of an interpreter in which AMPTorch trains."""
    named = os.environ.get("MFBO_AMPTORCH_PYTHON")
    if named:
        return named
    from mfbo.objectives._amptorch_env import default_env_dir

    python = default_env_dir() / "venv" / "bin" / "python"
    if not ARCHIVE.is_file():
        if python.is_file():
            return str(python)
        pytest.skip(f"no AMPTorch source archive at {ARCHIVE} and MFBO_AMPTORCH_PYTHON is unset: "
                    "real-AMPTorch tests cannot build their environment")
    # Idempotent: seconds when the environment is ready, a few minutes to build it.
    proc = subprocess.run(["bash", str(REPO / ".ci" / "setup-amptorch.sh")], capture_output=True, text=True,
                          timeout=1500)
    assert proc.returncode == 0 and python.is_file(), proc.stdout[-2000:] + proc.stderr[-2000:]
    return str(python)
