"""A handle on one run: its state, its record, and its result when it settles."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from surestep.errors import (
    ResultTimeoutError,
    RunFailedError,
    RunNotFoundError,
    UnknownWorkflowError,
)
from surestep.records import RunRecord
from surestep.review.records import ReviewTask
from surestep.serialization import loads_raw
from surestep.states import SETTLED, State

if TYPE_CHECKING:
    from surestep.registry import Registry
    from surestep.review.service import Reviews
    from surestep.storage import Store


class RunSource(Protocol):
    """What a handle needs of the App that made it."""

    registry: Registry
    reviews: Reviews

    @property
    def store(self) -> Store: ...

    def get_run(self, run_id: str) -> RunRecord: ...


class RunHandle:
    """A run started or found through an App."""

    def __init__(self, app: RunSource, run_id: str) -> None:
        self.app = app
        self.id = run_id

    def __repr__(self) -> str:
        return f"RunHandle({self.id!r})"

    @property
    def state(self) -> State:
        found = self.app.store.run_state(self.id)
        if found is None:
            raise RunNotFoundError(f"no run with id {self.id!r}")
        return found[0]

    def record(self) -> RunRecord:
        return self.app.get_run(self.id)

    def result(self, timeout: float | None = None) -> Any:
        """Wait until the run settles and return its output.

        Raises :class:`RunFailedError` if it ended failed, cancelled or dead-lettered
        (the error carries the run's stored error), and :class:`ResultTimeoutError` if it
        has not settled within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        while True:
            found = self.app.store.run_state(self.id)
            if found is None:
                raise RunNotFoundError(f"no run with id {self.id!r}")
            if found[0] in SETTLED:
                return self._outcome(found[0], found[1], found[2], found[3])
            if deadline is not None and time.monotonic() >= deadline:
                raise ResultTimeoutError(
                    f"run {self.id!r} is still {found[0]} after {timeout}s; "
                    + _what_it_waits_for(
                        self.app.get_run(self.id), self.app.reviews.list(run_id=self.id)
                    )
                )
            wait = pause if deadline is None else min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
            pause = min(pause * 2, 0.1)

    async def result_async(self, timeout: float | None = None) -> Any:
        """``result()`` for async code: waits without blocking the event loop."""
        return await asyncio.to_thread(self.result, timeout)

    def _outcome(self, state: State, output: str | None, error: str | None, workflow: str) -> Any:
        if state != State.SUCCESS:
            raise RunFailedError(self.id, state, loads_raw(error))
        try:
            wf = self.app.registry.workflow(workflow)
        except UnknownWorkflowError:  # a client that does not import the workflow's code
            return loads_raw(output)
        return wf.codec.decode_result(output, f"output of run {self.id!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunHandle) and other.id == self.id and other.app is self.app

    def __hash__(self) -> int:
        return hash(self.id)


def _what_it_waits_for(run: RunRecord, tasks: Sequence[ReviewTask]) -> str:
    """Why an unsettled run has not settled, and what settles it (``result()``'s timeout)."""
    if run.state == State.NEEDS_REVIEW:
        about = "; ".join(
            f"review task {t.id} ({t.kind}"
            + (
                f": {t.payload['reason']}"
                if isinstance(t.payload, dict) and "reason" in t.payload
                else ""
            )
            + ")"
            for t in tasks
        )
        return (
            f"it needs review ({about or 'no open task'}): it waits for a person's decision, "
            f"not for a worker (`surestep review list --run {run.id}`)"
        )
    if run.state != State.WAITING:
        return "is a worker running (`surestep worker MODULE:APP`)?"
    until = "" if run.available_at is None else f" until {_when(run.available_at)}"
    events = [w.split(":", 1)[1] for w in run.waiting_for if w.startswith("event:")]
    children = [w.split(":", 1)[1] for w in run.waiting_for if w.startswith("child:")]
    if events:
        names = " or ".join(repr(name) for name in events)
        return (
            f"it waits for event {names}{until} (send it with "
            f"`surestep send {run.id} {events[0]}` or app.send_event)"
        )
    if children:
        return f"it waits for child run {children[0]!r} to finish"
    return f"it waits for a timer (a sleep or a retry backoff){until}"


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))
