"""The App the schedule tests run in real worker processes, on a clock the test moves.

``python schedule_app.py URL CLOCK_FILE LOG_DIR CATCH_UP`` runs a worker on the database
``URL`` until SIGTERM. Its App's clock reads epoch seconds from ``CLOCK_FILE`` (which
the test rewrites to move time for every process at once: a FakeClock cannot be shared
between processes). Schedule ``tick`` fires every 15 minutes with the catch-up policy
``CATCH_UP``; each execution of its step writes ``"<fired_at> ran"`` to
``LOG_DIR/<pid>.log``, each fire this process started ``"<run id> started"``, and its
first sweep ``"<pid> looking"``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime
from pathlib import Path

import sideeffects  # tests/integration/sideeffects.py

from surestep import App


class FileClock:
    """Epoch seconds read from a file that the test rewrites (atomically, by rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def now(self) -> float:
        return float(self.path.read_text())

    async def sleep(self, seconds: float) -> None:
        # Never moves time: waits (in real time) until the test has moved it.
        until = self.now() + seconds
        while self.now() < until:
            await asyncio.sleep(0.01)


def set_time(path: Path, epoch: float) -> None:
    """Move every process's clock to ``epoch``."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    partial.write_text(repr(epoch))
    partial.replace(path)


def build(url: str, clock_file: Path, log_dir: Path, catch_up: str) -> App:
    app = App(url, clock=FileClock(clock_file))

    @app.step(name="note")
    def note(fired_at: str) -> None:
        sideeffects.note(log_dir, f"{fired_at} ran")

    @app.schedule("*/15 * * * *", name="tick", catch_up=catch_up)
    def tick(fired_at: datetime) -> None:
        note(fired_at.isoformat())

    sweep = app.schedules.sweep
    swept = []

    def noting_sweep(now: float | None = None, actor: str | None = None) -> list[str]:
        started = sweep(now, actor)
        if not swept:  # the worker is in its loop (its signal handlers installed)
            swept.append(True)
            sideeffects.note(log_dir, f"{os.getpid()} looking")
        for run_id in started:
            sideeffects.note(log_dir, f"{run_id} started")
        return started

    app.schedules.sweep = noting_sweep  # type: ignore[method-assign]
    return app


def main() -> int:
    url, clock_file, log_dir, catch_up = sys.argv[1:5]
    app = build(url, Path(clock_file), Path(log_dir), catch_up)
    try:
        # Leases far longer than any jump of the test's clock: a jump of an hour must not
        # make the other workers' runs look abandoned.
        app.worker(concurrency=4, lease_seconds=1e7, poll_interval=0.02).run()
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
