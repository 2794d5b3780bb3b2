"""mfbo.inspect sits above mfbo.study: it never imports it (the study hands it a loader)."""

from __future__ import annotations

import ast
from pathlib import Path

import mfbo.inspect

PACKAGE = Path(mfbo.inspect.__file__).parent


def _imported_modules(path: Path) -> set[str]:
    """Every module an inspect source file imports, at any depth (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            if node.module == "mfbo":
                out |= {f"mfbo.{a.name}" for a in node.names}
    return out


def test_inspect_never_imports_study():
    sources = sorted(PACKAGE.glob("*.py"))
    assert len(sources) >= 5
    offending = {p.name: sorted(m for m in _imported_modules(p) if m == "mfbo.study" or m.startswith("mfbo.study."))
                 for p in sources}
    assert {k: v for k, v in offending.items() if v} == {}


def test_the_scan_sees_function_level_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from mfbo.study import Study\n    from mfbo import study\n")
    assert {"mfbo.study", "mfbo"} <= _imported_modules(src)
