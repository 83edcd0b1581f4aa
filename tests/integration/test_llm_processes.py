"""LLM steps in real worker processes, through the real ``openai`` SDK to a model
server on 127.0.0.1, on a SQLite file shared by processes and on PostgreSQL: a rate limit
shared by two workers, and a worker SIGKILLed while a model call is in flight."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import llm_app  # siblings in tests/integration
import processes
import pytest
from fakes.model_servers import OPENAI, FakeModelServer, Reply, openai_completion

from surestep import App, State

LLM_APP = Path(__file__).with_name("llm_app.py")

Spawn = Callable[[int], processes.WorkerProcess]


@pytest.fixture
def server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as running:
        yield running


@pytest.fixture
def spawn(db_url: str, server: FakeModelServer, tmp_path: Path) -> Iterator[Spawn]:
    started: list[processes.WorkerProcess] = []

    def start(rpm: int) -> processes.WorkerProcess:
        argv = [sys.executable, str(LLM_APP), db_url, server.openai_base_url, str(rpm)]
        worker = processes.WorkerProcess(argv, tmp_path, tmp_path / f"worker-{len(started)}.err")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.02)


def live_workers(app: App) -> int:
    with app.store.reading() as cur:
        cur.execute("SELECT COUNT(*) FROM surestep_workers WHERE stopped_at IS NULL")
        return int(cur.fetchone()[0])


def answers(n: int, delay: float = 0.0, first: int = 0) -> list[Reply]:
    return [
        Reply(body=openai_completion(f'{{"label": "l{i}"}}'), delay=delay)
        for i in range(first, first + n)
    ]


@pytest.mark.slow
def test_two_workers_share_one_rate_limit(
    db_url: str, server: FakeModelServer, spawn: Spawn
) -> None:
    rpm = 6
    server.script(OPENAI, *answers(20))
    app = llm_app.build(db_url, server.openai_base_url, rpm)
    try:
        workers = [spawn(rpm), spawn(rpm)]
        wait_for(lambda: live_workers(app) == 2, "both workers up")
        handles = [app.start("label", f"ticket {n}") for n in range(10)]
        wait_for(lambda: sum(h.state == State.SUCCESS for h in handles) == rpm, "6 runs done")
        time.sleep(3.0)  # both workers keep trying; the window holds them back
        received = [r for r in server.requests if r.path == OPENAI]
        assert len(received) == rpm  # not one request more than the limit, in a minute
        waiting = [h for h in handles if h.state != State.SUCCESS]
        assert len(waiting) == 10 - rpm
        assert all(h.state == State.WAITING for h in waiting)  # durably, holding no slot
        claimed_by = {
            event.actor
            for h in handles
            for event in app.get_run(h.id).events
            if event.reason == "claimed"
        }
        assert len(claimed_by) == 2, "both workers executed runs under the one limit"
        for worker in workers:
            assert worker.stop() == 0
    finally:
        app.close()


@pytest.mark.slow
def test_a_worker_killed_during_a_model_call_loses_nothing(
    db_url: str, server: FakeModelServer, spawn: Spawn
) -> None:
    server.script(OPENAI, *answers(1, delay=30.0), *answers(1, first=1))
    app = llm_app.build(db_url, server.openai_base_url, 0)
    try:
        handle = app.start("label", "urgent")
        first = spawn(0)
        wait_for(lambda: len(server.requests) == 1, "the first call in flight")
        first.kill()
        second = spawn(0)
        wait_for(lambda: handle.state == State.SUCCESS, "the run finished", timeout=90)
        assert handle.result() == "L1"  # the second reply: the call was made again
        calls = app.llm.ledger.calls(handle.id)
        assert [c.outcome for c in calls] == ["ok"]  # the killed call never ended
        assert second.stop() == 0
    finally:
        app.close()
