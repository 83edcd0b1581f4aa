"""surestep: durable, reviewable AI workflow automation."""

from surestep.app import App
from surestep.clock import Clock, FakeClock, SystemClock
from surestep.engine.context import StepContext, current_step
from surestep.engine.patches import deprecate_patch, patched
from surestep.engine.waits import (
    run_child,
    run_child_async,
    sleep,
    sleep_async,
    wait_for_any,
    wait_for_any_async,
    wait_for_event,
    wait_for_event_async,
)
from surestep.engine.worker import Worker
from surestep.errors import (
    Cancelled,
    ConfigurationError,
    CorruptRecordError,
    DatabaseNotFoundError,
    DuplicateWorkflowError,
    EventTimeoutError,
    IdempotencyConflictError,
    IllegalTransitionError,
    InputValidationError,
    InvalidOperationError,
    LeaseLostError,
    NonDeterminismError,
    OutputValidationError,
    ResultTimeoutError,
    ReviewConflictError,
    ReviewNotFoundError,
    ReviewValidationError,
    RunFailedError,
    RunNotFoundError,
    SchemaVersionError,
    SerializationError,
    StepError,
    StepTimeoutError,
    StorageError,
    SurestepError,
    UnknownWorkflowError,
    UserExistsError,
    UserNotFoundError,
)
from surestep.flow.fanout import ChildRunError, map, map_async
from surestep.handle import RunHandle
from surestep.llm.faults import BudgetExceededError
from surestep.records import AttemptRecord, EventRecord, RunRecord, StepRecord
from surestep.redrive import RedriveOutcome
from surestep.retry import Retry
from surestep.review.records import Decision, ReviewStats, ReviewTask
from surestep.review.request import request_review, request_review_async
from surestep.states import State
from surestep.versions import VersionRecord

__all__ = [
    "App",
    "AttemptRecord",
    "BudgetExceededError",
    "Cancelled",
    "ChildRunError",
    "Clock",
    "ConfigurationError",
    "CorruptRecordError",
    "DatabaseNotFoundError",
    "Decision",
    "DuplicateWorkflowError",
    "EventRecord",
    "EventTimeoutError",
    "FakeClock",
    "IdempotencyConflictError",
    "IllegalTransitionError",
    "InputValidationError",
    "InvalidOperationError",
    "LeaseLostError",
    "NonDeterminismError",
    "OutputValidationError",
    "RedriveOutcome",
    "ResultTimeoutError",
    "Retry",
    "ReviewConflictError",
    "ReviewNotFoundError",
    "ReviewStats",
    "ReviewTask",
    "ReviewValidationError",
    "RunFailedError",
    "RunHandle",
    "RunNotFoundError",
    "RunRecord",
    "SchemaVersionError",
    "SerializationError",
    "State",
    "StepContext",
    "StepError",
    "StepRecord",
    "StepTimeoutError",
    "StorageError",
    "SurestepError",
    "SystemClock",
    "UnknownWorkflowError",
    "UserExistsError",
    "UserNotFoundError",
    "VersionRecord",
    "Worker",
    "current_step",
    "deprecate_patch",
    "map",
    "map_async",
    "patched",
    "request_review",
    "request_review_async",
    "run_child",
    "run_child_async",
    "sleep",
    "sleep_async",
    "wait_for_any",
    "wait_for_any_async",
    "wait_for_event",
    "wait_for_event_async",
]
