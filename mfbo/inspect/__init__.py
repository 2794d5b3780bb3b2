"""Inspect multi-fidelity surrogate models and report studies.

``SurrogateView(space, trials, surrogate, prior=None)`` gives predictions, importance,
leave-one-out, fidelity trust and one matplotlib figure per report section;
``build_report(view, out_dir)`` writes the self-contained HTML report; ``mfbo inspect DIR``
does both for a study directory (running or finished).
"""

from mfbo.inspect._report import SECTION_IDS, build_report
from mfbo.inspect._snapshot import load_view, metric_label, snapshot_study_dir, study_view
from mfbo.inspect._view import InspectError, SurrogateView

__all__ = ["SurrogateView", "InspectError", "build_report", "SECTION_IDS", "load_view", "snapshot_study_dir",
           "study_view", "metric_label"]
