"""The App the queue process tests run in real worker processes.

``python queue_app.py URL`` runs a worker (concurrency 8) on the database ``URL`` until
SIGTERM. Workflow ``job(tenant, n)`` is in queue ``llm`` (concurrency 5, at most 3 runs
of one tenant at once); its one step sleeps a few milliseconds. Workflow ``tick(n)`` is
in queue ``paced`` (at most RATE starts a second, across every worker).
"""

from __future__ import annotations

import sys
import time

import sideeffects  # tests/integration/sideeffects.py

from surestep import App

CONCURRENCY, QUEUE_LIMIT, PER_TENANT = 8, 5, 3
RATE = 20.0


def build(url: str) -> App:
    app = App(url)
    app.queue("llm", concurrency=QUEUE_LIMIT)
    app.queue("paced", concurrency=50, rate_per_second=RATE)

    @app.step(name="call")
    def call(tenant: str, n: int) -> str:
        time.sleep(0.01)
        return f"{tenant}-{n}"

    @app.workflow(
        name="job",
        queue="llm",
        concurrency_key=lambda tenant, n: tenant,
        per_key_concurrency=PER_TENANT,
    )
    def job(tenant: str, n: int) -> str:
        return call(tenant, n)

    @app.workflow(name="tick", queue="paced")
    def tick(n: int) -> int:
        return n

    return app


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} URL", file=sys.stderr)
        return 2
    return sideeffects.serve(build(argv[1]), CONCURRENCY)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
