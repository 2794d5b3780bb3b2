"""``run.py`` with mfbo's fidelity-discrepancy term switched on once a run has N completed trials.

    SWITCH_AT=16 OMP_NUM_THREADS=1 .venv/bin/python analysis/benchmarks/discrepancy_from_trial.py \
        --problems oc20_gmp mlip_si mlip_mo --methods mfbo --seeds 5 --jobs 1 --out OUT

Takes ``run.py``'s arguments. Every mfbo run uses the default kernel until ``SWITCH_AT`` (default 16)
trials have completed, then refits from scratch with ``fidelity_discrepancy=True`` and keeps it. This is
what an automatic switch that read a signal at that point, and read it right, would do; it measures
whether such a switch keeps the term's gains where it helps and avoids its losses where it hurts.
The switch is made by wrapping ``MultiFidelityOptimizer._fit`` in this process before ``run.py`` starts
its worker processes (forked, so they inherit it).
"""

from __future__ import annotations

import os
import runpy
from pathlib import Path

from mfbo.optimize._optimizer import MultiFidelityOptimizer

SWITCH_AT = int(os.environ.get("SWITCH_AT", "16"))
_fit = MultiFidelityOptimizer._fit


def _fit_switching(self, completed):
    if not self.fidelity_discrepancy and len(completed) >= SWITCH_AT:
        self.fidelity_discrepancy = True
        self._warm_state = None  # the next fit is a fresh one, with the new kernel
        self._surrogate = None
    return _fit(self, completed)


if __name__ == "__main__":
    MultiFidelityOptimizer._fit = _fit_switching
    runpy.run_path(str(Path(__file__).with_name("run.py")), run_name="__main__")
