"""``mfbo inspect`` through the real CLI in a subprocess."""

from __future__ import annotations

import json
import math
import re
import sqlite3

import pytest

from mfbo.inspect import snapshot_study_dir
from tests.inspect.inspect_helpers import run_mfbo


def test_inspect_help_and_missing_directory(tmp_path, capsys):
    import argparse

    from mfbo.inspect._cli import register

    parser = argparse.ArgumentParser(prog="mfbo")
    register(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["inspect", "--help"])
    assert "--json" in capsys.readouterr().out
    r = run_mfbo("inspect", str(tmp_path / "nope"))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mfbo inspect: error:") and "nope" in lines[0]
    assert "Traceback" not in r.stderr


def test_snapshot_is_consistent_while_a_writer_is_active(tmp_path):
    study = tmp_path / "study"
    (study / "results").mkdir(parents=True)
    db = study / "study.db"
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE trials (id INTEGER, value REAL)")
    writer.executemany("INSERT INTO trials VALUES (?, ?)", [(i, i * 0.5) for i in range(10)])
    writer.commit()
    # An open, uncommitted transaction and a half-written result file must not leak into the snapshot.
    writer.execute("INSERT INTO trials VALUES (99, 0.0)")
    (study / "results" / "trial_1.json").write_text('{"status": "completed"}')
    (study / "results" / "trial_2.json.tmp").write_text('{"status": "compl')
    snap = snapshot_study_dir(study, tmp_path / "snap")
    rows = sqlite3.connect(snap / "study.db").execute("SELECT COUNT(*), MAX(id) FROM trials").fetchone()
    assert rows == (10, 9)
    assert (snap / "results" / "trial_1.json").exists()
    assert not (snap / "results" / "trial_2.json.tmp").exists()
    writer.rollback()
    writer.close()


def _study_trials(d):
    from mfbo import Study

    return Study.load(d).trials


def test_inspect_a_stored_study_end_to_end(study_report):
    """``mfbo inspect DIR --out OUT --json`` on a real study: every section, PNG copies, numbers."""
    from mfbo.inspect import SECTION_IDS

    assert study_report["n_completed"] >= 3
    numbers = study_report["numbers"]
    assert set(numbers) == {"summary", "importance", "loo", "fidelity_trust", "curve_trust", "fidelity_trust_headline",
                            "prior_posterior", "trials"}
    assert len(numbers["trials"]["rows"]) == len(_study_trials(study_report["study_dir"]))
    assert "<section id='trials'>" in study_report["html"].read_text()
    assert numbers["summary"]["status"]["completed"] == study_report["n_completed"]
    assert numbers["loo"]["available"] and 0.0 <= numbers["loo"]["coverage_95"] <= 1.0
    out = study_report["out"]
    html = study_report["html"].read_text()
    for sid in SECTION_IDS:
        assert f"<section id='{sid}'>" in html, sid
        png = (out / "figures" / f"{sid}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 2000, sid
    # Self-contained: every image is a data URI and nothing refers to the network.
    imgs = re.findall(r"<img [^>]*src='([^']*)'", html)
    assert len(imgs) == len(SECTION_IDS) and all(s.startswith("data:image/png;base64,") for s in imgs)
    assert not re.search(r"(src|href)=['\"]https?://", html)
    assert json.loads((out / "report.json").read_text()) == numbers
    assert "coverage of nominal 95% intervals" in html
    # The study directory itself is untouched by the report (it went to --out).
    assert not (study_report["study_dir"] / "inspect").exists()


def test_the_report_recommends_what_mfbo_best_gives(study_report):
    """The recommended configuration is best.json's, and its final retraining counts as a target run."""
    best = json.loads((study_report["study_dir"] / "best.json").read_text())
    assert best["final"] is True
    s = study_report["numbers"]["summary"]
    assert s["incumbent_source"] == "final" and s["incumbent"] == best["params"]
    assert s["n_final"] == 1 and s["final"]["observed"] == pytest.approx(best["validation_value"])
    html = study_report["html"].read_text()
    summary = html[html.index("<div id='summary'>"): html.index("<nav>")]
    assert "Use this configuration" in summary and "+ 1 final retraining" in summary
    for name, value in best["params"].items():
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        assert f"<td>{name}</td><td><b>{shown}" in summary, name
    r = run_mfbo("best", str(study_report["study_dir"]), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["params"] == s["incumbent"]


def test_sobol_first_order_does_not_exceed_total_on_a_study(study_report):
    imp = study_report["numbers"]["importance"]
    assert set(imp["sobol_first_se"]) == set(imp["sobol_total"])
    for n, total in imp["sobol_total"].items():
        err = math.hypot(imp["sobol_first_se"][n], imp["sobol_total_se"][n])
        assert imp["sobol_first"][n] <= total + 3 * err, (n, imp)


def test_an_unwritable_output_directory_is_one_clear_line(study_report, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    r = run_mfbo("inspect", str(study_report["study_dir"]), "--out", str(blocker / "report"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write the report to" in lines[0] and "--out" in lines[0], r.stderr


def test_without_a_final_retraining_the_report_recommends_what_the_optimiser_does(study_report, tmp_path):
    import shutil

    from mfbo import Study

    running = tmp_path / "running"
    shutil.copytree(study_report["study_dir"], running)
    (running / "best.json").unlink()
    r = run_mfbo("inspect", str(running), "--out", str(tmp_path / "rep"), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout)["summary"]
    assert s["incumbent_source"] == "optimizer" and s["n_final"] == 0 and s["test"] is None
    assert s["incumbent"] == Study.load(running, readonly=True).optimizer().recommend()
    assert "No held-out test yet" in (tmp_path / "rep" / "report.html").read_text()
