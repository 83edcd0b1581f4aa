"""App: the explicit object that holds a registry, a store, a clock and hooks."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from surestep.auth.sessions import Sessions
from surestep.auth.users import Users
from surestep.clock import Clock, DatabaseClock, SystemClock
from surestep.engine.runtime import ExhaustedHandler
from surestep.engine.steps import make_step_wrapper
from surestep.engine.worker import Timer, Wakers, Worker
from surestep.errors import (
    ConfigurationError,
    RunNotFoundError,
    StorageError,
    UnknownWorkflowError,
)
from surestep.flow.methods import FlowMethods
from surestep.flow.schedules import Schedules
from surestep.flow.store import MapStore
from surestep.flow.triggers import Triggers
from surestep.handle import RunHandle
from surestep.hooks import Hooks
from surestep.llm.methods import LLMMethods
from surestep.names import check_name, default_name
from surestep.observe.drift_watch import DriftWatch
from surestep.observe.traceparent import check_traceparent
from surestep.records import RunRecord
from surestep.redrive import Progress, RedriveOutcome, redrive_many
from surestep.registry import Registry, StepDef, WorkflowDef, check_budget
from surestep.retry import DEFAULT_RETRY, Retry
from surestep.review.notify import EVENTS as REVIEW_EVENTS
from surestep.review.notify import Declare, Webhook, Webhooks
from surestep.review.request import open_step_review
from surestep.review.service import Reviews
from surestep.review.store import ReviewStore
from surestep.serialization import dumps
from surestep.states import State
from surestep.storage import Store, open_store
from surestep.storage.workers import WorkerStore
from surestep.versions import VersionRecord, read_versions

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from surestep.observe.tracing import Tracing

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_DATABASE_URL = "sqlite:///surestep.db"
ON_DEADLINE = ("fail", "cancel", "review")


class App(LLMMethods, FlowMethods):
    """A surestep application: its workflows, steps, database and clock.

    >>> app = App("sqlite:///surestep.db")   # doctest: +SKIP
    >>> App()   # reads SURESTEP_DATABASE_URL, else ./surestep.db  # doctest: +SKIP

    The database is opened (and migrated) on first use, not when the App is made. With
    ``must_exist=True`` a missing SQLite file is an error rather than created (as the
    read-only commands of ``surestep`` open it).

    ``tracing=True`` (or a ``TracerProvider``) traces runs with OpenTelemetry; see
    :meth:`trace`.
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        clock: Clock | None = None,
        actor: str = "app",
        must_exist: bool = False,
        tracing: bool | TracerProvider = False,
    ) -> None:
        self.database_url = (
            database_url or os.environ.get("SURESTEP_DATABASE_URL") or DEFAULT_DATABASE_URL
        )
        clock = clock or SystemClock()
        # Real time is read from the database's clock (see DatabaseClock); an injected
        # clock of another kind (a FakeClock) is used as it is.
        self.clock: Clock = DatabaseClock(clock) if isinstance(clock, SystemClock) else clock
        self.actor = actor
        self.must_exist = must_exist
        self.registry = Registry()
        self.hooks = Hooks()
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self.wakers = Wakers()
        self.reviews = Reviews(self)
        self.users = Users(self)  # of the REST API
        self.sessions = Sessions(self)  # of the web console: a token exchanged at sign-in
        # What a step's on_exhausted may name beyond dead_letter and fail.
        self.exhausted: dict[str, ExhaustedHandler] = {"review": open_step_review}
        # Checks confidence drift every few minutes once on_drift has a hook.
        self.drift = DriftWatch(self)
        self.schedules = Schedules(self, self.workflow)
        self.triggers = Triggers()
        self.timers: tuple[Timer, ...] = (self.reviews, self.drift, self.schedules)
        self._webhooks: Webhooks | None = None
        self.tracing: Tracing | None = None
        if tracing is not False:
            self.trace(None if tracing is True else tracing)

    @property
    def store(self) -> Store:
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    store = open_store(self.database_url, must_exist=self.must_exist)
                    ReviewStore.attach(store)
                    MapStore.attach(store)
                    if isinstance(self.clock, DatabaseClock):
                        # Best effort: a worker re-measures on every heartbeat.
                        with contextlib.suppress(StorageError):
                            self.clock.align(store.server_time)
                    self._store = store
        return self._store

    def wake_workers(self) -> None:
        """Wake this process's idle workers: a run of theirs may be ready now."""
        self.wakers.wake_all()

    def close(self) -> None:
        """Close the database connection(s) and the model providers' clients."""
        if self._llm is not None:
            self._llm.close()
        if self._store is not None:
            self._store.close()
            self._store = None

    def __repr__(self) -> str:
        scheme = self.database_url.split("://", 1)[0]
        return f"App({scheme}://…, {len(self.registry.workflows())} workflows)"

    # -- declaring ---------------------------------------------------------------------

    @overload
    def workflow(
        self, name: Callable[P, R], version: str = "1", *, budget_usd: float | None = None
    ) -> Callable[P, R]: ...

    @overload
    def workflow(
        self,
        name: str | None = None,
        version: str = "1",
        *,
        budget_usd: float | None = None,
        queue: str | None = None,
        concurrency_key: Callable[..., Any] | None = None,
        per_key_concurrency: int | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def workflow(
        self,
        name: str | Callable[P, R] | None = None,
        version: str = "1",
        *,
        budget_usd: float | None = None,
        queue: str | None = None,
        concurrency_key: Callable[..., Any] | None = None,
        per_key_concurrency: int | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]] | Callable[P, R]:
        """Declare a workflow. Called directly (outside a worker) it is a plain call.

        >>> @app.workflow(name="summarize", version="1")   # doctest: +SKIP
        ... def summarize(doc_id: str) -> dict: ...

        ``@app.workflow`` without parentheses names it after the function.
        ``budget_usd`` caps what the model calls of each run may cost (``app.start`` can
        give a run another budget).

        ``queue`` (declared first with :meth:`queue`) claims its runs through that queue's
        limits; ``concurrency_key`` (a function of the workflow's arguments, e.g.
        ``lambda doc: doc.tenant``) with ``per_key_concurrency`` caps how many runs of one
        key run at once, so one key's backlog cannot starve the others.
        """

        def register(fn: Callable[P, R]) -> Callable[P, R]:
            wf_name = name if isinstance(name, str) else default_name(fn, "workflow")
            workflow = self.registry.add_workflow(
                fn,
                wf_name,
                version,
                budget_usd,
                queue=queue,
                concurrency_key=concurrency_key,
                per_key_concurrency=per_key_concurrency,
            )

            @functools.wraps(fn)
            def call(*args: P.args, **kwargs: P.kwargs) -> R:
                return fn(*args, **kwargs)

            call.__surestep_workflow__ = workflow  # type: ignore[attr-defined]
            return call

        if callable(name):  # @app.workflow, without parentheses
            return register(name)
        return register

    @overload
    def step(
        self,
        name: Callable[P, R],
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
        on_exhausted: str = "dead_letter",
        compensate: Callable[..., Any] | None = None,
    ) -> Callable[P, R]: ...

    @overload
    def step(
        self,
        name: str | None = None,
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
        on_exhausted: str = "dead_letter",
        compensate: Callable[..., Any] | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def step(
        self,
        name: str | Callable[P, R] | None = None,
        *,
        retry: Retry | None = None,
        timeout: float | None = None,
        on_exhausted: str = "dead_letter",
        compensate: Callable[..., Any] | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]] | Callable[P, R]:
        """Declare a step: inside a workflow each call is checkpointed and retried.

        Outside any workflow the decorated function is an ordinary call, so steps can be
        unit-tested directly. ``on_exhausted`` says where a step goes when its retries
        run out: ``"dead_letter"`` (the run parks in dead_letter for an operator to
        redrive) or ``"fail"`` (a ``StepError`` is raised into the workflow).

        ``compensate`` undoes the step (saga): when the run later fails for good or is
        cancelled, the compensations of its completed steps run in reverse order, each
        called with the step's own arguments and checkpointed like a step, with its own
        retries. Pass another ``@app.step`` (for its retry policy) or a plain function.

        ``@app.step`` without parentheses takes the defaults. A step's name is what the
        run's history records, so it must stay the same across deploys: a lambda has
        none and needs ``app.step(name=...)(lambda ...)``.
        """

        def register(fn: Callable[P, R]) -> Callable[P, R]:
            step_name = name if isinstance(name, str) else default_name(fn, "step")
            undo = None if compensate is None else self._compensation(compensate, step_name)
            step = self.registry.add_step(
                fn, step_name, retry or DEFAULT_RETRY, timeout, on_exhausted, undo
            )
            wrapper = functools.wraps(fn)(make_step_wrapper(step))
            wrapper.__surestep_step__ = step  # type: ignore[attr-defined]
            return wrapper

        if callable(name):  # @app.step, without parentheses
            return register(name)
        return register

    def _compensation(self, undo: Callable[..., Any], step_name: str) -> StepDef:
        registered: StepDef | None = getattr(undo, "__surestep_step__", None)
        if registered is not None:
            return registered
        if not callable(undo):
            raise ConfigurationError(f"step {step_name!r}: compensate= takes a function")
        return self.registry.add_step(
            undo, f"{step_name}:compensate", DEFAULT_RETRY, None, "dead_letter"
        )

    def hook(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Add a hook from the catalogue in :mod:`surestep.hooks`."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.hooks.add(name, fn)
            return fn

        return register

    def trace(self, tracer_provider: TracerProvider | None = None) -> Tracing:
        """Trace this App's runs with OpenTelemetry: a span per execution slice of a run
        and per step attempt, all slices of a run in one trace (docs/traces.md).

        Spans go to ``tracer_provider``, by default the global one (set by the SDK's
        setup or ``opentelemetry-instrument``); with none configured, the API's no-op.
        """
        from surestep.observe.tracing import Tracing  # only an App that traces imports it

        if self.tracing is not None:
            raise ConfigurationError("this App is traced already; call app.trace() once")
        self.tracing = Tracing(tracer_provider)
        self.tracing.subscribe(self.hooks)
        return self.tracing

    def notify_reviews(
        self,
        url: str,
        *,
        secret: str | bytes,
        events: Sequence[str] = REVIEW_EVENTS,
        name: str = "webhook",
        timeout: float = 10.0,
    ) -> Webhook:
        """POST a signed JSON event to ``url`` when a review task is created, escalated,
        expired or decided (``events``), delivered durably with retries; see
        :mod:`surestep.review.notify` and docs/notifications.md.

        Call it where the App is built, in every process that runs its workers or decides
        its tasks: the URL and ``secret`` stay in memory and are never stored.
        """
        if self._webhooks is None:
            self._webhooks = Webhooks(self, Declare(self.step, self.workflow, self.hook))
        return self._webhooks.add(url, secret=secret, events=events, name=name, timeout=timeout)

    # -- starting and watching runs ----------------------------------------------------

    def start(
        self,
        workflow: Callable[..., Any] | str,
        /,
        *args: Any,
        run_id: str | None = None,
        deadline: timedelta | None = None,
        on_deadline: str = "fail",
        traceparent: str | None = None,
        budget_usd: float | None = None,
        priority: int | None = None,
        **kwargs: Any,
    ) -> RunHandle:
        """Start a run, or return the existing run with this ``run_id``.

        ``run_id`` is the idempotency key: starting the same id again, from any process
        and at any time, never runs the workflow twice. It is generated when omitted.

        ``deadline`` bounds the whole run. When it passes (whether or not a worker is
        alive at that moment; the next one to look applies it) the breach is recorded and
        ``on_deadline`` applies: ``"fail"``, ``"cancel"`` (both undo completed steps that
        have compensations) or ``"review"`` (the run parks in needs_review).

        ``traceparent`` (a W3C header, e.g. a web request's) makes the run's spans part
        of the caller's trace; it is stored with the run, even if this App does not trace.

        ``budget_usd`` caps what the run's model calls may cost (default: the workflow's
        ``budget_usd``); a call that would exceed it is not made (docs/llm.md).

        ``priority`` (an int, default 0) orders the claims of the workflow's queue: higher
        first, equal priorities in the order they became due.
        """
        wf = self._resolve(workflow)
        _check_start(run_id, deadline, on_deadline, budget_usd)
        placement = wf.placement(args, kwargs, priority)
        if traceparent is not None:
            check_traceparent(traceparent)
            traceparent = traceparent.strip()
        run_id = run_id or uuid.uuid4().hex
        inputs = wf.codec.encode_args(args, kwargs, f"workflow {wf.name!r}")
        store = self.store  # first: opening it aligns the clock with the database's
        now = self.clock.now()
        if self.tracing is not None:
            traceparent = self.tracing.start_context(wf.name, run_id, traceparent)
        created = store.create_run(
            run_id,
            wf.name,
            wf.version,
            inputs,
            now,
            self.actor,
            deadline_at=None if deadline is None else now + deadline.total_seconds(),
            on_deadline=None if deadline is None else on_deadline,
            trace_context=traceparent,
            budget_usd=wf.budget_usd if budget_usd is None else budget_usd,
            placement=placement,
        )
        if created:
            self.wakers.wake_all()
        return RunHandle(self, run_id)

    def get_run(self, run_id: str) -> RunRecord:
        """The run with its steps, attempts, timings, errors and events."""
        return self.store.get_run(check_name("run_id", run_id))

    def handle(self, run_id: str) -> RunHandle:
        """A handle on an existing run."""
        if self.store.run_state(run_id) is None:
            raise RunNotFoundError(f"no run with id {run_id!r}")
        return RunHandle(self, run_id)

    def list_runs(
        self,
        state: State | str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        *,
        parent: str | None = None,
        since: float | None = None,
        before: float | None = None,
    ) -> list[RunRecord]:
        """Runs, newest first. ``state`` and ``workflow`` filter; ``since`` and ``before``
        (epoch seconds) keep runs created in ``[since, before)``; ``limit`` caps;
        ``parent`` lists a run's children (a map's in input order)."""
        if state is not None:
            try:
                state = State(state)
            except ValueError:
                raise ConfigurationError(
                    f"unknown state {state!r}; states are: {', '.join(s.value for s in State)}"
                ) from None
        if limit < 1:
            raise ConfigurationError(f"limit must be >= 1, got {limit}")
        if workflow is not None:
            check_name("workflow", workflow)
        if parent is not None:
            check_name("run_id", parent)
        return self.store.list_runs(state, workflow, limit, parent, since=since, before=before)

    def cancel(self, run_id: str, reason: str = "cancelled", *, actor: str | None = None) -> State:
        """Cancel a run that has not finished; return the state it was in.

        A pending, waiting or dead-lettered run is cancelled at once; a running run stops
        at its next step boundary (the step in flight finishes, its result is discarded).
        """
        check_name("run_id", run_id)
        return self.store.cancel(run_id, actor or self.actor, reason, self.clock.now())

    def send_event(
        self, run_id: str, name: str, payload: Any = None, *, actor: str | None = None
    ) -> None:
        """Send the event ``name`` with a JSON ``payload`` to a run, from any process.

        If the run waits for it, it wakes; if not yet, the event is buffered until a
        ``wait_for_event(name)`` consumes it. A finished or unknown run is an error.
        """
        check_name("run_id", run_id)
        check_name("event name", name)
        text = dumps(payload, f"payload of event {name!r}")
        self.store.send_event(run_id, name, text, actor or self.actor, self.clock.now())
        self.wakers.wake_all()

    def retry(self, run_id: str, *, actor: str | None = None) -> list[str]:
        """Redrive a dead-lettered run from its failed step; completed steps are not re-run.

        Returns the names of the steps that get a fresh retry budget.
        """
        check_name("run_id", run_id)
        steps = self.store.redrive(run_id, actor or self.actor, "redriven", self.clock.now())
        self.wakers.wake_all()
        return steps

    def retry_many(
        self,
        run_ids: Sequence[str] | None = None,
        *,
        workflow: str | None = None,
        since: datetime | float | None = None,
        error: str | None = None,
        dry_run: bool = False,
        actor: str | None = None,
        progress: Progress | None = None,
    ) -> list[RedriveOutcome]:
        """Redrive many dead-lettered runs; return what was (or would be) done with each.

        Either ``run_ids``, or every dead letter matching ``workflow``, ``since`` (dead-
        lettered at or after; a datetime or epoch seconds) and ``error`` (the type of its
        error, e.g. ``"ConnectionError"``). One run that cannot be redriven does not stop
        the rest: its outcome carries the ``error``. ``dry_run`` changes nothing.
        ``progress(outcome, total)`` is called after each run.

        >>> app.retry_many(workflow="summarize", error="TimeoutError")  # doctest: +SKIP
        """
        return redrive_many(
            self,
            run_ids,
            workflow=workflow,
            since=since,
            error=error,
            dry_run=dry_run,
            actor=actor or self.actor,
            progress=progress,
        )

    def prune(self, older_than: timedelta, *, batch: int = 1000) -> int:
        """Delete finished runs (success, failed, cancelled) last changed more than
        ``older_than`` ago, with their steps, attempts, events, model calls, messages and
        maps' bookkeeping; return how many. Review tasks and decisions are kept.

        Deletes ``batch`` runs per transaction, so it never holds locks for long.
        Dead-lettered and unfinished runs are kept, whatever their age.
        """
        if older_than.total_seconds() < 0:
            raise ConfigurationError(f"older_than must not be negative, got {older_than}")
        return self.store.prune(self.clock.now() - older_than.total_seconds(), batch)

    def versions(self) -> list[VersionRecord]:
        """Per workflow, each version with unfinished runs (counted by state) or a live
        worker, and the live workers that serve it.

        A version with runs waiting for a worker and no live worker serving it is
        stranded (``record.stranded`` counts those runs): deploy a worker that registers
        that version, or serve old and new runs from one function with
        :func:`surestep.patched`. Any App on the database can ask, whatever it registers.
        """
        return read_versions(WorkerStore(self.store), self.clock.now())

    def worker(self, concurrency: int = 16, **options: Any) -> Worker:
        """A worker for this App's workflows: ``app.worker(concurrency=16).run()``."""
        return Worker(self, concurrency=concurrency, **options)

    def _resolve(self, workflow: Callable[..., Any] | str) -> WorkflowDef:
        if isinstance(workflow, str):
            return self.registry.workflow(workflow)
        wf: WorkflowDef | None = getattr(workflow, "__surestep_workflow__", None)
        if wf is None:
            raise UnknownWorkflowError(
                f"{getattr(workflow, '__qualname__', workflow)!r} is not a workflow; "
                f"decorate it with @app.workflow()"
            )
        if self.registry.find(wf.name) is not wf:
            raise UnknownWorkflowError(
                f"workflow {wf.name!r} is registered on another App, not on {self!r}; "
                f"start it with the App whose @app.workflow declared it (a worker of that "
                f"App runs it), or declare it on this one"
            )
        return wf


def _check_start(
    run_id: str | None, deadline: timedelta | None, on_deadline: str, budget_usd: float | None
) -> None:
    """Refuse ``start`` settings that cannot work, before anything is stored."""
    check_budget("app.start", budget_usd)
    if run_id is not None:
        check_name("run_id", run_id)
    if on_deadline not in ON_DEADLINE:
        raise ConfigurationError(
            f"on_deadline={on_deadline!r}; use one of {', '.join(ON_DEADLINE)}"
        )
    if deadline is not None and (
        not isinstance(deadline, timedelta) or deadline.total_seconds() <= 0
    ):
        raise ConfigurationError(f"deadline must be a positive timedelta, got {deadline!r}")
