"""Not every database error is transient: only a lost connection, a restarting server, a
serialization failure, a deadlock or a lock held elsewhere are retried; anything else
fails at once with the server's message. Ids and names are checked up front."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import psycopg
import pytest

from surestep import App, ConfigurationError, State, StorageError
from surestep.names import MAX_NAME_LENGTH
from surestep.storage import open_store
from surestep.storage.transient import postgres_transient, sqlite_transient

LONG = os.urandom(5000).hex()  # 10,000 characters that do not compress into an index


def register(app: App) -> None:
    @app.workflow(name="wf")
    def wf(n: int) -> int:
        return n


@pytest.mark.parametrize(
    "call",
    [
        lambda app: app.start("wf", 1, run_id=LONG),
        lambda app: app.send_event(LONG, "go"),
        lambda app: app.send_event("r1", LONG),
        lambda app: app.send_event("r1", "bad\x00name"),
        lambda app: app.cancel(LONG),
        lambda app: app.retry(LONG),
    ],
)
def test_a_long_or_unstorable_id_is_refused_at_once(app: App, call: object) -> None:
    register(app)
    app.start("wf", 1, run_id="r1")
    started = time.monotonic()
    with pytest.raises(
        ConfigurationError, match=rf"the most surestep accepts is {MAX_NAME_LENGTH}|NUL"
    ):
        call(app)  # type: ignore[operator]
    assert time.monotonic() - started < 5
    assert [r.id for r in app.list_runs()] == ["r1"]


def test_names_are_checked_when_registered(app: App) -> None:
    with pytest.raises(ConfigurationError, match="workflow name is 256 characters"):
        app.workflow(name="w" * 256)(lambda: None)
    with pytest.raises(ConfigurationError, match=r"step name .* NUL"):
        app.step(name="a\x00b")(lambda: None)
    app.workflow(name="w" * 255)(lambda: None)  # the limit itself is fine


def test_a_value_the_server_refuses_fails_at_once_with_its_message(db_url: str) -> None:
    store = open_store(db_url)
    try:
        if db_url.startswith("postgresql"):
            # Past the App's check, straight to the store: PostgreSQL cannot index it.
            started = time.monotonic()
            with pytest.raises(StorageError) as caught:
                store.create_run(LONG, "wf", "1", "{}", 1.0, "test")
            assert time.monotonic() - started < 5
            assert "index row" in str(caught.value) and "SQLSTATE 54000" in str(caught.value)
            assert "not retried" in str(caught.value) and not caught.value.transient
        store.create_run("r1", "wf", "1", "{}", 1.0, "test")
        started = time.monotonic()
        # The schema's own check refuses this.
        with pytest.raises(StorageError) as refused, store.transaction() as cur:
            cur.execute("UPDATE surestep_runs SET state = 'exploded' WHERE id = 'r1'")
        assert time.monotonic() - started < 5 and not refused.value.transient
        assert store.get_run("r1").state == State.PENDING
    finally:
        store.close()


def test_postgres_errors_are_classified_by_sqlstate(postgres_schema_url: str) -> None:
    """Real exceptions from the real server, not built by hand."""
    errors: dict[str, psycopg.Error] = {}
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
        for name, sql in (
            ("division", "SELECT 1 / 0"),
            ("syntax", "SELEC 1"),
        ):
            try:
                conn.execute(sql)
            except psycopg.Error as exc:
                errors[name] = exc
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
        try:
            conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        except psycopg.Error as exc:
            errors["terminated"] = exc
    try:
        psycopg.connect("postgresql://postgres@127.0.0.1:1/test", connect_timeout=2)
    except psycopg.Error as exc:
        errors["refused"] = exc

    def transient(name: str) -> bool:
        exc = errors[name]
        return postgres_transient(exc.sqlstate, isinstance(exc, psycopg.OperationalError))

    assert errors["division"].sqlstate == "22012" and not transient("division")
    assert errors["syntax"].sqlstate == "42601" and not transient("syntax")
    assert errors["terminated"].sqlstate in ("57P01", None) and transient("terminated")
    assert errors["refused"].sqlstate is None and transient("refused")
    assert postgres_transient("40001", False) and postgres_transient("08006", False)
    assert not postgres_transient("54000", True)  # ProgramLimitExceeded is an OperationalError


def test_sqlite_errors_are_classified_by_result_code(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (v TEXT NOT NULL)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("BEGIN IMMEDIATE")
    holder.execute("ROLLBACK")
    with pytest.raises(sqlite3.IntegrityError) as refused:
        other.execute("INSERT INTO t VALUES (NULL)")
    holder.close()
    other.close()
    assert sqlite_transient(locked.value.sqlite_errorcode, str(locked.value))
    assert not sqlite_transient(refused.value.sqlite_errorcode, str(refused.value))


def test_giving_up_on_a_lock_says_so_and_after_how_long(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    holder = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    try:
        store.create_run("r1", "wf", "1", "{}", 1.0, "test")
        store._conn.execute("PRAGMA busy_timeout = 0")  # type: ignore[attr-defined]
        store.reconnect_timeout = 0.5
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        started = time.monotonic()
        with pytest.raises(StorageError, match=r"locked.*gave up after \d+ tries over 0\.\d s"):
            store.cancel("r1", "test", "why", 2.0)
        assert time.monotonic() - started < 5
    finally:
        holder.close()
        store.close()
