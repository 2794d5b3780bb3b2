"""The HTML report opens in headless Chromium with no console messages, every image decoded and its
summary on the first screen."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "") if p and Path(p).exists()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not installed (.ci/setup-chromium.sh installs "
                                                          "Debian's chromium package)")


def open_in_chromium(html: Path, profile: Path, window: str = "1280,1000") -> tuple[dict, list[str]]:
    """Load ``html`` headless in a ``window`` (CSS px, "width,height") window; return the <body>
    attributes after load and the page's console lines."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           f"--window-size={window}",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom", html.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", proc.stdout)
    assert body, proc.stdout[:500]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln]
    return attrs, console


def test_report_opens_without_console_errors_and_all_images_load(study_report, tmp_path):
    from mfbo.inspect import SECTION_IDS

    attrs, console = open_in_chromium(study_report["html"], tmp_path / "profile")
    assert console == []
    assert attrs.get("data-images-total") == str(len(SECTION_IDS))
    assert attrs.get("data-images-loaded") == attrs.get("data-images-total")


def test_the_check_catches_a_broken_page(tmp_path):
    # The same check must fail on a page with a script error and an undecodable image.
    from mfbo.inspect._report import _JS

    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><img src='data:image/png;base64,AAAA'>"
                   f"<script>undefinedFunction();</script><script>{_JS}</script></body></html>")
    attrs, console = open_in_chromium(bad, tmp_path / "profile")
    assert any("undefinedFunction" in ln for ln in console)
    assert attrs.get("data-images-total") == "1" and attrs.get("data-images-loaded") == "0"


@pytest.mark.parametrize("window", ["1280,1000", "1024,768"])
def test_the_summary_is_the_first_screen(study_report, tmp_path, window):
    """What to use, how good, how sure, what matters and fidelity trust: all above 1000 px."""
    attrs, console = open_in_chromium(study_report["html"], tmp_path / "profile", window=window)
    assert console == []
    # The page is laid out at the window's width (the height left for it is less: browser frame).
    assert attrs.get("data-viewport", "").split("x")[0] == window.split(",")[0]
    assert int(attrs["data-summary-top"]) < 150
    assert int(attrs["data-summary-bottom"]) <= 1000, attrs
    html = study_report["html"].read_text()
    summary = html[html.index("<div id='summary'>"): html.index("<nav>")]
    for card in ("card-config", "card-quality", "card-certainty", "card-importance", "card-trust", "card-search"):
        assert f"id='{card}'" in summary, card
