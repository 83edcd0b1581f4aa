"""PostgreSQL faults short of a crash: a worker frozen past its lease, and processes
that open one empty schema at the same moment.

A frozen worker (SIGSTOP: a long GC pause, a VM migration, a laptop lid) is alive, so no
other worker may assume it is gone; once its lease lapses another worker takes its run
over, and when the frozen worker wakes, its late writes must be refused (fenced off by
the lease token), so the run's history holds exactly one execution's results.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pg_app  # siblings in tests/integration
import pg_history
import pg_workers
import processes
import psycopg
import pytest

from surestep import App, RunRecord, State
from surestep.storage.migrations import load as load_migrations

RUN_ID = "frozen-1"


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[pg_workers.Workers]:
    started = pg_workers.Workers(tmp_path)
    yield started
    started.cleanup()


def _freeze_outside_a_transaction(
    worker: pg_workers.WorkerProcess, application_name: str, url: str
) -> None:
    """SIGSTOP ``worker`` at a moment when it has no transaction open.

    A process frozen between BEGIN and COMMIT keeps its row locks, and the takeover
    waits for them until the process is resumed: another scenario, not the one tested
    here (today it stalls the recovering worker's whole event loop). The server tells
    whether the worker's sessions (named by their ``application_name``) were in a
    transaction when it froze; if so, thaw and retry.
    """
    query = "SELECT state FROM pg_stat_activity WHERE application_name = %s"
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(50):
            worker.pause()
            deadline = time.monotonic() + 10
            while True:
                # A statement the worker sent before it froze still runs to its end.
                states = [s for (s,) in conn.execute(query, (application_name,)).fetchall()]
                if "active" not in states:
                    break
                assert time.monotonic() < deadline, "a statement of the frozen worker hangs"
                time.sleep(0.005)
            assert states, f"no session of the worker is named {application_name}"
            if not any(state.startswith("idle in transaction") for state in states):
                return
            worker.resume()
            time.sleep(random.uniform(0.0, 0.05))
    pytest.fail("the worker was inside a transaction each time it was frozen")


@pytest.mark.slow
@pytest.mark.parametrize("a_wakes", ["while B executes the step", "after B finished the run"])
def test_a_frozen_worker_past_its_lease_is_fenced_off(
    postgres_schema_url: str, workers: pg_workers.Workers, a_wakes: str
) -> None:
    url = postgres_schema_url
    app = pg_app.build(url, workers.log_dir)
    try:
        handle = app.start("slow", run_id=RUN_ID)
        key = f"{RUN_ID}:0"

        # A holds a short lease, renewed every 0.3 s while it is not frozen.
        name_a, name_b = (f"surestep-frozen-{uuid.uuid4().hex[:8]}" for _ in "ab")
        a = workers.start(
            pg_app.worker_argv(
                f"{url}&application_name={name_a}",
                workers.log_dir,
                concurrency=1,
                lease_seconds=1.0,
                heartbeat_interval=0.3,
                slow_seconds=2.0,
            )
        )
        a.wait_until(lambda: a.lines() == [(key, "start", 1)], "start of the slow step")
        _freeze_outside_a_transaction(a, name_a, url)

        # B, on the same host, sees A's process alive: it may take the run over only
        # once A's lease has lapsed. B's own lease outlasts the test, so that B frozen
        # in turn keeps the run.
        b = workers.start(
            pg_app.worker_argv(
                f"{url}&application_name={name_b}",
                workers.log_dir,
                concurrency=1,
                lease_seconds=60.0,
                heartbeat_interval=0.3,
                slow_seconds=1.0,
            )
        )
        if a_wakes == "while B executes the step":
            # The dangerous interleaving: A's late write arrives while B holds the run
            # and has recorded nothing yet, so only the lease token can refuse it.
            b.wait_until(lambda: b.lines() == [(key, "start", 2)], "its execution of the step")
            _freeze_outside_a_transaction(b, name_b, url)
            held = app.get_run(RUN_ID)
            assert (held.state, held.steps) == (State.RUNNING, ())
            assert held.lease_owner is not None and pg_workers.pid_of(held.lease_owner) == b.pid
            _wake_and_see_it_fenced(a, key, app, held)
            b.resume()

        deadline = time.monotonic() + 60
        while handle.state != State.SUCCESS:
            assert b.proc.poll() is None, b.stderr()
            assert time.monotonic() < deadline, f"B did not finish the run:\n{b.stderr()}"
            time.sleep(0.02)
        assert handle.result(timeout=0) == f"executed by {b.pid}"
        after = app.get_run(RUN_ID)
        if a_wakes == "after B finished the run":
            _wake_and_see_it_fenced(a, key, app, after)

        assert a.stop() == 0, a.stderr()
        assert b.stop() == 0, b.stderr()
        for worker in (a, b):
            assert "Traceback" not in worker.stderr(), worker.stderr()

        history = pg_history.check_executions(
            [after],
            workers.logs(),
            steps=1,
            step_output=lambda record, position: f"executed by {b.pid}",
            run_output=lambda record: f"executed by {b.pid}",
        )
    finally:
        app.close()

    # The run's transitions: claimed by A, recovered by B from A's lapsed lease (not as a
    # dead process: A's pid was alive all along), claimed and finished by B. One success.
    run_events = [
        (e.from_state, e.to_state, pg_workers.pid_of(e.actor) if ":" in e.actor else e.actor)
        for e in after.events
        if e.position is None
    ]
    assert run_events == [
        (None, State.PENDING, "app"),
        (State.PENDING, State.RUNNING, a.pid),
        (State.RUNNING, State.PENDING, b.pid),
        (State.PENDING, State.RUNNING, b.pid),
        (State.RUNNING, State.SUCCESS, b.pid),
    ]
    first, second = history.holds[RUN_ID]
    assert first.exit is not None and second.exit is not None
    assert first.exit.actor == second.worker == second.exit.actor
    assert first.exit.reason == f"lease of worker {first.worker} expired"

    # One attempt of the step, recorded by B, with B's output. A wrote nothing after its
    # claim: no step event, no attempt.
    [step] = after.steps
    [attempt] = step.attempt_records
    assert (attempt.attempt, attempt.state, attempt.worker) == (1, State.SUCCESS, second.worker)
    assert step.output == f"executed by {b.pid}"
    assert [e.id for e in after.events if e.actor == first.worker] == [first.claim.id]

    # Both executed the step to its end (at least once, not exactly once); only B's
    # result was recorded.
    assert a.lines() == [(key, "start", 1), (key, "done", 1)]
    assert b.lines() == [(key, "start", 2), (key, "done", 2)]
    assert history.uncommitted == [(key, a.pid, 1)]


def _wake_and_see_it_fenced(
    a: pg_workers.WorkerProcess, key: str, app: App, snapshot: RunRecord
) -> None:
    """SIGCONT ``a``, which finishes its execution of the step and tries to record it;
    assert that the write is refused and leaves the run as ``snapshot`` shows it."""
    a.resume()
    a.wait_until(lambda: (key, "done", 1) in a.lines(), "end of its execution")
    # Until the worker says how its execution ended (its step refused, or its step
    # taken and its run transition refused), or until the run changes.
    a.wait_until(
        lambda: f"run {RUN_ID}: " in a.stderr() or app.get_run(RUN_ID) != snapshot,
        "attempt to record its step",
    )
    assert app.get_run(RUN_ID) == snapshot, "the frozen worker wrote to a run it had lost"
    # The step's record itself was refused, by the lease token.
    refusal = f"run {RUN_ID}: run {RUN_ID!r} is no longer held under lease 1"
    assert refusal in a.stderr() and "stopping without writing" in a.stderr(), a.stderr()


def _with_schema(url: str, schema: str) -> str:
    """``url`` with its connections' search_path set to ``schema``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


PROCESSES = 6
ROUNDS = 8


@pytest.fixture
def empty_schemas(postgres_schema_url: str) -> Iterator[list[str]]:
    """URLs of ``ROUNDS`` empty schemas: the fixture's, and more made (and dropped) here."""
    base = dict(parse_qsl(urlsplit(postgres_schema_url).query))["options"].split("=", 1)[1]
    extra = [f"{base}_r{k}" for k in range(1, ROUNDS)]
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
        for schema in extra:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield [postgres_schema_url, *(_with_schema(postgres_schema_url, s) for s in extra)]
    finally:
        with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
            for schema in extra:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_processes_opening_an_empty_schema_at_once_migrate_it_once(
    tmp_path: Path, empty_schemas: list[str]
) -> None:
    outputs = processes.race_starts(tmp_path, empty_schemas, PROCESSES)
    assert outputs == [[f"{k} same-id" for k in range(ROUNDS)]] * PROCESSES

    migrations = [(m.version, m.name) for m in load_migrations("postgresql")]
    for url in empty_schemas:
        with psycopg.connect(url) as conn:
            applied = conn.execute(
                "SELECT version, name FROM surestep_migrations ORDER BY version, name"
            ).fetchall()
        # Each migration applied exactly once, all of them.
        assert applied == migrations, url
        app = App(url)
        try:
            [run] = app.list_runs(limit=100)
            assert (run.id, run.workflow, run.state, run.inputs) == (
                "same-id",
                "greet",
                State.PENDING,
                {"name": "x"},
            )
            events = app.get_run("same-id").events
            assert [(e.from_state, e.to_state) for e in events] == [(None, State.PENDING)]
        finally:
            app.close()
