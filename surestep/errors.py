"""The surestep error hierarchy.

Every error has a stable ``code`` (for scripts, logs and the API) and a message that
says what was wrong and what to do about it.
"""

from __future__ import annotations

from typing import Any


class SurestepError(Exception):
    """Base class of every error surestep raises on purpose."""

    code = "surestep_error"


class ConfigurationError(SurestepError):
    """The App, a decorator or the database URL was set up wrongly."""

    code = "configuration"


class MissingDependencyError(ConfigurationError):
    """An optional dependency is not installed; the message gives the pip line."""

    code = "missing_dependency"


class UnknownWorkflowError(SurestepError):
    """No workflow is registered under that name."""

    code = "unknown_workflow"


class DuplicateWorkflowError(ConfigurationError):
    """Two workflows or steps were registered under one name."""

    code = "duplicate_workflow"


class SerializationError(SurestepError):
    """A value could not be stored as JSON, or a stored value no longer decodes."""

    code = "serialization"


class OutputValidationError(SerializationError):
    """A step returned a value that does not match its return annotation.

    Raised before anything is recorded; the attempt counts as failed and goes through the
    step's retry policy and ``on_exhausted`` like any other error (a model's output is
    often right on the next try). ``problems`` lists ``(path, message, received type)``
    for each mismatch.
    """

    code = "output_validation"

    def __init__(self, message: str, problems: tuple[tuple[str, str, str], ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


class InputValidationError(SerializationError):
    """An argument does not match its parameter's annotation; nothing was stored."""

    code = "input_validation"


class StorageError(SurestepError):
    """The database cannot be opened, written or understood.

    ``transient`` is true for errors that may pass by themselves (a lost connection, a
    server restart, a deadlock); surestep retries those with backoff.
    """

    code = "storage"

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class SchemaVersionError(StorageError):
    """The database schema is newer than this version of surestep understands."""

    code = "schema_version"


class CorruptRecordError(SurestepError):
    """A stored record cannot be decoded: a state surestep does not know, or a JSON
    column that is not JSON (a hand edit, a downgrade, a bug).

    ``reason`` is ``corrupt record: TABLE.COLUMN, run ID, position P``: what a worker
    records when it quarantines the run (moves it to dead_letter) and claims others.
    """

    code = "corrupt_record"

    def __init__(
        self, table: str, column: str, run_id: str, position: int | None, detail: str
    ) -> None:
        self.table = table
        self.column = column
        self.run_id = run_id
        self.position = position
        self.detail = detail
        where = "" if position is None else f", position {position}"
        self.reason = f"corrupt record: {table}.{column}, run {run_id}{where}"
        super().__init__(
            f"{self.reason}: {detail}. Repair the row by hand (or restore it from a "
            f"backup), then `surestep retry {run_id}`"
        )


class DatabaseNotFoundError(StorageError):
    """A command that only reads was pointed at a database that does not exist."""

    code = "database_not_found"


class RunNotFoundError(SurestepError):
    """No run has that id."""

    code = "run_not_found"


class IdempotencyConflictError(SurestepError):
    """A run id is already taken by a run of another workflow or other inputs."""

    code = "idempotency_conflict"


class InvalidOperationError(SurestepError):
    """The operation does not apply to the run in its current state."""

    code = "invalid_operation"


class ReviewNotFoundError(SurestepError):
    """No review task with that id (or none that this reviewer may see)."""

    code = "review_not_found"


class ReviewConflictError(SurestepError):
    """The review task cannot take that action now: it was decided, expired or
    cancelled, claimed by someone else, or its run has finished. ``reason`` says which."""

    code = "review_conflict"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ReviewValidationError(SurestepError):
    """A decision's data does not satisfy the task's form (or the step's annotation).

    ``fields`` lists each problem as ``{"path": "total", "message": "..."}``.
    """

    code = "review_invalid"

    def __init__(self, message: str, *, fields: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.fields = fields


class WebhookDeliveryError(SurestepError):
    """A review notifier's webhook did not accept an event (an HTTP status other than
    2xx, or no answer); the delivery step retries it, then dead-letters it."""

    code = "webhook_delivery"


class UserNotFoundError(SurestepError):
    """No API user has that name."""

    code = "user_not_found"


class UserExistsError(SurestepError):
    """An API user with that name already exists."""

    code = "user_exists"


class IllegalTransitionError(SurestepError):
    """A state change that the transition table does not allow."""

    code = "illegal_transition"

    def __init__(self, kind: str, from_state: str | None, to_state: str) -> None:
        self.kind = kind
        self.from_state = from_state
        self.to_state = to_state
        before = "(new)" if from_state is None else f"'{from_state!s}'"
        super().__init__(
            f"illegal {kind} transition {before} -> '{to_state!s}'; "
            f"see surestep.states for the allowed transitions"
        )


class NonDeterminismError(SurestepError):
    """A resumed run no longer calls the same steps in the same order."""

    code = "non_determinism"


class LeaseLostError(SurestepError):
    """This worker no longer holds the run (its lease lapsed, or the run was cancelled).

    The worker stops executing the run; nothing it computed after losing the lease is
    recorded.
    """

    code = "lease_lost"


class StepTimeoutError(SurestepError, TimeoutError):
    """A step attempt ran longer than its ``timeout``. Counts as a failed attempt.

    It is a ``TimeoutError``, so ``Retry(retry_on=(TimeoutError,))`` retries it.
    """

    code = "step_timeout"


class StepError(SurestepError):
    """A step failed for good and its error was raised into the workflow.

    The same ``StepError`` is raised on the first execution and on every replay, so a
    workflow that catches it behaves the same after a crash. ``error_type`` and
    ``message`` describe the step's own exception.
    """

    code = "step_failed"

    def __init__(self, step: str, error_type: str, message: str) -> None:
        self.step = step
        self.error_type = error_type
        self.message = message
        super().__init__(f"step {step!r} failed with {error_type}: {message}")


class EventTimeoutError(SurestepError, TimeoutError):
    """``wait_for_event(..., timeout=..., raise_on_timeout=True)`` timed out."""

    code = "event_timeout"


class Cancelled(BaseException):
    """Raised inside a workflow whose run was cancelled, at its next step boundary.

    A ``BaseException``, so ``except Exception`` in user code cannot swallow it.
    """


class RunFailedError(SurestepError):
    """``RunHandle.result()`` of a run that ended in failed, dead_letter or cancelled."""

    code = "run_failed"

    def __init__(self, run_id: str, state: str, error: dict[str, Any] | None) -> None:
        self.run_id = run_id
        self.state = state
        self.error = error or {}
        detail = ""
        if error:
            detail = f": {error.get('type', 'Error')}: {error.get('message', '')}"
        hint = {
            "dead_letter": " (fix the cause, then `surestep retry` it)",
            "cancelled": "",
            "failed": "",
        }.get(state, "")
        super().__init__(f"run {run_id!r} ended in state {state}{detail}{hint}")


class ResultTimeoutError(SurestepError, TimeoutError):
    """``RunHandle.result(timeout=...)`` waited that long and the run is not settled."""

    code = "result_timeout"
