"""Fixtures shared by the whole suite.

Every test that takes ``db_url`` (or ``app``, or ``store``) runs once on a real SQLite
file and once on the real PostgreSQL server named by ``SURESTEP_TEST_POSTGRES_URL``
(default ``postgresql://postgres@127.0.0.1:5432/test``), each PostgreSQL test in a
schema of its own. Without a reachable server the PostgreSQL half is skipped locally
and fails in CI (``CI=true``).
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from surestep import App, FakeClock

POSTGRES_URL = os.environ.get(
    "SURESTEP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@functools.cache
def postgres_problem() -> str | None:
    """Why PostgreSQL tests cannot run here, or None if they can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed: pip install -e '.[dev]'"
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"cannot connect to {POSTGRES_URL}: {str(exc).strip()}"
    return None


def require_postgres() -> None:
    problem = postgres_problem()
    if problem is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI and is not usable: {problem}")
    pytest.skip(
        f"PostgreSQL tests skipped: {problem}. Start PostgreSQL on 127.0.0.1:5432, or set "
        f"SURESTEP_TEST_POSTGRES_URL to a database you may create schemas in"
    )


@pytest.fixture
def postgres_schema_url() -> Iterator[str]:
    """A URL whose connections use a new, empty schema (dropped afterwards)."""
    require_postgres()
    import psycopg

    schema = f"surestep_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{separator}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'surestep.db'}"
    url: str = request.getfixturevalue("postgres_schema_url")
    return url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_700_000_000.0)


@pytest.fixture
def app(db_url: str, clock: FakeClock) -> Iterator[App]:
    app = App(db_url, clock=clock)
    yield app
    app.close()
