"""The App the saga crash test runs in real worker processes.

``python saga_app.py URL LOG_DIR`` runs ``app.worker(concurrency=CONCURRENCY).run()``
on the database ``URL`` (SQLite or PostgreSQL) until SIGTERM. The test process imports
:func:`build` (by file path) to start runs on the same database.

The workflow ``saga`` does ``STEPS`` compensable steps (``step_i``, undone by
``undo_i``) and then a step that gives up, so every run fails and undoes its steps in
reverse order. Side effects go to ``LOG_DIR/<pid>.log``, one line per event, four
fields: ``<key> <action> <i> <event>``.

* ``<run_id>:<p> do <i> start|done`` around ``step_i`` (at position ``p = i``);
* ``<run_id>:<-(i+1)> undo <i> start|done`` around ``undo_i``, slow enough that a
  SIGKILL lands while some undo is in flight;
* ``<run_id>:<STEPS> give_up - start`` before the failing step raises;
* ``<run_id> workflow - enter`` each time the workflow function itself is called, so the
  test can tell a resumed compensation from a replay of the workflow.

The step keys are ``current_step().idempotency_key``. One file per process: its lines
are in the order that process wrote them.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import sideeffects  # tests/integration/sideeffects.py

from surestep import App, Retry, current_step

STEPS = 4
CONCURRENCY = 4
UNDO_SECONDS = (0.1, 0.3)


def build(url: str, log_dir: str | Path) -> App:
    """An App with the workflow ``saga`` on ``url``."""
    app = App(url)
    log_dir = Path(log_dir)

    def note(key: str, action: str, i: int | None, event: str) -> None:
        index = "-" if i is None else str(i)
        sideeffects.note(log_dir, f"{key} {action} {index} {event}")

    def compensable(i: int) -> Callable[[str], str]:
        @app.step(name=f"undo_{i}")
        def undo(order: str) -> None:
            key = current_step().idempotency_key
            note(key, "undo", i, "start")
            time.sleep(random.uniform(*UNDO_SECONDS))
            note(key, "undo", i, "done")

        @app.step(name=f"step_{i}", compensate=undo)
        def do(order: str) -> str:
            key = current_step().idempotency_key
            note(key, "do", i, "start")
            note(key, "do", i, "done")
            return f"{order}/{i}"

        return do

    steps = [compensable(i) for i in range(STEPS)]

    # A step that gives up at once: the run fails for good and compensates.
    @app.step(name="give_up", retry=Retry(give_up_on=(ValueError,)))
    def give_up(order: str) -> None:
        note(current_step().idempotency_key, "give_up", None, "start")
        raise ValueError(f"order {order} cannot be completed")

    @app.workflow(name="saga")
    def saga(order: str) -> None:
        note(order, "workflow", None, "enter")
        for step in steps:
            step(order)
        give_up(order)

    return app


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} URL LOG_DIR", file=sys.stderr)
        return 2
    return sideeffects.serve(build(argv[1], argv[2]), CONCURRENCY)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
