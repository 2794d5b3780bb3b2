"""Lazy re-exports for package ``__init__`` modules: names that need torch are imported on first use.

Keeps ``import mfbo.<package>`` (and so the ``mfbo`` CLI's start-up) free of torch's import cost.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, names: Mapping[str, str], public: Iterable[str],
                 namespace: dict) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` resolving ``names`` (name -> defining module) lazily.

    Args:
        package: the package's dotted name (for the error message).
        names: exported name -> module that defines it.
        public: the package's ``__all__`` (what ``dir()`` lists).
        namespace: the package's ``globals()``; a resolved name is cached there.
    """
    listed = sorted(public)

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return listed

    return __getattr__, __dir__
