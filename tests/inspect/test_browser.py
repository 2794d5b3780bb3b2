"""The HTML report opens in headless Chromium with no console messages and every image decoded."""

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


def open_in_chromium(html: Path, profile: Path) -> tuple[dict, list[str]]:
    """Load ``html`` headless; return the <body> attributes after load and the page's console lines."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
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
