"""The self-contained HTML report: every figure inline as a base64 PNG, PNG copies and a JSON of the numbers."""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from mfbo.inspect._view import SurrogateView

__all__ = ["build_report", "SECTION_IDS"]

SECTION_IDS = tuple(sid for sid, _, _ in SurrogateView.SECTIONS)

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;
text-align:left}th{background:#f3f3f3}img{max-width:100%;height:auto;border:1px solid #eee}
.muted{color:#666;font-size:.9em}nav ul{columns:2}code{background:#f5f5f5;padding:0 .2em}
"""

# Marks, after load, how many images decoded; headless-browser tests read it from the DOM.
_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-loaded', String(ok));
  var s = document.getElementById('load-status');
  if (s) { s.textContent = ok + ' of ' + imgs.length + ' figures loaded.'; }
});
"""

_DESCRIPTIONS = {
    "progress": "Each marker is a trial at its cumulative cost, coloured by its fidelity (fraction of the "
                "size of a target-fidelity run: data fraction × epochs). Lines: the best value seen so far at "
                "target fidelity and at any fidelity.",
    "learning_curves": "The validation curve of every completed trial, coloured by its training-subset "
                       "fraction. The optimiser also learns from these traces (lower-epoch observations).",
    "slices": "Posterior mean ± 2 sd of the surrogate at target fidelity along each hyperparameter, the others "
              "held at the incumbent. Markers: observed values (at their own fidelity and other settings, so "
              "they need not lie on the curve).",
    "contour": "Posterior mean and sd over the two hyperparameters with the largest total Sobol index.",
    "fidelity_response": "How the surrogate extrapolates across fidelities for the incumbent and the next "
                         "best evaluated configurations, with the observed traces overlaid.",
    "loo": "Leave-one-configuration-out cross-validation at the fitted GP hyperparameters: every "
           "observation of a configuration (all its fidelities and trace points) is held out at once and "
           "predicted from the rest; shown at its highest-fidelity observation. If the model is "
           "calibrated, about 95% of points fall inside their 95% interval.",
    "importance": "Sobol indices of the surrogate mean at target fidelity (Saltelli/Jansen estimators on a "
                  "scrambled Sobol design; first order = main effect, total = with interactions) and the "
                  "GP's inverse ARD lengthscales (unit-cube coordinates).",
    "prior_posterior": "For each hyperparameter the prior has an opinion on: the prior's marginal belief "
                       "about where the optimum lies, against the surrogate posterior's (the argmin of "
                       "posterior samples over a quasi-random candidate set at target fidelity).",
    "fidelity_trust": "Spearman and Kendall rank correlations between each observed lower-fidelity level "
                      "and target fidelity, over configurations seen at both (left), and against the "
                      "surrogate's target-fidelity mean for every configuration seen at the level (right). "
                      "High values mean cheap runs ranked configurations as expensive runs would.",
}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.bool_,)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    return x


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _table(rows: list[list[Any]], header: list[str]) -> str:
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>")
    return "".join(out) + "</table>"


def _section_tables(sid: str, numbers: dict) -> str:
    if sid == "importance":
        imp = numbers["importance"]
        names = list(imp["sobol_total"])
        return _table([[n, imp["sobol_first"][n], imp["sobol_total"][n], imp["inverse_lengthscale"].get(n)]
                       for n in names], ["hyperparameter", "Sobol first order", "Sobol total",
                                         "inverse lengthscale"])
    if sid == "loo":
        loo = numbers["loo"]
        if not loo["available"]:
            return f"<p class='muted'>Not available: {html.escape(str(loo['reason']))}</p>"
        return _table([["configurations held out", loo["n"]],
                       ["coverage of nominal 95% intervals", loo["coverage_95"]],
                       ["RMSE (objective units)", loo["rmse"]],
                       ["mean |z| (latent units; ≈0.8 if calibrated)", loo["mean_abs_z"]]],
                      ["quantity", "value"])
    if sid == "fidelity_trust":
        rows = [[f"{r['data_fraction'][0]:.3g}" + ("" if r["data_fraction"][0] == r["data_fraction"][1]
                                                   else f"–{r['data_fraction'][1]:.3g}"),
                 r["epochs"], r["n"], r["spearman"], r["kendall"], r["n_level"],
                 r.get("spearman_vs_surrogate"), r.get("kendall_vs_surrogate")]
                for r in numbers["fidelity_trust"]]
        if not rows:
            return "<p class='muted'>No lower-fidelity observations yet.</p>"
        return _table(rows, ["data fraction", "epochs", "n (both)", "Spearman ρ", "Kendall τ",
                             "n (level)", "ρ vs surrogate", "τ vs surrogate"])
    if sid == "fidelity_response":
        fh = numbers["summary"].get("fidelity_hyperparameters") or {}
        if fh:
            return "<p class='muted'>Learned fidelity-kernel parameters:</p>" + _table(
                [[k, v] for k, v in fh.items()], ["parameter", "value"])
    if sid == "prior_posterior":
        pp = numbers["prior_posterior"]["parameters"]
        rows = []
        for n, d in pp.items():
            for which in ("prior", "posterior"):
                m = d[which]
                labels = m.get("choices") or m.get("values")
                rows.append([n, which, labels[int(np.argmax(m["prob"]))]])
        if rows:
            return _table(rows, ["hyperparameter", "belief", "mode"])
    return ""


def build_report(view: SurrogateView, out_dir: str | os.PathLike, *, title: str = "mfbo study report",
                 progress: bool = False) -> dict:
    """Write ``report.html`` (self-contained), ``figures/<section>.png`` and ``report.json`` into ``out_dir``.

    Args:
        view: the surrogate view to report.
        out_dir: output directory (created).
        title: page title.
        progress: show a tqdm bar on stderr.

    Returns:
        ``{"html": path, "json": path, "figures": {section: path}, "numbers": dict}``.
    """
    from tqdm.auto import tqdm

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    numbers = _jsonable(view.to_dict())
    parts = []
    figures: dict[str, str] = {}
    for sid, sec_title, meth in tqdm(view.SECTIONS, desc="inspect: figures", disable=not progress,
                                     file=None):
        fig = getattr(view, meth)()
        data = _png(fig)
        path = out / "figures" / f"{sid}.png"
        tmp = path.with_suffix(".png.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        figures[sid] = str(path)
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(
            f"<section id='{sid}'><h2>{html.escape(sec_title)}</h2>"
            f"<p>{html.escape(_DESCRIPTIONS[sid])}</p>"
            f"<img alt='{html.escape(sec_title)}' src='data:image/png;base64,{b64}'>"
            f"{_section_tables(sid, numbers)}</section>"
        )
    tt = numbers["trials"]
    parts.append(
        "<section id='trials'><h2>Trials</h2>"
        f"<p class='muted'>Source: {html.escape(tt['source'])} (objective = final value at the trial's own "
        "fidelity).</p>"
        f"<details><summary>{len(tt['rows'])} trials</summary>{_table(tt['rows'], tt['columns'])}</details>"
        "</section>"
    )
    s = numbers["summary"]
    status = ", ".join(f"{k}: {v}" for k, v in s["status"].items())
    inc_rows = [[k, v] for k, v in s["incumbent"].items()]
    head = (
        f"<h1>{html.escape(title)}</h1><p class='muted'>Generated "
        f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by mfbo inspect. "
        f"<span id='load-status'></span></p>"
        + _table([["trials", f"{s['n_trials']} ({status})"],
                  ["cost spent", f"{s['cost_seconds']:.4g} s = {s['cost_ffe']:.3g} full-fidelity equivalents"],
                  ["target fidelity", ", ".join(f"{k} = {v}" for k, v in s["target_fidelity"].items())],
                  ["trials at target fidelity", s["n_at_target"]],
                  ["best observed at target fidelity", s["best_observed_at_target"]],
                  ["incumbent: predicted at target", f"{s['incumbent_mean']:.4g} ± {s['incumbent_sd']:.2g} (sd)"],
                  ["surrogate", f"{s['model']['botorch_model']} (outcome link: {s['model']['link']})"
                   + (f"; {s['model']['note']}" if s["model"]["note"] else "")]],
                 ["study", ""])
        + "<h3>Incumbent (lowest posterior mean at target fidelity among evaluated configurations)</h3>"
        + _table(inc_rows, ["hyperparameter", "value"])
        + "<nav><h3>Sections</h3><ul>"
        + "".join(f"<li><a href='#{sid}'>{html.escape(t)}</a></li>" for sid, t, _ in view.SECTIONS)
        + "<li><a href='#trials'>Trials</a></li>"
        + "</ul></nav>"
    )
    doc = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        + head + "".join(parts) + f"<script>{_JS}</script></body></html>"
    )
    html_path = out / "report.html"
    json_path = out / "report.json"
    for path, text in ((html_path, doc), (json_path, json.dumps(numbers, indent=1))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return {"html": str(html_path), "json": str(json_path), "figures": figures, "numbers": numbers}
