"""The PostgreSQL server restarts under working workers.

A restart closes every connection: the workers' pooled ones mid-transaction, their
LISTEN connections, and this test's own. The engine promises that workers ride it out:
each storage operation is retried with backoff until the server is back (up to the
store's ``reconnect_timeout``), writes are safe to repeat (fenced by the lease token,
or idempotent), and the LISTEN thread reconnects. So, asserted here:

* every run ends in success with the right output, none is left running;
* the run histories are as clean as in the crash test (``pg_history.py``): no run
  executed by two workers at once, no committed step executed again, and no step
  executed twice beyond one in flight per run whose hold was lost;
* both workers are alive at the end, and shut down cleanly (exit status 0).

This test restarts the server that every PostgreSQL test uses; tests running at the
same time against it see their connections drop too.
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pg_app  # siblings in tests/integration
import pg_history
import pg_workers
import psycopg
import pytest

from surestep import State, StorageError

RUNS = 300
STEPS = 5
WORKERS = 2
CONCURRENCY = 8

T = TypeVar("T")


def _cluster() -> tuple[str, str]:
    """(version, name) of the local cluster listening on 5432."""
    versions = sorted(Path("/etc/postgresql").iterdir(), key=lambda p: int(p.name))
    for version in reversed(versions):
        if (version / "main").is_dir():
            return version.name, "main"
    pytest.skip("no local PostgreSQL cluster to restart under /etc/postgresql")


def _ctl(action: str) -> None:
    version, name = _cluster()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _ready() -> bool:
    probe = ["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432", "-t", "5"]
    return subprocess.run(probe, check=False, timeout=30).returncode == 0


@pytest.fixture
def server(postgres_schema_url: str) -> Iterator[None]:
    """The local server, which the test may restart; it is running again afterwards."""
    if not Path("/etc/postgresql").is_dir():
        pytest.skip("restarting the server needs a local Debian-style PostgreSQL cluster")
    try:
        yield
    finally:
        if not _ready():
            _ctl("start")
        deadline = time.monotonic() + 60
        while not _ready():
            assert time.monotonic() < deadline, "the PostgreSQL server did not come back"
            time.sleep(0.2)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[pg_workers.Workers]:
    started = pg_workers.Workers(tmp_path)
    yield started
    started.cleanup()


def _read(query: Callable[[], T]) -> T:
    """``query()``, tried again while the test's own connections fail: they were closed
    by the restart too, and this test is about the workers' reconnecting, not its own."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return query()
        except StorageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _started_at(url: str) -> object:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row is not None
    return row[0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_workers_ride_out_a_server_restart(
    postgres_schema_url: str, server: None, workers: pg_workers.Workers
) -> None:
    url = postgres_schema_url
    rng = random.Random()
    app = pg_app.build(url, workers.log_dir)
    try:
        for i in range(RUNS):
            app.start("chain", i, STEPS, run_id=f"run-{i:03d}")
        procs = [
            workers.start(
                pg_app.worker_argv(
                    url,
                    workers.log_dir,
                    concurrency=CONCURRENCY,
                    lease_seconds=10.0,
                    heartbeat_interval=0.5,
                    step_sleep=(0.02, 0.06),
                )
            )
            for _ in range(WORKERS)
        ]
        for worker in procs:
            target = rng.randint(100, 200)
            worker.wait_until(lambda w=worker, t=target: w.starts() >= t, f"{target} starts")
        before = _started_at(url)
        _ctl("restart")
        assert _started_at(url) != before, "the server did not restart"
        done = _read(app.store.count_by_state).get(State.SUCCESS, 0)
        assert done < RUNS, "the restart came after all the work was done"

        deadline = time.monotonic() + 180
        while True:
            counts = _read(app.store.count_by_state)
            if counts == {State.SUCCESS: RUNS}:
                break
            for worker in procs:
                assert worker.proc.poll() is None, worker.stderr()
            assert time.monotonic() < deadline, f"not finished: {counts}"
            time.sleep(0.1)
        for worker in procs:
            assert worker.proc.poll() is None, worker.stderr()
            # Each lost its connections to the restart, and said so.
            assert "LISTEN connection lost" in worker.stderr(), worker.stderr()
        for worker in procs:
            assert worker.stop() == 0, worker.stderr()
            assert "Traceback" not in worker.stderr(), worker.stderr()
        records = [_read(lambda i=i: app.get_run(f"run-{i:03d}")) for i in range(RUNS)]
    finally:
        app.close()

    history = pg_history.check_executions(
        records,
        workers.logs(),
        steps=STEPS,
        step_output=lambda record, i: pg_app.step_output(record.inputs["seed"], i),
        run_output=lambda record: pg_app.chain_output(record.inputs["seed"], STEPS),
    )
    print(
        f"\n{len(history.lost_holds)} runs were taken back from a worker, "
        f"{len(history.uncommitted)} steps executed again: {history.uncommitted[:5]}"
    )
