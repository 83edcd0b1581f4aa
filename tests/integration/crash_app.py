"""The App the crash tests run in real worker processes.

``python crash_app.py DB_PATH LOG_DIR`` runs ``app.worker(concurrency=8).run()`` on the
SQLite file ``DB_PATH`` until SIGTERM. The test process imports :func:`build` (by file
path) to start runs on the same file and to read the same workflow definitions.

Every step attempt writes ``"<idempotency_key> start"`` to ``LOG_DIR/<pid>.log`` before
it does its work and ``"<idempotency_key> done"`` after, so the test can see exactly
which process executed which step and how far it got. One file per process: the lines
of a process are in the order it wrote them, and the test knows which worker (killed or
not) each pid was.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import sideeffects  # tests/integration/sideeffects.py

from surestep import App, Retry, current_step

STEPS = 8
CONCURRENCY = 8
RETRY_DELAY = 1.0


def expected_step_output(seed: int, i: int) -> int:
    return seed * 100 + i


def expected_output(seed: int) -> int:
    return sum(expected_step_output(seed, i) for i in range(STEPS))


def build(db_path: str | Path, log_dir: str | Path) -> App:
    """An App with the workflows ``crashy`` and ``backoff`` on the SQLite file ``db_path``."""
    app = App(f"sqlite:///{db_path}")
    log_dir = Path(log_dir)

    def note(event: str) -> None:
        sideeffects.note(log_dir, f"{current_step().idempotency_key} {event}")

    @app.step(name="work")
    def work(seed: int, i: int) -> int:
        note("start")
        # Long enough that a SIGKILL usually lands while some steps are in flight.
        time.sleep(random.uniform(0.005, 0.03))
        note("done")
        return expected_step_output(seed, i)

    @app.workflow(name="crashy")
    def crashy(seed: int) -> int:
        return sum(work(seed, i) for i in range(STEPS))

    @app.step(
        name="flaky_call",
        retry=Retry(max_attempts=3, initial_delay=RETRY_DELAY, jitter=False),
    )
    def flaky_call(value: str) -> str:
        note("start")
        if current_step().attempt == 1:
            note("failed")
            raise ConnectionError("the first attempt always loses its connection")
        note("done")
        return value.upper()

    @app.workflow(name="backoff")
    def backoff(value: str) -> str:
        return flaky_call(value)

    return app


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} DB_PATH LOG_DIR", file=sys.stderr)
        return 2
    return sideeffects.serve(build(argv[1], argv[2]), CONCURRENCY)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
