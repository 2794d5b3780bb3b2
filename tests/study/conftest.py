"""Shared helpers of the study tests: study files for the fast synthetic objective, the CLI in a
subprocess, and a private PostgreSQL server on 127.0.0.1."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, cli_env, run_cli  # noqa: F401  (the study tests' CLI helpers)

HERE = Path(__file__).resolve().parent

# Small and fast: a cheap initial design, then a few model-based asks.
FAST_OPTIMIZER = {"n_initial": 3, "raw_samples": 64, "num_restarts": 1}


def toml_value(v) -> str:
    import tomli_w

    return tomli_w.dumps({"v": v}).split("=", 1)[1].strip()


def write_study(path: Path, *, output: str = "run", budget_ffe: float = 0.3, workers: int = 1,
                options: dict | None = None, execution: dict | None = None, storage: str | None = None,
                seed: int = 0, epochs=(1, 8), data_fraction=(0.25, 1.0), extra: str = "") -> Path:
    """A study file for the synthetic objective in this folder."""
    import tomli_w

    doc = {
        "study": {"name": path.stem, "output": output, "seed": seed},
        "objective": {"backend": "study_synth:make", "path": str(HERE), "options": options or {}},
        "space": {"x": {"type": "float", "bounds": [0.0, 1.0]}, "y": {"type": "float", "bounds": [0.0, 1.0]}},
        "fidelity": {"data_fraction": list(data_fraction), "epochs": list(epochs)},
        "budget": {"ffe": budget_ffe},
        "execution": {"workers": workers, **(execution or {})},
        "optimizer": {"options": FAST_OPTIMIZER},
    }
    if storage:
        doc["storage"] = {"url": storage}
    path.write_text(tomli_w.dumps(doc) + extra)
    return path


def stored_experiment(d: Path):
    """The Ax experiment a study stored in its database (not the one a rebuilt optimiser holds)."""
    import json

    from mfbo.study import Study

    name = json.loads((Path(d) / "study.json").read_text())["ax_experiment"]
    return Study.load(d)._open_store().load_experiment(name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PG_PASSWORD = "s3cret-Pw-91x"


@pytest.fixture(scope="session")
def postgres_url():
    """A private PostgreSQL server (initdb + pg_ctl on 127.0.0.1, a free port, a temp dir) with a
    password-protected user; yields its URL. Skips when Debian's PostgreSQL binaries are absent."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.skip("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    bindir = Path(bins[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="mfbo-pg-"))
    os.chmod(root, 0o755)
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    pwfile = root / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
        shutil.chown(pwfile, "postgres")
    port = _free_port()
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "mfbo", "--auth=scram-sha-256",
                    f"--pwfile={pwfile}", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
                    "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off", "start"],
                   check=True, capture_output=True, timeout=90)
    try:
        yield f"postgresql://mfbo:{PG_PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def wait_for(pred, timeout: float, interval: float = 0.1) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(interval)
    return False
