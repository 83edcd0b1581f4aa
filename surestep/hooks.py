"""The hook catalogue: where metrics, tracing and logging plug into the engine.

Hooks run in the order they were added. A hook that raises is logged and skipped; it
never fails a step or a run.

=================  ==========================================================
``before_step``    ``(step: StepContext)`` before each attempt runs
``after_step``     ``(step: StepContext, state: State, seconds: float)`` after an
                   attempt's outcome is committed (seconds: the attempt's wall time)
``on_retry``       ``(step: StepContext, error: BaseException, delay: float)``
``on_claim``       ``(run_id: str, workflow: str, due_at: float, claimed_at: float)``
                   after a worker leased a due run (``due_at``: its place in the queue,
                   so ``claimed_at - due_at`` is how long it waited for a worker)
``on_run_state``   ``(run_id: str, from_state: State, to_state: State, workflow: str)``
                   after a worker commits a run transition
``on_run_start``   ``(run_id: str, workflow: str, trace_context: str | None)`` when a
                   worker begins executing a run it claimed (one execution slice;
                   ``trace_context``: the W3C traceparent stored with the run)
``on_run_end``     ``(run_id: str)`` when that slice ends, however it ended (settled,
                   halted to wait, lease lost, or the worker failed executing it)
``on_deadline``    ``(run_id: str)`` after a worker applied a breached run deadline
``on_review``      ``(event: str, task: ReviewTask)`` after a review task was
                   ``created``, ``escalated``, marked ``overdue`` (kept open past its
                   last level), ``expired`` or ``decided``, in the process that made
                   the change
``on_model_call``  ``(call: ModelCall)`` after a model call of an LLM step (or of
                   ``surestep.llm.complete``) was recorded, used or not: its model,
                   outcome, tokens, cost and latency
``on_drift``       ``(report: DriftReport)`` when the confidences of a (step,
                   model)'s answers crossed into drift (PSI >= 0.2): raised once per
                   crossing, by the worker process whose check saw it
                   (:mod:`surestep.observe.drift_watch`)
=================  ==========================================================
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from surestep.errors import ConfigurationError

log = logging.getLogger("surestep.hooks")

CATALOGUE = (
    "before_step",
    "after_step",
    "on_retry",
    "on_claim",
    "on_run_state",
    "on_run_start",
    "on_run_end",
    "on_deadline",
    "on_review",
    "on_model_call",
    "on_drift",
)


class Hooks:
    def __init__(self) -> None:
        self.before_step: list[Callable[..., Any]] = []
        self.after_step: list[Callable[..., Any]] = []
        self.on_retry: list[Callable[..., Any]] = []
        self.on_claim: list[Callable[..., Any]] = []
        self.on_run_state: list[Callable[..., Any]] = []
        self.on_run_start: list[Callable[..., Any]] = []
        self.on_run_end: list[Callable[..., Any]] = []
        self.on_deadline: list[Callable[..., Any]] = []
        self.on_review: list[Callable[..., Any]] = []
        self.on_model_call: list[Callable[..., Any]] = []
        self.on_drift: list[Callable[..., Any]] = []

    def add(self, name: str, fn: Callable[..., Any]) -> None:
        if name not in CATALOGUE:
            raise ConfigurationError(f"unknown hook {name!r}; hooks are: {', '.join(CATALOGUE)}")
        getattr(self, name).append(fn)

    def subscribe(self, subscriber: object) -> Callable[[], None]:
        """Add each method of ``subscriber`` named after a hook (``after_step``, ...);
        return a function that removes them again.

        >>> stop = app.hooks.subscribe(WorkerMetrics())  # doctest: +SKIP
        """
        added = [
            (name, getattr(subscriber, name)) for name in CATALOGUE if hasattr(subscriber, name)
        ]
        for name, fn in added:
            self.add(name, fn)

        def unsubscribe() -> None:
            for name, fn in added:
                hooks: list[Callable[..., Any]] = getattr(self, name)
                if fn in hooks:
                    hooks.remove(fn)

        return unsubscribe

    @staticmethod
    def emit(hooks: list[Callable[..., Any]], *args: Any) -> None:
        for hook in hooks:
            try:
                hook(*args)
            except Exception:
                log.exception("surestep hook %r failed; carrying on", hook)
