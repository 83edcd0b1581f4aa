"""The App the fan-out process tests run in real worker processes.

``python fanout_app.py URL`` runs a worker (concurrency 16) on the database ``URL`` until
SIGTERM. Workflow ``batch(count, concurrency)`` maps ``item`` over ``range(count)``;
``item(n)`` is one step that sleeps a few milliseconds and returns ``n * 2``.
"""

from __future__ import annotations

import sys
import time

import sideeffects  # tests/integration/sideeffects.py

import surestep
from surestep import App

CONCURRENCY = 16


def build(url: str) -> App:
    app = App(url)

    @app.step(name="double")
    def double(n: int) -> int:
        time.sleep(0.005)
        return n * 2

    @app.workflow(name="item")
    def item(n: int) -> int:
        return double(n)

    @app.workflow(name="batch")
    def batch(count: int, concurrency: int) -> int:
        return sum(surestep.map(item, range(count), concurrency=concurrency))

    return app


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} URL", file=sys.stderr)
        return 2
    return sideeffects.serve(build(argv[1]), CONCURRENCY)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
