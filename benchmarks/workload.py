"""The engine benchmarks' workload: a workflow ``bench`` of K no-op steps.

W runs of it make the W x K workload that ``engine_sqlite.py`` and ``engine_postgres.py``
measure; one definition, so both measure exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Callable

from surestep import App


def add_noop_workflow(app: App) -> Callable[[int], int]:
    """Register the step ``noop`` and the workflow ``bench(k)``, which calls it k times."""

    @app.step(name="noop")
    def noop(i: int) -> int:
        return i

    @app.workflow(name="bench")
    def bench(k: int) -> int:
        total = 0
        for i in range(k):
            total += noop(i)
        return total

    return bench
