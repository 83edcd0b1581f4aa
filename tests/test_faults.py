"""Faults found by fault injection: zombies, recovered runs' place in the queue, locked
SQLite databases, SystemExit from user code, and skewed clocks."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from surestep import App, FakeClock, Retry, State, SystemClock
from surestep.storage import open_store
from surestep.testing import drive

# Claims the one pending run of workflow "wf" as a worker of this host would, then exits.
_CLAIM_AND_EXIT = """
import os, sys
from surestep.engine.recovery import host_key
from surestep.storage import open_store

store = open_store(sys.argv[1])
owner = f"{host_key()}:{os.getpid()}:zombie"
claimed = store.claim(owner, [("wf", "1")], 1, float(sys.argv[2]), 3600.0)
assert len(claimed) == 1, claimed
store.close()
"""


def _wait_until_zombie(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rfind(")") + 1 :].split()[0] == "Z":
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} did not exit within {timeout}s")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_runs_of_a_zombie_worker_are_taken_over_at_once(
    app: App, db_url: str, clock: FakeClock
) -> None:
    @app.workflow(name="wf")
    def wf() -> str:
        return "done"

    handle = app.start(wf)
    # A real process of this host claims the run under an hour-long lease and exits;
    # it is not reaped (no wait()), so it stays a zombie while the worker looks.
    child = subprocess.Popen([sys.executable, "-c", _CLAIM_AND_EXIT, db_url, str(clock.now())])
    try:
        _wait_until_zombie(child.pid)
        run = app.get_run(handle.id)
        assert run.state == State.RUNNING and run.lease_owner is not None
        assert f":{child.pid}:" in run.lease_owner
        drive(app, until=lambda: handle.state == State.SUCCESS, timeout=10)
    finally:
        child.wait()
    assert handle.result() == "done"
    assert any(
        e.reason and f":{child.pid}:zombie is gone" in e.reason
        for e in app.get_run(handle.id).events
    )


@pytest.mark.parametrize("why", ["recovery", "shutdown"])
def test_a_released_run_keeps_its_place_in_the_queue(db_url: str, why: str) -> None:
    store = open_store(db_url)
    try:
        store.create_run("early", "wf", "1", "{}", 1.0, "me")
        (claimed,) = store.claim("w1", [("wf", "1")], 1, 2.0, 30.0)
        for i in range(20):  # a backlog arrives while it runs
            store.create_run(f"later-{i:02}", "wf", "1", "{}", 3.0 + i, "me")
        if why == "recovery":
            assert store.expired_leases(40.0) == [("early", claimed.token, "w1")]
            released = store.release(
                [("early", claimed.token)], "w2", "lease expired", 40.0, max_recoveries=5
            )
        else:
            released = store.release([("early", claimed.token)], "w1", "shut down", 40.0)
        assert released.count == 1
        assert store.get_run("early").available_at == 1.0  # its original due time
        (first,) = store.claim("w2", [("wf", "1")], 1, 41.0, 30.0)
        assert first.id == "early"
    finally:
        store.close()


@pytest.mark.parametrize(
    ("kind", "exc"),
    [
        ("sync", SystemExit("the library called sys.exit(3)")),
        ("sync-timeout", KeyboardInterrupt("interrupted")),
        ("async", SystemExit("the library called sys.exit(3)")),
        ("async-timeout", KeyboardInterrupt("interrupted")),
    ],
)
def test_system_exit_from_a_step_is_the_attempts_error_not_a_worker_crash(
    app: App, kind: str, exc: BaseException
) -> None:
    timeout = 30.0 if kind.endswith("timeout") else None
    if kind.startswith("async"):

        @app.step(timeout=timeout)
        async def leave() -> int:
            raise exc

        @app.workflow(name="wf")
        async def awf() -> int:
            return await leave()

        handle = app.start(awf)
    else:

        @app.step(name="leave", timeout=timeout)
        def leave_sync() -> int:
            raise exc

        @app.workflow(name="wf")
        def wf() -> int:
            return leave_sync()

        handle = app.start(wf)
    drive(app, until=lambda: handle.state in (State.FAILED, State.DEAD_LETTER), timeout=20)
    run = app.get_run(handle.id)
    kind_name = type(exc).__name__
    # The default policy retries Exception only: it gives up on SystemExit at once.
    assert run.state == State.FAILED, run.error
    assert [(s.name, s.state, s.attempts) for s in run.steps] == [("leave", State.FAILED, 1)]
    assert run.steps[0].error is not None
    assert (run.steps[0].error["type"], run.steps[0].error["message"]) == (kind_name, str(exc))
    assert run.error is not None and f"{kind_name}: {exc}" in run.error["message"]
    assert not any(e.reason and "worker error" in e.reason for e in run.events)


def test_system_exit_is_retried_when_the_policy_says_so(app: App) -> None:
    calls = []

    @app.step(retry=Retry(max_attempts=2, initial_delay=1, retry_on=(Exception, SystemExit)))
    def leave() -> int:
        calls.append(1)
        raise SystemExit(3)

    @app.workflow(name="wf")
    def wf() -> int:
        return leave()

    handle = app.start(wf)
    drive(app, until=lambda: handle.state == State.DEAD_LETTER, timeout=20)
    run = app.get_run(handle.id)
    assert len(calls) == 2 and run.error is not None
    assert (run.error["type"], run.error["message"]) == ("SystemExit", "3")
    assert any(e.reason and "SystemExit: 3;" in e.reason for e in run.events)


@pytest.mark.parametrize("is_async", [False, True])
def test_system_exit_from_a_workflow_body_fails_the_run_naming_it(app: App, is_async: bool) -> None:
    if is_async:

        @app.workflow(name="wf")
        async def awf() -> int:
            raise SystemExit("bye")

        handle = app.start(awf)
    else:

        @app.workflow(name="wf")
        def wf() -> int:
            raise SystemExit("bye")

        handle = app.start(wf)
    drive(app, until=lambda: handle.state in (State.FAILED, State.DEAD_LETTER), timeout=20)
    run = app.get_run(handle.id)
    assert run.state == State.FAILED
    assert run.error is not None and (run.error["type"], run.error["message"]) == (
        "SystemExit",
        "bye",
    )


# Takes SQLite's write lock and holds it, as a process frozen mid-transaction would.
_HOLD_WRITE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


def _declare(app: App) -> None:
    @app.step(name="double")
    def double(x: int) -> int:
        return 2 * x

    @app.workflow(name="wf")
    def wf(x: int) -> int:
        return double(x)


def test_a_worker_waits_out_a_locked_sqlite_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "locked.db"
    url = f"sqlite:///{path}?busy_timeout=100"
    client = App(url)
    _declare(client)
    handle = client.start("wf", 21)
    client.close()
    # Another process holds the write lock for much longer than the busy timeout while
    # a new worker starts (open and migrations, recovery, claims, heartbeats).
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD_WRITE_LOCK, str(path), "1.5"], stdout=subprocess.PIPE
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        worker_app = App(url)
        _declare(worker_app)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="surestep"):
            drive(worker_app, until=lambda: handle.state == State.SUCCESS, timeout=20)
        assert time.monotonic() - started >= 1.0  # it did wait for the lock
        assert holder.wait(10) == 0
    assert handle.result() == 42
    assert "database is locked" in caplog.text
    worker_app.close()


def test_a_running_worker_survives_the_write_lock_held_mid_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "locked.db"
    app = App(f"sqlite:///{path}?busy_timeout=100")
    in_step, locked = threading.Event(), threading.Event()

    @app.step()
    def slow(x: int) -> int:
        in_step.set()
        assert locked.wait(10)
        return 2 * x  # recorded while another process holds the write lock

    @app.workflow(name="wf")
    def wf(x: int) -> int:
        return slow(x) + 1

    handle = app.start(wf, 20)
    # A short lease: heartbeats (and claims) run into the lock while it is held.
    worker = app.worker(concurrency=2, lease_seconds=0.6, poll_interval=0.05)
    thread = threading.Thread(target=lambda: asyncio.run(worker.run_async()))
    with caplog.at_level(logging.WARNING, logger="surestep"):
        thread.start()
        try:
            assert in_step.wait(10)
            with subprocess.Popen(
                [sys.executable, "-c", _HOLD_WRITE_LOCK, str(path), "1.5"],
                stdout=subprocess.PIPE,
            ) as holder:
                assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
                locked.set()
                assert holder.wait(10) == 0
            deadline = time.monotonic() + 10
            while handle.state != State.SUCCESS and time.monotonic() < deadline:
                time.sleep(0.05)
            assert thread.is_alive()  # the worker kept running
        finally:
            worker.stop()
            thread.join(10)
    assert handle.result() == 41
    assert "database is locked" in caplog.text
    app.close()


class AheadClock(SystemClock):
    """This host's clock, running ``seconds`` ahead (a host whose NTP has failed)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def now(self) -> float:
        return super().now() + self.seconds


