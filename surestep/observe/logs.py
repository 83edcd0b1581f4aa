"""What a worker tells its log: retries, dead letters, reviews, deadlines.

:class:`EventLog` is a hook subscriber (see :mod:`surestep.hooks`); each line carries the
ids it knows in ``extra`` (``run_id``, ``workflow``, ``step``, ``attempt``, ``worker``,
``state``), which :class:`JsonFormatter` writes as fields, so that logs join traces and the
run's events. Payloads, step outputs and error messages stay out of INFO lines: an error
is named by its type only (its message may quote the data it failed on).
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from surestep.states import State

if TYPE_CHECKING:
    from surestep.engine.context import StepContext
    from surestep.review.records import ReviewTask

log = logging.getLogger("surestep.events")

#: The ``extra`` fields a JSON line carries when a record has them.
FIELDS = ("run_id", "workflow", "step", "attempt", "worker", "state")

_REVIEW_WORDS = {
    "created": "opened",
    "escalated": "escalated",
    "overdue": "overdue (kept open past its last level)",
    "expired": "expired",
    "decided": "decided",
}


class EventLog:
    """Logs, at INFO, the events an operator wants to find later.

    >>> app.hooks.subscribe(EventLog(worker="w1"))  # doctest: +SKIP
    """

    def __init__(self, worker: str | None = None) -> None:
        self.worker = worker

    def _ids(self, **ids: Any) -> dict[str, Any]:
        if self.worker is not None:
            ids["worker"] = self.worker
        return ids

    def on_retry(self, step: StepContext, error: BaseException, delay: float) -> None:
        log.info(
            "run %s: step %r attempt %d failed (%s); attempt %d in %.2fs",
            step.run_id,
            step.name,
            step.attempt,
            type(error).__name__,
            step.attempt + 1,
            delay,
            extra=self._ids(
                run_id=step.run_id,
                workflow=step.workflow,
                step=step.name,
                attempt=step.attempt,
                state=State.WAITING.value,
            ),
        )

    def on_run_state(
        self, run_id: str, from_state: State, to_state: State, workflow: str = ""
    ) -> None:
        if to_state != State.DEAD_LETTER:
            return  # the other transitions are in the run's events; not worth a line each
        log.info(
            "run %s: dead-lettered; `surestep runs show %s` says why",
            run_id,
            run_id,
            extra=self._ids(run_id=run_id, workflow=workflow, state=to_state.value),
        )

    def on_deadline(self, run_id: str) -> None:
        log.info(
            "run %s: deadline breached; its on_deadline action applied",
            run_id,
            extra=self._ids(run_id=run_id),
        )

    def on_review(self, event: str, task: ReviewTask) -> None:
        log.info(
            "run %s: review task %d (%s) %s",
            task.run_id,
            task.id,
            task.kind,
            _REVIEW_WORDS.get(event, event),
            extra=self._ids(run_id=task.run_id, workflow=task.workflow, state=str(task.state)),
        )


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``message`` and the ids of
    :data:`FIELDS` that the record carries. A traceback (ERROR lines) goes in ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            value = getattr(record, field, None)
            if value is not None and value != "":
                line[field] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
