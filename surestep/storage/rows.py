"""The rows the storage contract passes to and from the engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from surestep.states import State


class Cursor(Protocol):
    """The slice of a DB-API cursor that surestep uses."""

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any: ...

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


@dataclass(frozen=True)
class RecordedStep:
    """What replay needs of a step recorded earlier."""

    name: str
    state: State
    output: str | None
    error: str | None
    attempts: int
    retry_base: int
    next_attempt_at: float | None
    compensation: str | None = None  # the registered step that undoes this one
    inputs: str | None = None  # its arguments, kept for the compensation
    review_inputs: str | None = None  # its arguments as a reviewer edited them


@dataclass(frozen=True)
class ClaimedRun:
    """A run a worker now holds under lease ``token``, with the steps recorded so far."""

    id: str
    workflow: str
    workflow_version: str
    inputs: str
    token: int
    recorded: dict[int, RecordedStep]
    parent_id: str | None = None
    compensating: str | None = None  # the state to end in once completed steps are undone
    due_at: float | None = None  # when it became due (its place in the queue)
    trace_context: str | None = None  # the W3C traceparent its slices continue


@dataclass(frozen=True)
class Placement:
    """A run's place among the claims: its queue, priority and concurrency key."""

    queue: str
    priority: int = 0
    concurrency_key: str | None = None


def placement_columns(placement: Placement | None) -> tuple[str | None, int, str | None]:
    """The (queue, priority, concurrency_key) columns of a run placed so."""
    if placement is None:
        return None, 0, None
    return placement.queue, placement.priority, placement.concurrency_key


@dataclass(frozen=True)
class StepOutcome:
    """The end of one step attempt, written in one transaction with its events."""

    position: int
    name: str
    from_state: State  # the step's state before this attempt: pending or waiting
    to_state: State
    attempt: int
    started_at: float
    finished_at: float
    output: str | None = None
    error: str | None = None
    next_attempt_at: float | None = None
    reason: str | None = None
    compensation: str | None = None
    inputs: str | None = None


#: The states in which a run's deadline still applies, as SQL (``surestep_runs_deadlines``
#: indexes exactly these): not yet finished, including parked for a person.
DEADLINE_STATES = "('pending', 'running', 'waiting', 'dead_letter', 'needs_review')"


@dataclass(frozen=True)
class Released:
    """What :meth:`SQLStore.release` did: how many runs it put back, and which of them
    (run id, workflow) it dead-lettered instead, having been recovered too often."""

    count: int
    dead_lettered: tuple[tuple[str, str], ...] = ()
