"""API keys never land in the database, the logs, tracebacks or ``surestep show``:
a canary key, sent by the real SDKs to a model server on 127.0.0.1 that echoes it back
in its error messages, is looked for in every table, every log record and every
command's output, on both databases."""

from __future__ import annotations

import json
import logging

import pytest
from fakes.model_servers import (
    ANTHROPIC,
    OPENAI,
    FakeModelServer,
    Reply,
    anthropic_error,
    openai_completion,
    openai_error,
)
from pydantic import BaseModel
from typer.testing import CliRunner

from surestep import App, FakeClock, Retry, State
from surestep.cli import app as cli
from surestep.testing import drive

CANARY_OPENAI = "sk-canary0penai7f3a9b2c1d4e5f60718293a4b5c6d7e8f9"
CANARY_ANTHROPIC = "sk-ant-canary5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2"


class Ticket(BaseModel):
    team: str


def every_row(app: App) -> str:
    """Every row of every table, as text."""
    store = app.store
    with store.reading() as cur:
        if app.database_url.startswith("sqlite"):
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            cur.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            )
        tables = [row[0] for row in cur.fetchall()]
        dumped = []
        for table in tables:
            cur.execute(f"SELECT * FROM {table}")
            dumped.append(f"{table}: {cur.fetchall()!r}")
    assert any("surestep_llm_calls" in line for line in dumped)
    return "\n".join(dumped)


def test_no_key_is_stored_logged_or_shown(
    db_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CANARY_OPENAI_KEY", CANARY_OPENAI)
    monkeypatch.setenv("CANARY_ANTHROPIC_KEY", CANARY_ANTHROPIC)
    caplog.set_level(logging.DEBUG)
    app = App(db_url, clock=clock)
    with FakeModelServer() as server:
        app.llm_provider("gw", base_url=server.openai_base_url, api_key_env="CANARY_OPENAI_KEY")
        app.llm_provider(
            "claude", kind="anthropic", base_url=server.url, api_key_env="CANARY_ANTHROPIC_KEY"
        )
        route = app.llm_step(
            name="route",
            schema=Ticket,
            models=["gw:small", "claude:haiku"],
            prompt=lambda text: f"Which team? {text}",
            retry=Retry(max_attempts=3, initial_delay=1, jitter=False),
        )

        @app.workflow(name="triage")
        def triage(text: str) -> str:
            return str(route(text).team)

        server.script(
            OPENAI,
            Reply(401, openai_error(f"Incorrect API key provided: {CANARY_OPENAI}")),
            Reply(200, openai_completion('{"team": "billing"}')),
        )
        server.script(
            ANTHROPIC,
            Reply(500, anthropic_error(f"upstream said {CANARY_ANTHROPIC}", kind="api_error")),
        )
        handle = app.start("triage", "refund please")
        drive(app, until=lambda: handle.state == State.SUCCESS)
        # The keys did go where they belong: in the requests' headers.
        sent = json.dumps([r.headers for r in server.requests])
        assert CANARY_OPENAI in sent and CANARY_ANTHROPIC in sent
    outcomes = [(c.model_ref, c.outcome) for c in app.llm.ledger.calls(handle.id)]
    assert outcomes == [
        ("gw:small", "rejected"),
        ("claude:haiku", "server_error"),
        ("gw:small", "ok"),
    ]
    stored = every_row(app)
    assert "Incorrect API key provided" in stored  # the error is kept, the key is not
    shown = CliRunner().invoke(cli, ["show", handle.id, "--db", db_url, "--tracebacks"])
    as_json = CliRunner().invoke(cli, ["show", handle.id, "--db", db_url, "--json"])
    calls = CliRunner().invoke(cli, ["calls", handle.id, "--db", db_url, "--json"])
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    app.close()
    for where, text in [
        ("the database", stored),
        ("surestep show", shown.output),
        ("surestep show --json", as_json.output),
        ("surestep calls", calls.output),
        ("the logs", logged),
    ]:
        for canary in (CANARY_OPENAI, CANARY_ANTHROPIC, CANARY_OPENAI[3:20]):
            assert canary not in text, f"a key leaked into {where}"


def test_a_key_in_the_base_url_is_not_stored_when_the_server_cannot_be_reached(
    db_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Gateways take a key as user:password@ or ?api_key=: a connection error names the
    # server, and what it names is stored.
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY_ANTHROPIC)
    with FakeModelServer() as server:
        port = server.port
    # The server is closed: nothing listens on its port any more.
    app = App(db_url, clock=clock)
    app.llm_provider("gw", base_url=f"http://user:{CANARY_OPENAI}@127.0.0.1:{port}/v1?k=pw")
    app.llm_provider(
        "claude", kind="anthropic", base_url=f"http://key:{CANARY_OPENAI}@127.0.0.1:{port}"
    )
    summarize = app.llm_step(
        name="summarize",
        models=["gw:m", "claude:haiku"],
        prompt=lambda text: text,
        fallback_on_transient=True,
        retry=Retry(max_attempts=1),
    )

    @app.workflow(name="digest")
    def digest(text: str) -> str:
        return str(summarize(text))

    handle = app.start("digest", "text")
    drive(app, until=lambda: handle.state == State.DEAD_LETTER)
    calls = app.llm.ledger.calls(handle.id)
    stored = every_row(app)
    app.close()
    assert [c.outcome for c in calls] == ["connection", "connection"]
    assert f"127.0.0.1:{port}/v1" in str(calls[0].error)
    assert CANARY_OPENAI not in stored and "pw" not in str(calls[0].error)
    assert CANARY_OPENAI not in repr(app.llm.resolve("gw:m")[0])
