"""The App the PostgreSQL fault tests run in real worker processes.

``python pg_app.py URL LOG_DIR [options]`` runs one worker on the PostgreSQL database
``URL`` until SIGTERM (graceful) or SIGKILL; the lease, heartbeat and step timings come
from the options (``--help``). The test process imports :func:`build` (by file path) to
start runs on the same database and to read the same workflow definitions.

Every step attempt writes ``"<idempotency_key> start <token>"`` to ``LOG_DIR/<pid>.log``
before it does its work and ``"<idempotency_key> done <token>"`` after. ``token`` is the
lease token under which the process holds the run, and a run's lease token is bumped by
every claim, so token ``n`` names the ``n``-th claim of the run in its event log: the
test can tell which *holding* of which run (not only which process) executed each step.
No public API gives a step its run's lease token, so :func:`_lease_token` reads it from
the engine's context variable; a step needs it here only to label its side effects.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import time
from pathlib import Path

import sideeffects  # tests/integration/sideeffects.py

from surestep import App, current_step
from surestep.engine.context import CURRENT_RUN


def step_output(seed: int, i: int) -> int:
    return seed * 100 + i


def chain_output(seed: int, steps: int) -> int:
    return sum(step_output(seed, i) for i in range(steps))


def _lease_token() -> int:
    run = CURRENT_RUN.get()
    assert run is not None, "called outside a run"
    return run.token


def build(
    url: str,
    log_dir: str | Path,
    *,
    step_sleep: tuple[float, float] = (0.0, 0.0),
    slow_seconds: float = 0.0,
) -> App:
    """An App with the workflows ``chain``, ``slow`` and ``greet`` on ``url``."""
    app = App(url)
    log_dir = Path(log_dir)

    def note(event: str) -> None:
        sideeffects.note(log_dir, f"{current_step().idempotency_key} {event} {_lease_token()}")

    @app.step(name="work")
    def work(seed: int, i: int) -> int:
        note("start")
        time.sleep(random.uniform(*step_sleep))
        note("done")
        return step_output(seed, i)

    @app.workflow(name="chain")
    def chain(seed: int, steps: int) -> int:
        return sum(work(seed, i) for i in range(steps))

    @app.step(name="slow_step")
    def slow_step() -> str:
        note("start")
        time.sleep(slow_seconds)
        note("done")
        # Names the process whose execution produced the output.
        return f"executed by {os.getpid()}"

    @app.workflow(name="slow")
    def slow() -> str:
        return slow_step()

    @app.step(name="send_greeting")
    def send_greeting(name: str) -> str:
        return f"hello {name}"

    @app.workflow(name="greet")
    def greet(name: str) -> str:
        return send_greeting(name)

    return app


def worker_argv(
    url: str,
    log_dir: str | Path,
    *,
    concurrency: int,
    lease_seconds: float,
    heartbeat_interval: float,
    poll_interval: float = 0.5,
    step_sleep: tuple[float, float] = (0.0, 0.0),
    slow_seconds: float = 0.0,
) -> list[str]:
    """The command line of a worker process with these settings."""
    return [
        sys.executable,
        str(Path(__file__)),
        url,
        str(log_dir),
        f"--concurrency={concurrency}",
        f"--lease-seconds={lease_seconds}",
        f"--heartbeat-interval={heartbeat_interval}",
        f"--poll-interval={poll_interval}",
        f"--step-sleep={step_sleep[0]},{step_sleep[1]}",
        f"--slow-seconds={slow_seconds}",
    ]


def _pair(text: str) -> tuple[float, float]:
    low, high = (float(part) for part in text.split(","))
    return low, high


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=argv[0], description="a surestep worker")
    parser.add_argument("url")
    parser.add_argument("log_dir")
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--lease-seconds", type=float, required=True)
    parser.add_argument("--heartbeat-interval", type=float, required=True)
    parser.add_argument("--poll-interval", type=float, required=True)
    parser.add_argument("--step-sleep", type=_pair, required=True, help="MIN,MAX seconds")
    parser.add_argument("--slow-seconds", type=float, required=True)
    args = parser.parse_args(argv[1:])
    # INFO shows the engine's account of fenced writes and reconnections on stderr.
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    app = build(args.url, args.log_dir, step_sleep=args.step_sleep, slow_seconds=args.slow_seconds)
    try:
        app.worker(
            concurrency=args.concurrency,
            lease_seconds=args.lease_seconds,
            heartbeat_interval=args.heartbeat_interval,
            poll_interval=args.poll_interval,
        ).run()
    finally:
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
