"""The App the crash tests run in real worker processes.

``python crash_app.py DB_PATH LOG_DIR [CONCURRENCY [PAUSE]]`` runs
``app.worker(concurrency=CONCURRENCY).run()`` (8 by default) on the SQLite file
``DB_PATH`` until SIGTERM; each step attempt sleeps up to ``PAUSE`` seconds (0.03 by
default; with 0 and many runs at once, nearly every checkpoint is part of a group
commit). The test process imports :func:`build` (by file path) to start runs on the
same file and to read the same workflow definitions.

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


def build(db_path: str | Path, log_dir: str | Path, pause: float = 0.03) -> App:
    """An App with the workflows ``crashy`` and ``backoff`` on the SQLite file ``db_path``."""
    app = App(f"sqlite:///{db_path}")
    log_dir = Path(log_dir)

    def note(event: str) -> None:
        sideeffects.note(log_dir, f"{current_step().idempotency_key} {event}")

    @app.step(name="work")
    def work(seed: int, i: int) -> int:
        note("start")
        # Long enough that a SIGKILL usually lands while some steps are in flight.
        if pause:
            time.sleep(random.uniform(0.005, pause))
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
    if not 3 <= len(argv) <= 5:
        print(f"usage: {argv[0]} DB_PATH LOG_DIR [CONCURRENCY [PAUSE]]", file=sys.stderr)
        return 2
    concurrency = int(argv[3]) if len(argv) > 3 else CONCURRENCY
    pause = float(argv[4]) if len(argv) > 4 else 0.03
    return sideeffects.serve(build(argv[1], argv[2], pause), concurrency)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
