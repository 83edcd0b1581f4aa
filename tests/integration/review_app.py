"""The App the review tests run in real worker processes.

``python review_app.py URL LOG_DIR`` runs ``app.worker(...).run()`` on the database
``URL`` (a SQLite file or a PostgreSQL schema) until SIGTERM. The test process imports
:func:`build` (by file path) to start runs and decide their review tasks.

Workflow ``reviewed(n, slow)``: step ``prepare`` (position 0), a review of kind
``check`` (position 1), then step ``book`` (position 2), which sleeps ``slow`` seconds.
Workflow ``expiring(n)``: the same with an SLA of :data:`SLA` seconds that rejects on
expiry. Each step attempt writes ``"<idempotency_key> start <json args>"`` and
``"<idempotency_key> done"`` to ``LOG_DIR/<pid>.log`` (see ``sideeffects.py``).

With ``REVIEW_HOOK_URL`` and ``REVIEW_HOOK_KEY`` in the environment the App sends review
events there (``app.notify_reviews``): the secret reaches the process as a deployment
would pass it, never through the database.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import sideeffects  # tests/integration/sideeffects.py

import surestep
from surestep import App, current_step

SLA = 1.5
CONCURRENCY = 8


def build(url: str, log_dir: str | Path) -> App:
    app = App(url)
    log_dir = Path(log_dir)

    def note(event: str, *args: Any) -> None:
        line = f"{current_step().idempotency_key} {event}"
        if args:
            line += " " + json.dumps(args, separators=(",", ":"))
        sideeffects.note(log_dir, line)

    @app.step(name="prepare")
    def prepare(n: int) -> dict[str, int]:
        note("start", n)
        note("done")
        return {"amount": n}

    @app.step(name="book")
    def book(outcome: str, data: Any, slow: float) -> str:
        note("start", outcome, data)
        time.sleep(slow)
        note("done")
        return f"{outcome} {json.dumps(data)}"

    @app.workflow(name="reviewed")
    def reviewed(n: int, slow: float) -> str:
        decision = surestep.request_review(prepare(n), kind="check", groups=["finance"])
        return book(decision.outcome, decision.data, slow)

    @app.workflow(name="expiring")
    def expiring(n: int) -> str:
        decision = surestep.request_review(
            prepare(n),
            kind="check",
            groups=["finance"],
            sla=timedelta(seconds=SLA),
            on_expiry="reject",
        )
        return book(decision.outcome, decision.data, 0.0)

    if os.environ.get("REVIEW_HOOK_URL"):
        app.notify_reviews(os.environ["REVIEW_HOOK_URL"], secret=os.environ["REVIEW_HOOK_KEY"])
    return app


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} URL LOG_DIR", file=sys.stderr)
        return 2
    return sideeffects.serve(build(argv[1], argv[2]), CONCURRENCY)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