def test_a_worker_whose_clock_runs_ahead_takes_no_live_lease(
    postgres_schema_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    honest = App(postgres_schema_url)
    _declare(honest)
    handle = honest.start("wf", 1)
    # A live worker on another host holds the run under a 30 s lease.
    assert honest.store.claim("elsewhere:1:live", [("wf", "1")], 1, honest.clock.now(), 30)
    ahead = App(postgres_schema_url, clock=AheadClock(45))
    _declare(ahead)
    worker = ahead.worker(concurrency=2, heartbeat_interval=0.1, poll_interval=0.05)
    end = time.monotonic() + 1.5
    with caplog.at_level(logging.WARNING, logger="surestep"):
        asyncio.run(worker.run_async(until=lambda: time.monotonic() > end))
    run = honest.get_run(handle.id)
    assert (run.state, run.lease_owner) == (State.RUNNING, "elsewhere:1:live")
    skew = [r for r in caplog.records if "ahead of the database's" in r.message]
    assert len(skew) == 1 and "45.0 s ahead" in skew[0].message  # once, not every heartbeat
    # A client whose clock runs 20 s ahead starts a run due now by the database's clock.
    client = App(postgres_schema_url, clock=AheadClock(20))
    _declare(client)
    started = client.start("wf", 2)
    due = honest.get_run(started.id).available_at
    assert due is not None and abs(due - honest.clock.now()) < 2
    for app in (honest, ahead, client):
        app.close()
