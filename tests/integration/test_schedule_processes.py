"""Schedules fired by real worker processes against one database (SQLite file and
PostgreSQL), on a clock the test moves for all of them (``schedule_app.FileClock``).

* Four workers, six periods: each fire starts exactly one run, executed exactly once,
  however many of the four saw it due at the same moment.
* A worker SIGKILLed, an outage of four fire times, two workers started: the catch-up
  policy holds ("all" starts the four, "latest" the last, "none" none), and nothing
  that fired before the outage fires again.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import processes  # siblings in tests/integration
import pytest
from schedule_app import set_time

from surestep import App, State

SCHEDULE_APP = Path(__file__).with_name("schedule_app.py")
T0 = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
Q = 15 * 60.0

pytestmark = pytest.mark.slow

Spawn = Callable[[str], processes.WorkerProcess]


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def run_id(t: float) -> str:
    return f"schedule:tick:{datetime.fromtimestamp(t, UTC):%Y-%m-%dT%H:%M:%SZ}"


@pytest.fixture
def clock_file(tmp_path: Path) -> Path:
    path = tmp_path / "clock"
    set_time(path, T0 + 60)
    return path


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def spawn(db_url: str, clock_file: Path, log_dir: Path, tmp_path: Path) -> Iterator[Spawn]:
    started: list[processes.WorkerProcess] = []

    def start(catch_up: str) -> processes.WorkerProcess:
        argv = [sys.executable, str(SCHEDULE_APP), db_url, str(clock_file), str(log_dir), catch_up]
        worker = processes.WorkerProcess(argv, log_dir, tmp_path / f"worker-{len(started)}.err")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()


@pytest.fixture
def observer(db_url: str) -> Iterator[App]:
    """The test's own App: it declares nothing, and only reads."""
    app = App(db_url)
    yield app
    app.close()


def lines(log_dir: Path, what: str) -> Counter[str]:
    return Counter(
        line.split(" ")[0]
        for log in log_dir.glob("*.log")
        for line in log.read_text().splitlines()
        if line.split(" ")[1] == what
    )


def schedule_runs(app: App) -> dict[str, State]:
    return {r.id: r.state for r in app.list_runs(limit=1000) if r.id.startswith("schedule:")}


def wait_for(
    condition: Callable[[], bool], what: str, workers: list[processes.WorkerProcess]
) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        for worker in workers:
            if worker.proc.poll() is not None:
                pytest.fail(f"worker {worker.pid} exited before {what}:\n{worker.stderr()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within 60s:\n" + "\n".join(w.stderr() for w in workers))
        time.sleep(0.01)


def looking(log_dir: Path, workers: list[processes.WorkerProcess]) -> None:
    """Wait until each worker has swept once: it is up, and SIGTERM stops it cleanly."""
    wait_for(
        lambda: set(lines(log_dir, "looking")) >= {str(w.pid) for w in workers},
        "every worker looking",
        workers,
    )


def stored_next_fire(app: App) -> float | None:
    records = app.schedules.records()
    return records[0].next_fire_at if records else None


def test_four_workers_fire_each_time_exactly_once(
    spawn: Spawn, observer: App, clock_file: Path, log_dir: Path
) -> None:
    workers = [spawn("latest") for _ in range(4)]
    looking(log_dir, workers)
    assert stored_next_fire(observer) == T0 + Q
    fires = [T0 + k * Q for k in range(1, 7)]
    for fire in fires:
        set_time(clock_file, fire + 1)
        wait_for(
            lambda fire=fire: schedule_runs(observer).get(run_id(fire)) is State.SUCCESS,
            f"run of the fire at {iso(fire)}",
            workers,
        )
        # Every worker has looked past this fire before the clock moves on.
        wait_for(lambda fire=fire: stored_next_fire(observer) == fire + Q, "advance", workers)
    for worker in workers:
        assert worker.stop() == 0, worker.stderr()
    assert schedule_runs(observer) == {run_id(fire): State.SUCCESS for fire in fires}
    assert lines(log_dir, "ran") == {iso(fire): 1 for fire in fires}
    # Each fire was started (idempotently) by one or more of the four.
    assert set(lines(log_dir, "started")) == {run_id(fire) for fire in fires}


@pytest.mark.parametrize(
    ("policy", "caught_up"),
    [("all", [2, 3, 4, 5]), ("latest", [5]), ("none", [])],
)
def test_after_an_outage_the_catch_up_policy_holds(
    spawn: Spawn,
    observer: App,
    clock_file: Path,
    log_dir: Path,
    policy: str,
    caught_up: list[int],
) -> None:
    first = spawn(policy)
    looking(log_dir, [first])
    assert stored_next_fire(observer) == T0 + Q
    set_time(clock_file, T0 + Q + 1)
    wait_for(
        lambda: (
            schedule_runs(observer) == {run_id(T0 + Q): State.SUCCESS}
            and stored_next_fire(observer) == T0 + 2 * Q
        ),
        "the first fire",
        [first],
    )
    first.kill()  # mid-life, between fires (a step killed mid-way runs again, as any)
    set_time(clock_file, T0 + 5 * Q + 300)  # fires 2, 3, 4 and 5 pass with no worker
    restarted = [spawn(policy), spawn(policy)]
    looking(log_dir, restarted)
    assert stored_next_fire(observer) == T0 + 6 * Q  # caught up at the first sweep
    set_time(clock_file, T0 + 6 * Q)  # the next fire: on time, whatever the policy
    expected = [T0 + k * Q for k in (1, *caught_up, 6)]
    wait_for(
        lambda: schedule_runs(observer) == {run_id(t): State.SUCCESS for t in expected},
        "the runs of " + ", ".join(iso(t) for t in expected),
        restarted,
    )
    for worker in restarted:
        assert worker.stop() == 0, worker.stderr()
    assert lines(log_dir, "ran") == {iso(t): 1 for t in expected}
