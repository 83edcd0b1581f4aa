"""Helpers for testing your own workflows, in-process, with no separate worker.

>>> from surestep import App, FakeClock
>>> from surestep.testing import run_workflow
>>> app = App("sqlite:///test.db", clock=FakeClock())           # doctest: +SKIP
>>> handle = run_workflow(app, summarize, "doc-1")             # doctest: +SKIP
>>> handle.result()                                            # doctest: +SKIP

With a :class:`~surestep.FakeClock`, retry backoffs pass instantly: when nothing else
is due the in-process worker moves the clock straight to the next due run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from surestep.app import App
from surestep.clock import FakeClock
from surestep.errors import ResultTimeoutError
from surestep.handle import RunHandle
from surestep.llm.fake import FakeLLM
from surestep.states import SETTLED

__all__ = ["FakeClock", "FakeLLM", "drive", "drive_async", "run_workflow", "run_workflow_async"]


def run_workflow(
    app: App,
    workflow: Callable[..., Any] | str,
    /,
    *args: Any,
    run_id: str | None = None,
    timeout: float = 60.0,
    **kwargs: Any,
) -> RunHandle:
    """Start a run and execute it in this process until it settles; return its handle.

    Settled means success, failed, cancelled or dead_letter; call ``.result()`` on the
    handle for the output (or the error). ``timeout`` is in real seconds.
    """
    handle = app.start(workflow, *args, run_id=run_id, **kwargs)
    drive(app, until=lambda: handle.state in SETTLED, timeout=timeout)
    return handle


async def run_workflow_async(
    app: App,
    workflow: Callable[..., Any] | str,
    /,
    *args: Any,
    run_id: str | None = None,
    timeout: float = 60.0,
    **kwargs: Any,
) -> RunHandle:
    """:func:`run_workflow` for async tests, on the running event loop."""
    handle = app.start(workflow, *args, run_id=run_id, **kwargs)
    await drive_async(app, until=lambda: handle.state in SETTLED, timeout=timeout)
    return handle


def drive(app: App, until: Callable[[], bool], timeout: float = 60.0, concurrency: int = 4) -> None:
    """Run an in-process worker until ``until()`` is true (checked between claims)."""
    asyncio.run(drive_async(app, until, timeout, concurrency))


async def drive_async(
    app: App, until: Callable[[], bool], timeout: float = 60.0, concurrency: int = 4
) -> None:
    deadline = time.monotonic() + timeout

    def done() -> bool:
        if time.monotonic() > deadline:
            raise ResultTimeoutError(
                f"the in-process worker did not reach the condition within {timeout}s"
            )
        return until()

    worker = app.worker(concurrency=concurrency, poll_interval=0.01, grace_period=5.0)
    await worker.run_async(until=done)
