"""What surestep tells you about a run: plain, immutable records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from surestep.states import State


@dataclass(frozen=True)
class EventRecord:
    """One entry of the append-only event log: a state change, who made it and why."""

    id: int
    run_id: str
    position: int | None  # None for a change of the run itself
    step: str | None
    from_state: State | None  # None when the run or step was created
    to_state: State
    at: float
    actor: str
    reason: str | None
    attempt: int | None


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt of one step."""

    attempt: int
    state: State
    started_at: float
    finished_at: float
    worker: str
    error: dict[str, Any] | None  # {"type", "message", "traceback"} when it failed

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class StepRecord:
    """A step of a run at one position, with all its attempts."""

    position: int
    name: str
    state: State
    attempts: int
    output: Any  # decoded JSON, untyped
    error: dict[str, Any] | None
    started_at: float
    finished_at: float | None
    next_attempt_at: float | None
    attempt_records: tuple[AttemptRecord, ...] = ()
    compensation: str | None = None  # the step that undoes this one (at position -(p+1))


@dataclass(frozen=True)
class RunRecord:
    """A run: its state, inputs, output or error, and (from ``get_run``) steps and events."""

    id: str
    workflow: str
    workflow_version: str
    # A plain str only when the stored state is one surestep does not know (see corrupt).
    state: State | str
    inputs: dict[str, Any]
    output: Any
    error: dict[str, Any] | None
    created_at: float
    updated_at: float
    available_at: float | None  # when it is (or was, if running) due: its place in the queue
    lease_owner: str | None
    parent_id: str | None
    steps: tuple[StepRecord, ...] = field(default=())
    events: tuple[EventRecord, ...] = field(default=())
    deadline_at: float | None = None
    on_deadline: str | None = None
    deadline_breached_at: float | None = None
    waiting_for: tuple[str, ...] = ()  # "event:NAME" / "child:RUN_ID"
    compensating: State | None = None  # undoing its steps, then ends in this state
    # What cannot be decoded ("corrupt record: TABLE.COLUMN, run ID, position P: why"):
    # such a field reads as None (a step, attempt or event whose state is unknown is
    # left out), so that listings still show the run.
    corrupt: tuple[str, ...] = ()
