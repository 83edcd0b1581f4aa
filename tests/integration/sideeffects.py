"""What the worker processes under test write about what they executed, and how they
serve: shared by ``crash_app.py``, ``saga_app.py``, ``pg_app.py`` and ``start_app.py``."""

from __future__ import annotations

import os
from pathlib import Path

from surestep import App


def append(path: Path, line: str) -> None:
    """Append one line with a single write(2): once the call returns the line is in the
    page cache, so a SIGKILL right after it cannot lose the line (a power cut could)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def note(log_dir: Path, line: str) -> None:
    """Append ``line`` to this process's log, ``LOG_DIR/<pid>.log``."""
    append(log_dir / f"{os.getpid()}.log", line)


def serve(app: App, concurrency: int) -> int:
    """Run a worker until SIGTERM (the graceful shutdown), then close the App."""
    try:
        app.worker(concurrency=concurrency, poll_interval=0.02).run()
    finally:
        app.close()
    return 0
