"""Where code is running: the current run and step, as context variables."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from surestep.errors import SurestepError

if TYPE_CHECKING:
    from surestep.runtime import RunExecution


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

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.position}"


CURRENT_RUN: ContextVar[RunExecution | None] = ContextVar("surestep_run", default=None)
CURRENT_STEP: ContextVar[StepContext | None] = ContextVar("surestep_step", default=None)


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
