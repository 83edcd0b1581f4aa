"""The worker: claims due runs under a lease and executes many of them at once.

One asyncio loop per worker. ``async def`` workflows run on the loop; plain workflows
run in a thread pool of ``concurrency`` threads. A run that waits (for a retry backoff)
is released, so it holds no slot, thread or memory until it is due again.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import secrets
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from surestep.clock import DatabaseClock
from surestep.engine.claims import Claims
from surestep.engine.lifecycle import execute_async, execute_sync
from surestep.engine.presence import Presence
from surestep.engine.recovery import Recovery, host_key
from surestep.engine.runtime import ExhaustedHandler, RunExecution
from surestep.errors import ConfigurationError, StorageError
from surestep.hooks import Hooks
from surestep.observe.logs import EventLog
from surestep.storage import ClaimedRun

if TYPE_CHECKING:
    from surestep.clock import Clock
    from surestep.registry import Registry
    from surestep.storage import Store

log = logging.getLogger("surestep.worker")

#: How often a worker checks that the async runs it executes were not cancelled.
_CANCEL_CHECK_SECONDS = 0.5
#: A host clock further than this from the database's is worth a warning.
_CLOCK_SKEW_WARNING_SECONDS = 1.0


class Wakers:
    """The workers of one App in this process: a run started here wakes them at once,
    rather than at their next poll."""

    def __init__(self) -> None:
        self._wakers: set[Callable[[], None]] = set()

    def add(self, wake: Callable[[], None]) -> None:
        self._wakers.add(wake)

    def discard(self, wake: Callable[[], None]) -> None:
        self._wakers.discard(wake)

    def wake_all(self) -> None:
        for wake in list(self._wakers):
            wake()


#: Seconds between looks at the timers while every slot of a worker is busy.
FULL_TIMER_CHECK = 1.0


class WorkerHost(Protocol):
    """What a worker needs of its App (an :class:`surestep.App` is one)."""

    clock: Clock
    registry: Registry
    hooks: Hooks
    wakers: Wakers

    @property
    def store(self) -> Store: ...

    @property
    def exhausted(self) -> Mapping[str, ExhaustedHandler]:
        """What a step's ``on_exhausted`` may name beyond dead_letter and fail."""

    @property
    def timers(self) -> Sequence[Timer]:
        """Durable timers kept beside the runs (review SLAs), swept with deadlines."""


class Timer(Protocol):
    """Something with due times that a worker applies when they pass, even if no
    worker was alive at that moment (the next one to look applies it)."""

    def next_due(self) -> float | None: ...

    def sweep(self, now: float | None = None, actor: str | None = None) -> object: ...


