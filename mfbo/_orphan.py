"""Worker processes end themselves when what they work for is gone, so no orphan keeps computing."""

from __future__ import annotations

import os
import threading
import time

__all__ = ["exit_when_orphaned"]


def exit_when_orphaned(interval: float = 0.5, watch_pid: int | None = None) -> None:
    """Start a daemon thread that ends this process (exit status 70) once its parent is gone, or once
    ``watch_pid`` (e.g. a study's driver, which may not be the parent) no longer exists.

    Args:
        interval: seconds between checks.
        watch_pid: another process whose end also ends this one; None: the parent only.
    """
    parent = os.getppid()

    def loop():
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(70)
            if watch_pid:
                try:
                    os.kill(watch_pid, 0)
                except ProcessLookupError:
                    os._exit(70)
                except PermissionError:  # exists, owned by someone else
                    pass

    threading.Thread(target=loop, name="mfbo-orphan-watch", daemon=True).start()
