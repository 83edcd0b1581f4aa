"""The schema refuses rows no surestep writes (an unknown state; a pending run with no
due time or a running one with no lease expiry, which nothing would ever claim or
recover), on both databases. Rows from before the checks do not stop the upgrade."""

from __future__ import annotations

from typing import Any

import pytest
from test_migrations import open_at

from surestep import StorageError
from surestep.storage import Store, open_store

RUN_INSERT = (
    "INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs, created_at,"
    " updated_at, available_at) VALUES (?, 'wf', '1', ?, '{}', 1.0, 1.0, ?)"
)


def write(store: Store, sql: str, *params: Any) -> None:
    with store.transaction() as cur:
        cur.execute(sql, params)


@pytest.fixture
def store(db_url: str) -> Any:
    opened = open_store(db_url)
    yield opened
    opened.close()


RUN_ROWS = [
    (RUN_INSERT, ("r2", "exploded", 1.0)),
    (RUN_INSERT, ("r2", "pending", None)),
    ("UPDATE surestep_runs SET state = 'exploded' WHERE id = 'r1'", ()),
    ("UPDATE surestep_runs SET available_at = NULL WHERE id = 'r1'", ()),
    ("UPDATE surestep_runs SET compensating = 'later' WHERE id = 'r1'", ()),
    ("UPDATE surestep_runs SET state = 'running' WHERE id = 'r1'", ()),
]

# On SQLite these tables have no per-row triggers (they are on the per-step path; the
# worker checks what it reads of them when it claims a run): PostgreSQL only.
PER_STEP_ROWS = [
    (
        "INSERT INTO surestep_steps (run_id, position, name, state, attempts, started_at)"
        " VALUES ('r1', 0, 's', 'exploded', 1, 1.0)",
        (),
    ),
    (
        "INSERT INTO surestep_attempts (run_id, position, attempt, state, started_at,"
        " finished_at, worker) VALUES ('r1', 0, 1, 'ok', 1.0, 1.0, 'w')",
        (),
    ),
    (
        "INSERT INTO surestep_events (run_id, to_state, at, actor)"
        " VALUES ('r1', 'exploded', 1.0, 'me')",
        (),
    ),
]


def refused(store: Store, sql: str, params: Any) -> None:
    write(store, RUN_INSERT, "r1", "pending", 1.0)
    with pytest.raises(StorageError, match=r"must be|needs|check constraint \"surestep_"):
        write(store, sql, *params)
    assert [(r.id, r.state) for r in store.list_runs()] == [("r1", "pending")]


@pytest.mark.parametrize(("sql", "params"), RUN_ROWS)
def test_the_schema_refuses_runs_no_surestep_writes(store: Store, sql: str, params: Any) -> None:
    refused(store, sql, params)


@pytest.mark.parametrize(("sql", "params"), PER_STEP_ROWS)
def test_postgresql_refuses_steps_attempts_and_events_no_surestep_writes(
    postgres_schema_url: str, sql: str, params: Any
) -> None:
    store = open_store(postgres_schema_url)
    try:
        refused(store, sql, params)
    finally:
        store.close()


def test_rows_written_before_the_checks_do_not_stop_the_upgrade(db_url: str) -> None:
    old = open_at(db_url, 5)
    write(old, RUN_INSERT, "odd", "exploded", 1.0)
    write(old, RUN_INSERT, "stuck", "pending", None)
    old.close()
    upgraded = open_store(db_url)
    try:
        assert upgraded.schema_version() >= 6
        listed = {r.id: r for r in upgraded.list_runs()}
        assert listed["odd"].state == "exploded" and listed["odd"].corrupt
    finally:
        upgraded.close()


def test_postgresql_checks_per_step_states_by_a_domain_not_by_table_checks(
    postgres_schema_url: str,
) -> None:
    # A table's CHECK is planned again by every statement that writes the table; a
    # domain's is cached per session (schema 21). The refusals themselves are above.
    store = open_store(postgres_schema_url)
    try:
        with store.reading() as cur:
            cur.execute(
                "SELECT table_name, column_name, domain_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name IN"
                " ('surestep_steps', 'surestep_attempts', 'surestep_events')"
                " AND column_name IN ('state', 'from_state', 'to_state') ORDER BY 1, 2"
            )
            columns = cur.fetchall()
            cur.execute(
                "SELECT conname FROM pg_constraint WHERE contype = 'c' AND conrelid IN"
                " (SELECT oid FROM pg_class WHERE relnamespace = current_schema()::regnamespace"
                " AND relname IN ('surestep_steps', 'surestep_attempts', 'surestep_events'))"
            )
            table_checks = cur.fetchall()
    finally:
        store.close()
    assert columns == [
        ("surestep_attempts", "state", "surestep_state"),
        ("surestep_events", "from_state", "surestep_state"),
        ("surestep_events", "to_state", "surestep_state"),
        ("surestep_steps", "state", "surestep_state"),
    ]
    assert table_checks == []


def test_per_step_rows_written_before_the_checks_do_not_stop_the_upgrade(
    postgres_schema_url: str,
) -> None:
    old = open_at(postgres_schema_url, 5)
    write(old, RUN_INSERT, "odd", "running", 1.0)
    for sql, _ in PER_STEP_ROWS:
        write(old, sql.replace("'r1'", "'odd'"))
    old.close()
    upgraded = open_store(postgres_schema_url)
    try:
        assert upgraded.schema_version() >= 21
        with upgraded.reading() as cur:
            cur.execute("SELECT COUNT(*) FROM surestep_events WHERE to_state = 'exploded'")
            assert cur.fetchone()[0] == 1
    finally:
        upgraded.close()
