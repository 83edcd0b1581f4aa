"""What the API takes and gives: pydantic models, so that OpenAPI describes it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# -- errors -------------------------------------------------------------------------------


class FieldProblem(BaseModel):
    path: str = Field(description="Where in the data, e.g. `total` or `body.outcome`.")
    message: str


class ErrorBody(BaseModel):
    """Every error answer: a stable code and a message saying what to do."""

    code: str = Field(description="Stable, e.g. review_conflict, review_invalid, forbidden.")
    message: str
    reason: str | None = Field(
        None, description="409: why, e.g. decided, expired, cancelled, claimed, run_failed."
    )
    fields: list[FieldProblem] | None = Field(None, description="422: the failing fields.")


# -- reviews ------------------------------------------------------------------------------


class TaskOut(BaseModel):
    """A review task. In listings, fields marked sensitive are masked (``***``)."""

    id: int
    run_id: str
    position: int | None
    kind: str
    workflow: str
    state: str = Field(description="open | decided | expired | cancelled")
    outcomes: list[str] = Field(description="What a decision on this task may answer.")
    overdue: bool
    payload: Any
    sensitive: list[str]
    proposal: Any
    confidence: float | None
    form: dict[str, Any] | None = Field(description="The JSON Schema an edit must satisfy.")
    instructions: str | None
    context: dict[str, Any] | None
    assignee: str | None
    groups: list[str]
    escalate_to: list[str]
    level: int
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
    outcome: str | None
    data: Any
    reviewer: str | None
    comment: str | None
    decided_at: float | None


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    outcome: str = Field(
        description="approve | reject | edit; for step_exhausted tasks retry | output | "
        "dead_letter | cancel; for run_deadline tasks resume | fail | cancel.",
        examples=["approve"],
    )
    data: Any = Field(
        None, description="edit: the corrected data (checked against the task's form)."
    )
    comment: str | None = Field(None, max_length=10_000)


class DecisionOut(BaseModel):
    task_id: int
    outcome: str
    data: Any
    reviewer: str
    comment: str | None
    decided_at: float


class BatchItem(DecisionIn):
    task_id: int = Field(gt=0, le=2**63 - 1)  # review.service.MAX_TASK_ID


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decisions: list[BatchItem] = Field(min_length=1, max_length=500)


class BatchResult(BaseModel):
    """One decision of a batch: its own status, and the decision or the error."""

    task_id: int
    status: int
    decision: DecisionOut | None = None
    error: ErrorBody | None = None


class BatchOut(BaseModel):
    results: list[BatchResult]


class ReassignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: list[str] = Field(
        min_length=1,
        description="At most one user and any groups: `alice`, `group:finance`.",
        examples=[["group:managers"]],
    )
    reason: str = Field("reassigned", max_length=1000)


# -- runs and users -----------------------------------------------------------------------


class AttemptOut(BaseModel):
    attempt: int
    state: str
    started_at: float
    finished_at: float
    worker: str
    error: dict[str, Any] | None


class StepOut(BaseModel):
    position: int
    name: str
    state: str
    attempts: int
    output: Any
    error: dict[str, Any] | None
    started_at: float
    finished_at: float | None
    next_attempt_at: float | None
    attempt_records: list[AttemptOut]
    compensation: str | None


class EventOut(BaseModel):
    id: int
    position: int | None
    step: str | None
    from_state: str | None
    to_state: str
    at: float
    actor: str
    reason: str | None
    attempt: int | None


class RunOut(BaseModel):
    id: str
    workflow: str
    workflow_version: str
    state: str
    inputs: dict[str, Any]
    output: Any
    error: dict[str, Any] | None
    created_at: float
    updated_at: float
    available_at: float | None
    lease_owner: str | None
    parent_id: str | None
    deadline_at: float | None
    on_deadline: str | None


class RunDetail(RunOut):
    steps: list[StepOut]
    events: list[EventOut]


class RedriveOut(BaseModel):
    run_id: str
    steps: list[str] = Field(description="The steps that got a fresh retry budget.")


class UserOut(BaseModel):
    name: str
    role: str
    groups: list[str]
