"""Review tasks and decisions as surestep reports them: plain, immutable records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")

TaskState = Literal["open", "decided", "expired", "cancelled"]

#: What a reviewer may answer, by the kind of task.
#: A task opened by ``request_review``: approve (the proposal, else the payload), reject,
#: or edit (the data, validated against the task's form).
REQUEST_OUTCOMES = ("approve", "reject", "edit")
#: A step that exhausted its retries: another attempt (optionally with edited
#: arguments), its output supplied by hand, the dead-letter queue, or cancel the run.
STEP_EXHAUSTED_OUTCOMES = ("retry", "output", "dead_letter", "cancel")
#: A run whose deadline passed with ``on_deadline="review"``: resume it, fail it or
#: cancel it.
RUN_DEADLINE_OUTCOMES = ("resume", "fail", "cancel")

STEP_EXHAUSTED = "step_exhausted"
RUN_DEADLINE = "run_deadline"


def outcomes_for(kind: str) -> tuple[str, ...]:
    """The outcomes a task of ``kind`` accepts."""
    if kind == STEP_EXHAUSTED:
        return STEP_EXHAUSTED_OUTCOMES
    if kind == RUN_DEADLINE:
        return RUN_DEADLINE_OUTCOMES
    return REQUEST_OUTCOMES


@dataclass(frozen=True)
class Decision(Generic[T]):
    """What a reviewer decided; what ``request_review`` returns to the workflow.

    ``data`` is the approved or edited data (validated against the task's ``form``
    when it has one); None on reject.
    """

    task_id: int
    outcome: str
    data: T | None
    reviewer: str
    comment: str | None
    decided_at: float

    @property
    def approved(self) -> bool:
        """True for approve and edit: the reviewer let the work go on."""
        return self.outcome in ("approve", "edit")


@dataclass(frozen=True)
class ReviewTask:
    """One review task, open or settled."""

    id: int
    run_id: str
    position: int | None
    kind: str
    workflow: str
    state: TaskState
    payload: Any
    sensitive: tuple[str, ...]
    proposal: Any
    confidence: float | None
    form: dict[str, Any] | None  # the JSON Schema edits must satisfy
    instructions: str | None
    context: dict[str, Any] | None  # for step_exhausted: step, inputs, error, attempts
    assignee: str | None
    groups: tuple[str, ...]
    escalate_to: tuple[str, ...]
    level: int  # how many escalations so far
    priority: int
    sla: float | None
    due_at: float | None
    on_expiry: str
    overdue_since: float | None
    follow_up_at: float | None
    claimed_by: str | None
    claimed_at: float | None
    created_at: float
    updated_at: float
    outcome: str | None = None
    data: Any = None
    reviewer: str | None = None
    comment: str | None = None
    decided_at: float | None = None

    def overdue(self, now: float) -> bool:
        return self.state == "open" and self.due_at is not None and self.due_at <= now

    @property
    def outcomes(self) -> tuple[str, ...]:
        return outcomes_for(self.kind)


@dataclass(frozen=True)
class ReviewerStats:
    decided: int
    overrides: int
    p50_seconds: float | None
    p95_seconds: float | None


@dataclass(frozen=True)
class ReviewStats:
    """Figures for one kind of task (or all), over tasks created since a time."""

    kind: str | None
    open: int
    overdue: int
    decided: int
    expired: int
    #: edits + rejects over decisions of tasks that had a proposal
    override_rate: float | None
    #: tasks escalated at least once over all tasks
    escalation_rate: float | None
    #: decided by their (last) due time over decided tasks that had one
    sla_adherence: float | None
    p50_seconds: float | None
    p95_seconds: float | None
    reviewers: dict[str, ReviewerStats] = field(default_factory=dict)