class Worker:
    """Executes runs of the App's workflows.

    >>> app.worker(concurrency=16).run()   # blocks until SIGTERM or SIGINT  # doctest: +SKIP
    """

    def __init__(
        self,
        app: WorkerHost,
        *,
        concurrency: int = 16,
        lease_seconds: float = 30.0,
        heartbeat_interval: float | None = None,
        poll_interval: float | None = None,
        grace_period: float = 30.0,
        max_recoveries: int = 5,
        metrics_port: int | None = None,
        metrics_host: str = "127.0.0.1",
    ) -> None:
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
        for option, value, least in (
            ("lease_seconds", lease_seconds, 0.0),
            ("poll_interval", 1.0 if poll_interval is None else poll_interval, 0.0),
        ):
            if not value > least:
                raise ConfigurationError(f"worker {option} must be > 0 seconds, got {value}")
        if max_recoveries < 1:
            raise ConfigurationError(f"worker max_recoveries must be >= 1, got {max_recoveries}")
        if grace_period < 0:
            raise ConfigurationError(f"worker grace_period must be >= 0, got {grace_period}")
        self.app = app
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.heartbeat_interval = heartbeat_interval or lease_seconds / 3
        # None: the store's default (SQLite polls often; PostgreSQL is woken by NOTIFY),
        # known once the store is open: not here, where a locked database would raise.
        self._poll_option = poll_interval
        self.poll_interval = poll_interval or 0.0
        self.grace_period = grace_period
        self.max_recoveries = max_recoveries
        self.host = host_key()
        self.id = f"{self.host}:{os.getpid()}:{secrets.token_hex(3)}"
        self.recovery = Recovery(
            lambda: app.store, app.clock, app.hooks, self.id, self.host, max_recoveries
        )
        self._running: dict[asyncio.Task[None], ClaimedRun] = {}
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._forced = False
        self._next_deadline_check = 0.0
        self._warned_skew: float | None = None
        # Set when shutdown begins: runs stop at their next step boundary.
        self._draining = threading.Event()
        self._presence: Presence | None = None
        # Per-process metrics over HTTP (see surestep.observe.metrics); one port per worker.
        self.metrics_port = metrics_port
        self.metrics_host = metrics_host

    # -- running ---------------------------------------------------------------------

    def run(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down gracefully.

        From a thread other than the main thread, where Python cannot install signal
        handlers, it runs until :meth:`stop` is called instead.
        """
        main_thread = threading.current_thread() is threading.main_thread()
        asyncio.run(self.run_async(handle_signals=main_thread))

    def stop(self) -> None:
        """Ask the worker to shut down gracefully; safe from any thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._wake_from_any_thread()

    async def run_async(
        self,
        *,
        handle_signals: bool = False,
        until: Callable[[], bool] | None = None,
    ) -> None:
        """Run on the current event loop until stopped, or until ``until()`` is true."""
        self._loop = asyncio.get_running_loop()
        self._stop, self._wake = asyncio.Event(), asyncio.Event()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            if await self._open_store():
                await self._serve(until)
        finally:
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self._loop.remove_signal_handler(sig)
            log.info("worker %s stopped", self.id)

    async def _serve(self, until: Callable[[], bool] | None) -> None:
        threads = ThreadPoolExecutor(self.concurrency, thread_name_prefix="surestep-run")
        self.poll_interval = self._poll_option or self.app.store.default_poll_interval
        self._check_clock()
        wake = self._wake_from_any_thread
        self.app.wakers.add(wake)
        unlisten = self.app.store.listen(wake)
        beat = asyncio.create_task(self._heartbeat())
        watch = asyncio.create_task(self._watch_cancellations())
        log.info(
            "worker %s started on %s",
            self.id,
            self.app.store.description,
            extra={"worker": self.id},
        )
        unplug = self._plug_in()
        serves = [(wf.name, wf.version) for wf in self.app.registry.workflows()]
        presence = Presence(self.app.store, self.app.clock, self.id, serves, self.lease_seconds)
        self._presence = presence
        try:
            presence.arrive()
            self.recovery.recover_local()
            await self._claim_loop(threads, until)
        finally:
            unplug()
            self.app.wakers.discard(wake)
            if unlisten is not None:
                unlisten()
            beat.cancel()
            watch.cancel()
            await self._shutdown()
            presence.leave()
            threads.shutdown(wait=False, cancel_futures=True)

    def _plug_in(self) -> Callable[[], None]:
        """Subscribe the event log (once per App: a second worker of the same App in this
        process shares the first one's) and, with a metrics port, the metrics and their
        HTTP server; return what undoes it."""
        hooks, undo = self.app.hooks, []
        if not any(isinstance(getattr(h, "__self__", None), EventLog) for h in hooks.on_retry):
            undo.append(hooks.subscribe(EventLog(self.id)))
        if self.metrics_port is not None:
            from surestep.observe.metrics import WorkerMetrics

            metrics = WorkerMetrics()
            metrics.track_slots(lambda: len(self._running), self.concurrency)
            undo.append(metrics.serve(self.metrics_port, self.metrics_host))
            undo.append(hooks.subscribe(metrics))
            log.info(
                "worker %s: metrics on http://%s:%d/metrics",
                self.id,
                self.metrics_host,
                self.metrics_port,
            )

        def unplug() -> None:
            for step in reversed(undo):
                step()

        return unplug

    async def _open_store(self) -> bool:
        """Open (and migrate) the database, waiting out a lock held by another process
        or a server that is not up yet; return False if stopped first."""
        assert self._stop is not None
        pause = 0.1
        while not self._stop.is_set():
            try:
                self.app.store  # noqa: B018 - opening it is the point
                return True
            except StorageError as exc:
                if not exc.transient:
                    raise
                log.warning(
                    "worker %s: cannot open the database yet: %s; trying again in %.1fs",
                    self.id,
                    exc,
                    pause,
                )
                await self._nap(pause)
                pause = min(pause * 2, 5.0)
        return False

    async def _claim_loop(
        self, threads: ThreadPoolExecutor, until: Callable[[], bool] | None
    ) -> None:
        assert self._stop is not None and self._wake is not None
        store, clock = self.app.store, self.app.clock
        claims = Claims(store, self.app.registry, self.id)
        claims.declare(clock.now())
        while not self._stop.is_set():
            if until is not None and until():
                return
            self._wake.clear()
            free = self.concurrency - len(self._running)
            if free == 0:
                # Every slot is busy, but timers still come due (deadlines, review SLAs,
                # schedules): look at them now and then; a finishing run wakes us sooner.
                self._enforce_deadlines()
                await self._nap(FULL_TIMER_CHECK)
                continue
            self._enforce_deadlines()
            try:
                claimed = claims.claim(free, clock.now, self.lease_seconds)
            except StorageError as exc:
                # Keep the worker alive and try again. If the claim committed but its
                # acknowledgement was lost, runs are leased to us that nothing executes:
                # hand them back first.
                log.error("worker %s: cannot claim runs: %s; trying again", self.id, exc)
                await self._nap(0.5 if exc.transient else 5.0)
                self.recovery.release_orphans(self._in_flight())
                continue
            except Exception:
                # Not the database's trouble: a bug. Log it and keep claiming, since
                # one bad run must not stop a worker that other runs need.
                log.exception("worker %s: claiming runs failed; trying again", self.id)
                await self._nap(5.0)
                self.recovery.release_orphans(self._in_flight())
                continue
            if claimed and self.app.hooks.on_claim:
                at = clock.now()
                for run in claimed:
                    due = at if run.due_at is None else run.due_at
                    Hooks.emit(self.app.hooks.on_claim, run.id, run.workflow, due, at)
            for run in claimed:
                task = asyncio.create_task(self._execute(run, threads))
                self._running[task] = run
                task.add_done_callback(self._finished)
            if len(claimed) == free:
                await asyncio.sleep(0)  # let the new runs start; more may be due
                continue
            try:
                next_due = _earliest(claims.next_due(), *(t.next_due() for t in self.app.timers))
            except StorageError:
                next_due = None
            await self._idle(next_due)

    async def _idle(self, next_due: float | None) -> None:
        """Sleep until something may be due: a slot frees, a run starts, or a timer."""
        until_due = None if next_due is None else max(0.0, next_due - self.app.clock.now())
        if self._running:
            # A finishing run wakes us; the clock is left alone.
            await self._nap(
                self.poll_interval if until_due is None else min(self.poll_interval, until_due)
            )
        else:
            # Sleeping on the App's clock lets a FakeClock jump straight to the next
            # timer, so tests of hour-long backoffs take no time.
            await self._nap(
                self.poll_interval, on_clock=self.poll_interval if until_due is None else until_due
            )

    async def _nap(self, timeout: float | None, on_clock: float | None = None) -> None:
        """Wait until woken or stopped, at most ``timeout`` real seconds or ``on_clock``
        seconds of the App's clock, whichever ends first."""
        assert self._stop is not None and self._wake is not None
        waits: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self._stop.wait()),
        ]
        if on_clock is not None:
            waits.append(asyncio.ensure_future(self.app.clock.sleep(on_clock)))
        _, pending = await asyncio.wait(waits, timeout=timeout, return_when="FIRST_COMPLETED")
        for task in pending:
            task.cancel()

    async def _execute(self, claimed: ClaimedRun, threads: ThreadPoolExecutor) -> None:
        hooks = self.app.hooks
        if hooks.on_run_start:
            Hooks.emit(hooks.on_run_start, claimed.id, claimed.workflow, claimed.trace_context)
        try:
            await self._execute_slice(claimed, threads)
        finally:
            if hooks.on_run_end:
                Hooks.emit(hooks.on_run_end, claimed.id)

    async def _execute_slice(self, claimed: ClaimedRun, threads: ThreadPoolExecutor) -> None:
        app = self.app
        try:
            workflow = app.registry.workflow(claimed.workflow)
            execution = RunExecution(
                store=app.store,
                clock=app.clock,
                hooks=app.hooks,
                worker=self.id,
                claimed=claimed,
                workflow=workflow,
                recorded=claimed.recorded,
                loop=self._loop,
                draining=self._draining,
                steps=app.registry.step,
                exhausted=app.exhausted,
            )
            if workflow.is_async and execution.compensating is None:
                await execute_async(execution)
            else:
                assert self._loop is not None
                # A fresh context per run: nothing set by one run can leak into the
                # next run that lands on the same pool thread.
                fresh = contextvars.Context()
                await self._loop.run_in_executor(threads, fresh.run, execute_sync, execution)
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.exception("run %s: the worker failed executing it; releasing it", claimed.id)
            with contextlib.suppress(Exception):
                self.recovery.recover(
                    claimed.id, claimed.token, "worker error; see the worker's log"
                )

    def _in_flight(self) -> set[str]:
        return {run.id for run in self._running.values()}

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        if self._wake is not None:
            self._wake.set()

    # -- leases ----------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        store, clock = self.app.store, self.app.clock
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                in_flight = [run.id for run in self._running.values()]
                store.heartbeat(self.id, in_flight, clock.now(), self.lease_seconds)
                self._check_clock()
                if self.recovery.recover_expired(self._in_flight()):
                    self._wake_from_any_thread()
                self.recovery.recover_local()
                if self._presence is not None:
                    self._presence.beat()
            except Exception:
                log.exception("worker %s: heartbeat failed; will try again", self.id)

    async def _watch_cancellations(self) -> None:
        """Cancel the task of an async run this worker no longer holds (it was cancelled,
        or its lease was lost), so that its running step is interrupted at once rather
        than at the next step boundary. Plain (threaded) runs stop at the boundary."""
        while True:
            await asyncio.sleep(_CANCEL_CHECK_SECONDS)
            tasks = {
                run.id: task
                for task, run in self._running.items()
                if self.app.registry.workflow(run.workflow).is_async and not run.compensating
            }
            if not tasks:
                continue
            try:
                held = self.app.store.held(self.id, list(tasks))
            except StorageError:
                continue
            for run_id in set(tasks) - held:
                log.info("run %s: no longer held (cancelled?); cancelling its task", run_id)
                tasks[run_id].cancel()

    def _enforce_deadlines(self) -> None:
        """Apply passed run deadlines and other timers, at most every 0.1 s (indexed
        reads; the write lock is taken only when something is due)."""
        now = time.monotonic()
        if now < self._next_deadline_check:
            return
        self._next_deadline_check = now + 0.1
        try:
            breached = self.app.store.enforce_deadlines(self.app.clock.now(), self.id)
            for timer in self.app.timers:
                try:
                    timer.sweep(self.app.clock.now(), self.id)
                except StorageError:
                    raise
                except Exception:  # a timer's own bug must not stop the worker
                    log.exception("worker %s: a timer's sweep failed; carrying on", self.id)
        except StorageError as exc:
            log.warning("worker %s: cannot check deadlines yet: %s", self.id, exc)
            return
        for run_id in breached:
            if self.app.hooks.on_deadline:
                Hooks.emit(self.app.hooks.on_deadline, run_id)

    def _check_clock(self) -> None:
        """Re-measure the offset to the database's clock (leases and due times are read
        from it); warn once when this host's clock is off by more than a second, and
        again when the difference changes."""
        clock = self.app.clock
        if not isinstance(clock, DatabaseClock):
            return  # an injected clock (tests) or no server clock: nothing to compare
        try:
            skew = clock.align(self.app.store.server_time)
        except StorageError as exc:
            log.warning("worker %s: cannot read the database's clock: %s", self.id, exc)
            return
        if skew is None:
            return
        if abs(skew) <= _CLOCK_SKEW_WARNING_SECONDS:
            if self._warned_skew is not None:
                log.info("worker %s: this host's clock agrees with the database's again", self.id)
            self._warned_skew = None
            return
        warned = self._warned_skew
        if warned is None or abs(skew - warned) > _CLOCK_SKEW_WARNING_SECONDS:
            log.warning(
                "worker %s: this host's clock is %.1f s %s the database's; surestep reads "
                "leases and due times from the database's clock, so runs are safe, but "
                "fix this host's time synchronisation (NTP): your own code and logs see "
                "the wrong time",
                self.id,
                abs(skew),
                "ahead of" if skew < 0 else "behind",
            )
            self._warned_skew = skew

    async def _shutdown(self) -> None:
        self._draining.set()
        if self._running:
            grace = 0.0 if self._forced else self.grace_period
            log.info(
                "worker %s: waiting up to %.0fs for %d run(s) to reach a step boundary",
                self.id,
                grace,
                len(self._running),
            )
            _, pending = await asyncio.wait(list(self._running), timeout=grace)
            left = [self._running[task] for task in pending if task in self._running]
            for task in pending:
                task.cancel()
            if left:
                # Their threads may still be running; the release fences off any write
                # they attempt later, and another worker resumes them from the last step.
                try:
                    self.app.store.release(
                        [(r.id, r.token) for r in left],
                        self.id,
                        "worker shut down before the run finished",
                        self.app.clock.now(),
                    )
                except StorageError as exc:
                    # Their leases lapse instead, and another worker recovers them then.
                    log.warning("worker %s: cannot hand back its runs: %s", self.id, exc)

    def _on_signal(self, sig: signal.Signals) -> None:
        assert self._stop is not None
        if self._stop.is_set():
            log.warning("second %s: stopping now, without waiting", sig.name)
            self._forced = True
        else:
            log.info("%s: finishing in-flight steps, then stopping", sig.name)
        self._stop.set()
        if self._wake is not None:
            self._wake.set()

    def _wake_from_any_thread(self) -> None:
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self._wake.set)


def _earliest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None
