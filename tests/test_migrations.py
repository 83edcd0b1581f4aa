"""The schema has one source: the numbered migrations. A database created by an older
version and upgraded must end up exactly like a fresh one, on both dialects."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from surestep import SchemaVersionError
from surestep.storage import Store, open_store
from surestep.storage.migrations import _MARKERS, load


def sqlite_schema(store: Store) -> list[tuple[str, str, str]]:
    with store.reading() as cur:
        cur.execute(
            "SELECT type, name, sql FROM sqlite_master"
            " WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        )
        return [(t, n, re.sub(r"\s+", " ", sql or "").strip()) for t, n, sql in cur.fetchall()]


def postgres_schema(store: Store) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    with store.reading() as cur:
        cur.execute(
            "SELECT table_name, column_name, data_type, is_nullable, COALESCE(column_default, '')"
            " FROM information_schema.columns WHERE table_schema = current_schema()"
            " ORDER BY table_name, column_name"
        )
        found += [("column", *map(str, row)) for row in cur.fetchall()]
        cur.execute(
            "SELECT indexname, replace(indexdef, current_schema() || '.', '')"
            " FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname"
        )
        found += [("index", *row) for row in cur.fetchall()]
        cur.execute(
            "SELECT trigger_name, event_manipulation, action_timing, action_statement"
            " FROM information_schema.triggers WHERE trigger_schema = current_schema()"
            " ORDER BY trigger_name, event_manipulation"
        )
        found += [("trigger", *row) for row in cur.fetchall()]
        cur.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
            " FROM pg_constraint WHERE connamespace = current_schema()::regnamespace"
            " ORDER BY conname"
        )
        found += [("constraint", *row) for row in cur.fetchall()]
    return found


def schema_of(store: Store, db_url: str) -> list[tuple[str, ...]]:
    return sqlite_schema(store) if db_url.startswith("sqlite") else postgres_schema(store)


def open_at(db_url: str, version: int) -> Store:
    """Open ``db_url`` upgraded only as far as ``version``, as an older surestep would."""
    if db_url.startswith("sqlite"):
        from surestep.storage.sqlite import SQLiteStore

        return SQLiteStore(db_url.removeprefix("sqlite:///"), upgrade_to=version)
    from surestep.storage.postgres import PostgresStore

    return PostgresStore(db_url, upgrade_to=version)


def dialect(db_url: str) -> str:
    return "sqlite" if db_url.startswith("sqlite") else "postgresql"


def test_migrations_are_numbered_and_the_same_for_both_dialects() -> None:
    sqlite, postgres = load("sqlite"), load("postgresql")
    assert [m.version for m in sqlite] == list(range(1, len(sqlite) + 1))
    assert [(m.version, m.name) for m in sqlite] == [(m.version, m.name) for m in postgres]


def test_every_migration_has_a_marker_that_a_fresh_database_holds(db_url: str) -> None:
    # The markers recognise a schema that lost its version record (check_recorded): a
    # migration without one would make every later schema look older than it is.
    markers = _MARKERS[dialect(db_url)]
    assert sorted(markers) == [m.version for m in load(dialect(db_url))]
    store = open_store(db_url)
    try:
        with store.reading() as cur:
            if db_url.startswith("sqlite"):
                cur.execute("SELECT name FROM sqlite_master")
            else:
                cur.execute(
                    "SELECT relname FROM pg_class"
                    " WHERE relnamespace = current_schema()::regnamespace"
                    " UNION SELECT conname FROM pg_constraint"
                    " WHERE connamespace = current_schema()::regnamespace"
                )
            names = {name for (name,) in cur.fetchall()}
    finally:
        store.close()
    assert set(markers.values()) <= names


def test_an_upgraded_database_equals_a_fresh_one(
    db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    latest = load(dialect(db_url))[-1].version
    old = open_at(db_url, 1)
    assert old.schema_version() == 1
    with old.transaction() as cur:  # a run as version 1 wrote it, in version 1's columns
        cur.execute(
            "INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs,"
            " created_at, updated_at, available_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ("kept", "wf", "1", "pending", '{"a": 1}', 1.0, 1.0, 1.0),
        )
    old.close()

    for version in range(2, latest + 1):  # one release at a time
        stepped = open_at(db_url, version)
        assert stepped.schema_version() == version
        stepped.close()
    upgraded = open_store(db_url)
    upgraded_schema = schema_of(upgraded, db_url)
    assert upgraded.get_run("kept").inputs == {"a": 1}  # nothing lost on the way
    upgraded.close()

    if db_url.startswith("sqlite"):
        fresh_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        fresh_url = request.getfixturevalue("postgres_schema_url")
    fresh = open_store(fresh_url)
    try:
        assert schema_of(fresh, fresh_url) == upgraded_schema
        assert fresh.schema_version() == latest
    finally:
        fresh.close()


def test_a_schema_newer_than_the_code_is_refused_on_both_dialects(db_url: str) -> None:
    store = open_store(db_url)
    with store.transaction() as cur:
        cur.execute("INSERT INTO surestep_migrations VALUES (99, 'from_the_future', 0)")
    store.close()
    with pytest.raises(SchemaVersionError, match=r"schema version 99.*Upgrade surestep"):
        open_store(db_url)


@pytest.mark.parametrize("version", [3, None])
def test_a_lost_version_record_is_explained_with_the_repair(
    db_url: str, version: int | None
) -> None:
    latest = load(dialect(db_url))[-1].version
    version = version or latest
    store = open_at(db_url, version)
    with store.transaction() as cur:
        cur.execute("DROP TABLE surestep_migrations")
    store.close()

    with pytest.raises(SchemaVersionError) as caught:
        open_store(db_url)
    message = str(caught.value)
    assert "no record of its schema version" in message
    assert f"looks like version {version}" in message

    # The repair the message gives works as printed.
    repair = message.split("with this SQL and try again: ", 1)[1]
    run_sql(db_url, [part for part in repair.split(";") if part.strip()])
    repaired = open_store(db_url)
    try:
        assert repaired.schema_version() == latest
    finally:
        repaired.close()


def run_sql(db_url: str, statements: list[str]) -> None:
    """Run SQL as an operator would, with the database's own client (no surestep)."""
    if db_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            for statement in statements:
                conn.execute(statement)
        return
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as pg:
        for statement in statements:
            pg.execute(statement.encode())
