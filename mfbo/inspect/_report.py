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
.muted{color:#666;font-size:.9em}nav ul{columns:3;margin:.2em 0}code{background:#f5f5f5;padding:0 .2em}
h1{margin-top:0}.sub{margin:.1em 0 .6em}
#summary{display:flex;gap:.6em;margin:.3em 0 .8em;align-items:flex-start}
#summary .col{flex:1 1 0;min-width:0;display:flex;flex-direction:column;gap:.6em}
@media (max-width:900px){#summary{flex-direction:column;align-items:stretch}}
.card{border:1px solid #d8d8d8;border-radius:6px;padding:.35em .7em .45em;background:#fbfbfb}
.card h2{font-size:1.05em;margin:.1em 0 .3em;border:0;padding:0}
.card table{margin:.2em 0;font-size:.84em;width:100%;line-height:1.25}.card td,.card th{padding:.12em .4em}
.card p{margin:.25em 0;font-size:.9em;line-height:1.35}.big{font-size:1.15em;font-weight:600}
.warn{background:#fff4e0;border:1px solid #f0b25a;border-radius:4px;padding:.25em .5em;font-size:.86em;margin:.3em 0}
.good{color:#1b7a2d;font-weight:600}.bad{color:#b3261e;font-weight:600}.meh{color:#8a5a00;font-weight:600}
.rng{color:#777;font-size:.9em}
nav h3{margin:.3em 0;font-size:1em}
"""

# Marks, after load, how many images decoded and where the summary lies (CSS px from the top of the
# page); headless-browser tests read them from the DOM.
_JS = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-loaded', String(ok));
  var s = document.getElementById('load-status');
  if (s) { s.textContent = ok + ' of ' + imgs.length + ' figures loaded.'; }
  var sm = document.getElementById('summary');
  if (sm) {
    var r = sm.getBoundingClientRect();
    document.body.setAttribute('data-summary-top', String(Math.round(r.top + window.scrollY)));
    document.body.setAttribute('data-summary-bottom', String(Math.round(r.bottom + window.scrollY)));
    document.body.setAttribute('data-viewport', window.innerWidth + 'x' + window.innerHeight);
  }
});
"""

_DESCRIPTIONS = {
    "progress": "Each marker is a trial at its cumulative cost, coloured by its fidelity (fraction of the "
                "size of a target-fidelity run: data fraction × epochs). Lines: the best value seen so far at "
                "target fidelity and at any fidelity.",
    "learning_curves": "The validation curve of every completed trial, coloured by its training-subset "
                       "fraction. The optimiser also learns from these traces (lower-epoch observations).",
    "slices": "Posterior mean ± 2 sd of the surrogate at target fidelity along each hyperparameter, the others "
              "held at the recommended configuration (integer hyperparameters at whole numbers only). Markers: "
              "observed values (at their own fidelity and other settings, so they need not lie on the curve).",
    "contour": "Posterior mean and sd over the two numeric hyperparameters with the largest total Sobol index, "
               "the others at the recommended configuration (integer axes as cells, one per whole number).",
    "fidelity_response": "How the surrogate extrapolates across fidelities for the recommended configuration "
                         "and the next best evaluated configurations, with the observed traces overlaid.",
    "loo": "Leave-one-configuration-out cross-validation at the fitted GP hyperparameters: every "
           "observation of a configuration (all its fidelities and trace points) is held out at once and "
           "predicted from the rest; shown at its highest-fidelity observation. If the model is "
           "calibrated, about 95% of points fall inside their 95% interval.",
    "importance": "Sobol indices of the surrogate mean at target fidelity (Saltelli/Jansen estimators on a "
                  "scrambled Sobol design, centred values; first order = main effect, total = with "
                  "interactions, so first order ≤ total up to the Monte-Carlo error shown as ± one bootstrap "
                  "standard error) and the GP's inverse ARD lengthscales (unit-cube coordinates).",
    "prior_posterior": "For each hyperparameter the prior has an opinion on: the prior's marginal belief "
                       "about where the optimum lies, against the surrogate posterior's (the argmin of "
                       "posterior samples over a quasi-random candidate set at target fidelity).",
    "fidelity_trust": "Spearman and Kendall rank correlations, shown where there is data: each observed "
                      "lower-fidelity level against target fidelity over configurations seen at both; each "
                      "epoch against a later reference epoch within the same trials' learning curves; and "
                      "each level against the surrogate's target-fidelity mean for every configuration seen "
                      "there (weak evidence: the surrogate learned from those runs). High values mean cheap "
                      "runs ranked configurations as expensive runs would.",
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
        fse, tse = imp.get("sobol_first_se") or {}, imp.get("sobol_total_se") or {}
        return _table([[n, f"{imp['sobol_first'][n]:.3f} ± {fse.get(n, 0.0):.3f}",
                        f"{imp['sobol_total'][n]:.3f} ± {tse.get(n, 0.0):.3f}", imp["inverse_lengthscale"].get(n)]
                       for n in names], ["hyperparameter", "Sobol first order (± MC error)",
                                         "Sobol total (± MC error)", "inverse lengthscale"])
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


def _unit(label: str) -> str:
    """The unit in an objective label such as "validation energy MAE (eV/atom)" ("" when none)."""
    import re

    m = re.search(r"\(([^()]*)\)\s*$", label or "")
    return m.group(1) if m and ("eV" in m.group(1) or "Å" in m.group(1)) else ""


def _num(v: Any, unit: str = "") -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" + (f" {html.escape(unit)}" if unit else "")


def _range(p) -> str:
    if p.type == "categorical":
        return "{" + ", ".join(html.escape(str(c)) for c in p.choices) + "}"
    lo, hi = (int(p.low), int(p.high)) if p.is_integer else (f"{p.low:.4g}", f"{p.high:.4g}")
    return f"[{lo}, {hi}]" + (" log" if p.log else "")


_UNITS = {"sigma_min": "Å", "sigma_max": "Å", "cutoff": "Å"}


def _card_config(view: SurrogateView, s: dict) -> str:
    inc = s["incumbent"]
    source = {"final": "retrained at target fidelity and tested (best.json, as <code>mfbo best</code>)",
              "optimizer": "the optimiser's recommendation (no final retraining yet)",
              "surrogate": "the evaluated configuration with the lowest predicted value + 1 sd at target "
                           "fidelity (no final retraining yet)"}[s["incumbent_source"]]
    flagged = {b["name"]: b for b in s.get("on_bounds") or []}
    rows = []
    for p in view.space.design_parameters:
        v = inc.get(p.name)
        val = (f"{v:.4g}" if isinstance(v, float) else html.escape(str(v)))
        if _UNITS.get(p.name):
            val += " " + _UNITS[p.name]
        note = ""
        if p.name in flagged:
            note = f" <span class='bad' title='on the {flagged[p.name]['side']} bound'>⚠ {flagged[p.name]['side']} bound</span>"
        rows.append(f"<tr><td>{html.escape(p.name)}</td><td><b>{val}</b>{note}</td><td class='rng'>{_range(p)}</td></tr>")
    warn = ""
    if flagged:
        names = ", ".join(f"{html.escape(n)} = {_fmt(b['value'])} ({b['side']} end of "
                          f"[{b['low']:.4g}, {b['high']:.4g}])" for n, b in flagged.items())
        warn = (f"<div class='warn'>On the edge of the searched range: {names}. The optimum may lie "
                "outside it: widen the range (or accept the limit) and run again.</div>")
    return ("<div class='card' id='card-config'><h2>Use this configuration</h2>"
            f"<p class='muted'>{source}</p>{warn}"
            "<table><tr><th>hyperparameter</th><th>value</th><th>searched</th></tr>" + "".join(rows) + "</table></div>")


def _verdict(rows: list[dict]) -> str:
    """One line per kind (energy, forces): better or worse than the most demanding baseline."""
    out = []
    for kind, keys, bname in (("Energies", ("energy_mae_per_atom", "energy_mae"), "linear_fit"),
                              ("Forces", ("force_mae_free", "force_mae"), "zero_forces")):
        r = next((r for k in keys for r in rows if r["metric"] == k and bname in r["baselines"]), None)
        if r is None:
            continue
        b = r["baselines"][bname]
        if b["ratio"] is None:
            continue
        better = b["ratio"] < 1
        out.append(f"<span class='{'good' if better else 'bad'}'>{kind}: {'better' if better else 'worse'} than "
                   f"{html.escape(b['label'])}</span> ({b['ratio']:.2f}×)")
    return "<p>" + "; ".join(out) + ".</p>" if out else ""


def _card_quality(s: dict, unit: str, label: str) -> str:
    test = s.get("test")
    out = ["<div class='card' id='card-quality'><h2>How good it is</h2>"]
    if test:
        n = test.get("n_images")
        rows_all = test["rows"]
        out.append(_verdict(rows_all))
        # The per-atom energy and the free-atom force errors in the table; the others in a line below.
        shown = [r for r in rows_all if r["metric"] in ("energy_mae_per_atom", "force_mae_free")] or rows_all
        rest = [r for r in rows_all if r not in shown]
        body = []
        for r in shown:
            bl = list(r["baselines"].values()) or [None]
            for i, b in enumerate(bl):
                first = (f"<td rowspan='{len(bl)}'>{html.escape(r['label'])} ({html.escape(r['unit'])})</td>"
                         f"<td rowspan='{len(bl)}'><b>{_num(r['model'])}</b></td>") if i == 0 else ""
                if b is None:
                    body.append(f"<tr>{first}<td class='muted'>none given</td><td></td></tr>")
                    continue
                ratio = b["ratio"]
                cls = "good" if ratio is not None and ratio < 1 else "bad"
                body.append(f"<tr>{first}<td>{html.escape(b['label'])}: {_num(b['value'])}</td>"
                            f"<td class='{cls}'>{'–' if ratio is None else f'{ratio:.2f}×'}</td></tr>")
        out.append("<table><tr><th>test error</th><th>model</th><th>baseline</th><th>model / baseline</th></tr>"
                   + "".join(body) + "</table>")
        if rest:
            out.append("<p class='muted'>Also: " + "; ".join(
                f"{html.escape(r['label'])} {_num(r['model'], r['unit'])}"
                + "".join(f", {b['ratio']:.2f}× {html.escape(b['label'])}" for b in r["baselines"].values()
                          if b["ratio"] is not None) for r in rest) + ".</p>")
        out.append(f"<p class='muted'>Held-out test set{f' of {n} images' if n else ''}; below 1×: better "
                   "than the baseline."
                   + ("" if any(r["baselines"] for r in rows_all) else
                      " best.json has no <code>test_baselines</code> to compare with.") + "</p>")
    else:
        out.append("<p>No held-out test yet: the study has not retrained its recommendation at target "
                   "fidelity (it is running, or ran with the final retraining off).</p>")
    f = s.get("final")
    if f:
        out.append(f"<p>{html.escape(label[:1].upper() + label[1:])}, final retraining: "
                   f"<b>{_num(f['observed'], unit)}</b>.</p>")
        if f.get("z") is not None:
            pb = f["prediction_before"]
            cls = "good" if abs(f["z"]) <= 2 else "bad"
            out.append(f"<p>Predicted before the retraining: {_num(pb['mean'], unit)} ± {_num(pb['sd'], unit)}; "
                       f"<span class='{cls}'>z = {f['z']:.2f}</span> (within 2 sd: the surrogate is calibrated "
                       "at target fidelity here).</p>")
    elif s.get("best_observed_at_target") is not None:
        out.append(f"<p>Best {html.escape(label)} observed at target fidelity: "
                   f"<b>{_num(s['best_observed_at_target'], unit)}</b>.</p>")
    elif s.get("incumbent_mean") is not None:
        out.append(f"<p>No run at target fidelity yet, so no result to show. The recommendation is predicted "
                   f"<b>{_num(s['incumbent_mean'], unit)}</b> ± {_num(s['incumbent_sd'], unit)} at target "
                   "fidelity.</p>")
    out.append("</div>")
    return "".join(out)


def _card_certainty(s: dict, loo: dict, unit: str) -> str:
    out = ["<div class='card' id='card-certainty'><h2>How sure the model is</h2>"]
    f = s.get("final")
    if f:
        ok = f["inside_95"]
        out.append(
            f"<p>Predicted for the recommendation at {f['epochs']} epochs, data fraction {f['data_fraction']:.3g}: "
            f"<b>{_num(f['mean'], unit)}</b> (95%: {_num(f['lower'])}–{_num(f['upper'])}); the final "
            f"retraining gave <b>{_num(f['observed'], unit)}</b>, "
            + ("<span class='good'>inside</span>" if ok else "<span class='bad'>outside</span>")
            + " the interval.</p>"
            + ("" if ok or s.get("n_at_target") else
               "<p class='muted'>No search trial ran at target fidelity, so this prediction was an "
               "extrapolation from cheaper runs.</p>"))
    else:
        iv = s.get("incumbent_interval") or {}
        out.append(f"<p>Predicted at target fidelity for the recommendation: <b>{_num(s['incumbent_mean'], unit)}</b> "
                   f"(95%: {_num(iv.get('lower'))}–{_num(iv.get('upper'))}).</p>"
                   + ("" if s.get("n_at_target") else
                      "<p class='muted'>No run at target fidelity yet: this is an extrapolation from cheaper "
                      "runs.</p>"))
    if loo.get("available") and loo.get("coverage_95") is not None:
        cov = loo["coverage_95"]
        cls = "good" if cov >= 0.85 else "meh" if cov >= 0.7 else "bad"
        verdict = ("calibrated" if cov >= 0.85 else "somewhat over-confident" if cov >= 0.7 else "over-confident")
        out.append(f"<p>Leave-one-configuration-out: <span class='{cls}'>{cov:.0%}</span> of {loo['n']} held-out "
                   f"configurations inside their 95% interval ({verdict} at the trials' own fidelities; "
                   "nominal 95%).</p>")
    else:
        out.append(f"<p class='muted'>Leave-one-out not available: {html.escape(str(loo.get('reason')))}</p>")
    out.append("</div>")
    return "".join(out)


def _card_importance(imp: dict) -> str:
    total, first = imp["sobol_total"], imp["sobol_first"]
    tse = imp.get("sobol_total_se") or {}
    names = sorted(total, key=lambda n: -total[n])
    little = [n for n in names if total[n] < 0.05]
    top = [n for n in names if n not in little][:4] or names[:1]
    rows = []
    for n in top:
        w = max(0.0, min(1.0, total[n])) * 40
        rows.append(f"<tr><td>{html.escape(n)}</td><td style='white-space:nowrap'><span style='display:inline-block;"
                    f"height:.7em;width:{w:.0f}px;background:#4c72b0'></span> {total[n]:.2f} ± {tse.get(n, 0.0):.2f}"
                    f"</td><td>{first[n]:.2f}</td></tr>")
    out = ["<div class='card' id='card-importance'><h2>What matters</h2>",
           "<table><tr><th>hyperparameter</th><th>total Sobol index</th><th>alone</th></tr>",
           "".join(rows), "</table>"]
    if little:
        out.append(f"<p class='muted'>Little effect (total &lt; 0.05): {html.escape(', '.join(little))}.</p>")
    out.append("<p class='muted'>Share of the variance of the predicted target-fidelity value over the "
               "searched space, with interactions (total) and alone (first order); ± Monte-Carlo error.</p></div>")
    return "".join(out)


def _card_trust(h: dict | None, s: dict) -> str:
    out = ["<div class='card' id='card-trust'><h2>Do cheap runs predict expensive ones?</h2>"]
    if h is None:
        out.append("<p><span class='big meh'>not measured</span>: no three configurations were run both at a "
                   "lower fidelity and at target, and fewer than four trials ran two epochs or more.</p>")
    else:
        rho = h["rho"]
        verdict, cls = (("yes", "good") if rho >= 0.7 else ("partly", "meh") if rho >= 0.3 else ("no", "bad"))
        few = " (few: weak evidence)" if h["n_pairs"] < 5 else ""
        ep = lambda e: f"{e} epoch" + ("" if e == 1 else "s")  # noqa: E731
        if h["against"] == "observed":
            lo, hi = h["data_fraction"]
            level = (f"data fraction {lo:.3g}" if lo == hi else f"data fraction {lo:.3g}–{hi:.3g}") + ", " + ep(h["epochs"])
            out.append(f"<p><span class='big {cls}'>{verdict}</span>: runs at {level} ranked {h['n_pairs']} "
                       f"configurations like their target-fidelity runs (Spearman ρ = <b>{rho:.2f}</b>){few}.</p>")
        elif h["against"] == "curves":
            out.append(f"<p><span class='big {cls}'>{verdict}, for epochs</span>: after {ep(h['epochs'])}, "
                       f"{h['n_pairs']} trials ranked as after {ep(h['reference_epochs'])} of their own learning "
                       f"curves (Spearman ρ = <b>{rho:.2f}</b>){few}.</p>"
                       "<p class='muted'>No three configurations ran at both a lower fidelity and at target, so "
                       "the data-fraction fidelity is not measured directly.</p>")
        else:
            out.append(f"<p><span class='big meh'>not measured</span>: no configuration ran at two fidelities. "
                       f"Against the surrogate's target-fidelity prediction, ρ = {rho:.2f} over {h['n_pairs']} "
                       "configurations, which is weak evidence: the surrogate learned from these runs.</p>")
    tf = s["target_fidelity"]
    out.append(f"<p class='muted'>Target fidelity: {html.escape(', '.join(f'{k} = {v}' for k, v in tf.items()))}. "
               "Details: <a href='#fidelity_trust'>Fidelity trust</a>.</p></div>")
    return "".join(out)


def _card_search(s: dict) -> str:
    status = ", ".join(f"{v} {k}" for k, v in s["status"].items())
    final = ("1 final retraining" if s.get("n_final") else "no final retraining")
    m = s["model"]
    return ("<div class='card' id='card-search'><h2>The search</h2>"
            f"<p>{s['n_trials']} trials ({html.escape(status)}), {s['cost_seconds']:.4g} s of training = "
            f"{s['cost_ffe']:.3g} target-fidelity runs' worth.</p>"
            f"<p>Runs at target fidelity: {s['n_at_target']} during the search + {final}.</p>"
            f"<p class='muted'>Surrogate: {html.escape(str(m['botorch_model']))} (outcome link: {html.escape(str(m['link']))})"
            + (f"; {html.escape(str(m['note']))}" if m.get("note") else "") + "</p></div>")


def _summary_html(view: SurrogateView, numbers: dict) -> str:
    """The first screen: what to use, how good it is, how sure the model is, what matters, whether
    cheap runs predict expensive ones, and the search, in three columns."""
    s = numbers["summary"]
    unit = _unit(view.objective_name)
    label = view.objective_name.rsplit(" (", 1)[0] if unit else view.objective_name
    cols = [[_card_config(view, s), _card_search(s)],
            [_card_quality(s, unit, label), _card_importance(numbers["importance"])],
            [_card_certainty(s, numbers["loo"], unit), _card_trust(numbers.get("fidelity_trust_headline"), s)]]
    return "<div id='summary'>" + "".join("<div class='col'>" + "".join(c) + "</div>" for c in cols) + "</div>"


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
    head = (
        f"<h1>{html.escape(title)}</h1><p class='muted sub'>Generated "
        f"{_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by mfbo inspect; objective: "
        f"{html.escape(view.objective_name)}, lower is better. <span id='load-status'></span></p>"
        + _summary_html(view, numbers)
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
