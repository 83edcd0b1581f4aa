"""Where code is running: the current run and step, as context variables, and the one
seam through which features reach a run.

Steps, waits, patches, and later review requests and LLM calls all stand on the same
four operations of a run (:class:`ActiveRun`): take the next position, look up what is
recorded there, record an outcome under the run's lease, and halt the run to wait.
They use this protocol, never ``RunExecution`` itself, so no feature imports the
runtime and the runtime imports no feature.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from surestep.errors import SurestepError

if TYPE_CHECKING:
    from surestep.clock import Clock
    from surestep.engine.halts import Verdict
    from surestep.hooks import Hooks
    from surestep.registry import StepDef, WorkflowDef
    from surestep.storage import RecordedStep, Store


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a running step knows about itself.

    ``idempotency_key`` is ``"<run_id>:<position>"``: the same on every attempt and after
    every recovery, so pass it to external systems that deduplicate (payment APIs,
    ``Idempotency-Key`` headers, upserts).
    """

    run_id: str
    position: int
    name: str
    attempt: int
    workflow: str = ""  # the run's workflow name

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.position}"


class ActiveRun(Protocol):
    """A run being executed by this worker, as features see it."""

    run_id: str
    token: int
    worker: str
    workflow: WorkflowDef
    store: Store
    clock: Clock
    hooks: Hooks
    loop: asyncio.AbstractEventLoop | None

    def next_position(self) -> int:
        """Take the next position, in the workflow's call order."""

    def upcoming_position(self) -> int:
        """The position :meth:`next_position` would take, without taking it: a patch
        marker takes a position only where the run's history has one."""

    @property
    def recorded(self) -> Mapping[int, RecordedStep]:
        """The history recorded before this execution began, by position."""

    def expect(self, position: int, name: str, *, joinable: bool = False) -> RecordedStep | None:
        """What is recorded at ``position``; a different ``name`` there halts the run.
        A ``joinable`` position still opens while the run halts to wait (gathered)."""

    def guarded(self) -> AbstractContextManager[None]:
        """Around a write under the run's lease (``run.token``): a lost lease or a
        database error stops the run instead of reaching the workflow."""

    def halt(self, verdict: Verdict) -> NoReturn:
        """Stop the workflow now; the run settles as ``verdict`` says."""

    def code_changed(self, exc: SurestepError) -> NoReturn:
        """The recorded history no longer fits the code: park the run in dead_letter,
        untouched, for an operator to retry once the code is restored."""

    def run_step(self, step: StepDef, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run (or replay) a step at the next position, synchronously."""

    def run_step_at(
        self, step: StepDef, position: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run (or replay) a step at ``position`` taken earlier, synchronously (from any
        thread: an async workflow runs a blocking step this way in a thread)."""

    async def run_step_async(
        self, step: StepDef, position: int, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Run (or replay) an ``async def`` step at ``position``."""


CURRENT_RUN: ContextVar[ActiveRun | None] = ContextVar("surestep_run", default=None)
CURRENT_STEP: ContextVar[StepContext | None] = ContextVar("surestep_step", default=None)


def workflow_run() -> ActiveRun | None:
    """The run whose workflow code is executing here; None outside a workflow and inside
    a step (a step's own calls are plain calls)."""
    run = CURRENT_RUN.get()
    return None if run is None or CURRENT_STEP.get() is not None else run


def current_step() -> StepContext:
    """The step being executed, from inside a step function.

    >>> @app.step()                                     # doctest: +SKIP
    ... def charge(order_id: str) -> str:
    ...     key = surestep.current_step().idempotency_key
    ...     return payments.charge(order_id, idempotency_key=key)
    """
    step = CURRENT_STEP.get()
    if step is None:
        raise SurestepError(
            "current_step() was called outside a step; call it from inside a function "
            "decorated with @app.step() while a workflow runs it"
        )
    return step
