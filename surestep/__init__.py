"""surestep: durable, reviewable AI workflow automation."""

from surestep.app import App, RunHandle
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
    RunFailedError,
    RunNotFoundError,
    SchemaVersionError,
    SerializationError,
    StepError,
    StepTimeoutError,
    StorageError,
    SurestepError,
    UnknownWorkflowError,
)
from surestep.records import AttemptRecord, EventRecord, RunRecord, StepRecord
from surestep.redrive import RedriveOutcome
from surestep.retry import Retry
from surestep.states import State
from surestep.versions import VersionRecord

__all__ = [
    "App",
    "AttemptRecord",
    "Cancelled",
    "Clock",
    "ConfigurationError",
    "CorruptRecordError",
    "DatabaseNotFoundError",
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
    "VersionRecord",
    "Worker",
    "current_step",
    "deprecate_patch",
    "patched",
    "run_child",
    "run_child_async",
    "sleep",
    "sleep_async",
    "wait_for_any",
    "wait_for_any_async",
    "wait_for_event",
    "wait_for_event_async",
]
