"""Shared fixtures: the AMPTorch reference (skipped with a reason when absent)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms

REPO = Path(__file__).resolve().parents[2]


def reference_dir() -> Path | None:
    env = os.environ.get("MFBO_SHARED")
    candidates = [Path(env) / "reference"] if env else []
    candidates.append(REPO / ".." / "shared" / "reference")
    for c in candidates:
        if (c / "amptorch_gmp_public.json").is_file() and (c / "amptorch_gmp_public.npz").is_file():
            return c.resolve()
    return None


@pytest.fixture(scope="session")
def reference():
    d = reference_dir()
    if d is None:
        pytest.skip("AMPTorch reference not found (set MFBO_SHARED or place shared/ beside the repo)")
    meta = json.loads((d / "amptorch_gmp_public.json").read_text())
    with np.load(d / "amptorch_gmp_public.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return meta, arrays


@pytest.fixture(scope="session")
def reference_atoms():
    """key, arrays -> the reference image as ASE Atoms (positions as stored, unwrapped)."""

    def make(arrays, key: str) -> Atoms:
        return Atoms(
            numbers=arrays[f"{key}__numbers"],
            positions=arrays[f"{key}__positions"],
            cell=arrays[f"{key}__cell"],
            pbc=arrays[f"{key}__pbc"],
        )

    return make
