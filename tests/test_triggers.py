"""Webhook triggers over real HTTP on 127.0.0.1, on both databases: a signed POST starts
one run whatever the redeliveries; a bad or stale signature, an unknown workflow and a
body that is not the workflow's inputs start nothing. ``surestep serve --app`` runs as a
real process in the last tests."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_api import free_port, serving  # tests/test_api.py

from surestep import App, FakeClock, State
from surestep.errors import ConfigurationError, UnknownWorkflowError
from surestep.flow.triggers import sign
from surestep.testing import drive

KEY = b"a test key of 32 bytes, no more."
SECRET = "whsec_" + base64.b64encode(KEY).decode()
ENV = "SURESTEP_TEST_INGEST_SECRET"


@pytest.fixture
def ingest(app: App, monkeypatch: pytest.MonkeyPatch) -> App:
    """Workflow ``ingest(doc_id: str, pages: int = 1)`` with a trigger; ``plain`` without."""
    monkeypatch.setenv(ENV, SECRET)

    @app.workflow(name="ingest")
    def ingest(doc_id: str, pages: int = 1) -> str:
        return f"{doc_id}:{pages}"

    @app.workflow(name="plain")
    def plain(doc_id: str) -> str:
        return doc_id

    app.webhook_trigger(ingest, secret_env=ENV)
    return app


@pytest.fixture
def http(ingest: App) -> Iterator[httpx.Client]:
    with serving(ingest) as base, httpx.Client(base_url=base, timeout=30) as client:
        yield client


def signed(body: bytes, message_id: str, timestamp: float, key: bytes = KEY) -> dict[str, str]:
    ts = str(int(timestamp))
    return {
        "webhook-id": message_id,
        "webhook-timestamp": ts,
        "webhook-signature": sign(key, message_id, ts, body),
        "content-type": "application/json",
    }


def post(
    client: httpx.Client, workflow: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return client.post(f"/api/trigger/{workflow}", content=body, headers=headers)


def run_ids(app: App) -> list[str]:
    return sorted(r.id for r in app.list_runs(limit=100))


def test_a_signed_request_starts_one_run_and_a_redelivery_no_other(
    ingest: App, http: httpx.Client, clock: FakeClock
) -> None:
    body = json.dumps({"doc_id": "d-7", "pages": 3}).encode()
    first = post(http, "ingest", body, signed(body, "msg_2fQ", clock.now()))
    assert first.status_code == 202, first.text
    assert first.json() == {"run_id": "webhook:ingest:msg_2fQ", "workflow": "ingest"}
    clock.advance(120)  # the sender retries later, signing again
    again = post(http, "ingest", body, signed(body, "msg_2fQ", clock.now()))
    assert (again.status_code, again.json()) == (202, first.json())
    assert run_ids(ingest) == ["webhook:ingest:msg_2fQ"]
    changed = json.dumps({"doc_id": "d-7", "pages": 4}).encode()
    reused = post(http, "ingest", changed, signed(changed, "msg_2fQ", clock.now()))
    assert (reused.status_code, reused.json()["code"]) == (409, "idempotency_conflict")
    assert run_ids(ingest) == ["webhook:ingest:msg_2fQ"]
    handle = ingest.handle("webhook:ingest:msg_2fQ")
    drive(ingest, until=lambda: handle.state is State.SUCCESS)
    assert handle.result() == "d-7:3"
    # Another message is another run; an empty body gives no arguments.
    other = post(http, "plain", b"", signed(b"", "msg_3", clock.now()))
    assert other.status_code == 404  # plain has no trigger
    one_more = json.dumps({"doc_id": "d-8"}).encode()
    assert post(http, "ingest", one_more, signed(one_more, "msg_4", clock.now())).status_code == 202
    assert run_ids(ingest) == ["webhook:ingest:msg_2fQ", "webhook:ingest:msg_4"]


def test_a_bad_missing_or_stale_signature_is_401_and_starts_nothing(
    ingest: App, http: httpx.Client, clock: FakeClock
) -> None:
    body = json.dumps({"doc_id": "d-1"}).encode()
    now = clock.now()
    cases = {
        "wrong key": signed(body, "m1", now, key=b"another key"),
        "changed body": signed(b'{"doc_id": "d-2"}', "m1", now),
        "other id": {**signed(body, "m1", now), "webhook-id": "m2"},
        "stale": signed(body, "m1", now - 301),
        "from the future": signed(body, "m1", now + 301),
        "unsigned": {"webhook-id": "m1", "webhook-timestamp": str(int(now))},
        "no headers": {},
    }
    for why, headers in cases.items():
        answer = post(http, "ingest", body, headers)
        assert answer.status_code == 401, (why, answer.text)
        assert answer.json()["code"] == "bad_signature", why
    assert post(http, "ingest", body, signed(body, "m1", now - 299)).status_code == 202
    assert run_ids(ingest) == ["webhook:ingest:m1"]


def test_an_unknown_workflow_or_one_without_a_trigger_is_404(
    ingest: App, http: httpx.Client, clock: FakeClock
) -> None:
    body = json.dumps({"doc_id": "d-1"}).encode()
    for workflow in ("nope", "plain"):
        answer = post(http, workflow, body, signed(body, "m1", clock.now()))
        assert answer.status_code == 404, answer.text
        assert answer.json()["code"] == "trigger_not_found"
    assert run_ids(ingest) == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"pages": 2}', "doc_id"),  # a required argument missing
        (b'{"doc_id": "d", "pages": "many"}', "pages"),  # not an int
        (b'{"doc_id": "d", "colour": "red"}', "colour"),  # not a parameter
        (b'["d"]', "JSON object"),
        (b"doc_id=d", "JSON object"),
        (b'{"doc_id": "d", "run_id": "mine"}', "run_id cannot be set"),
        (b'{"doc_id": "d", "priority": 100}', "priority cannot be set"),
        (b'{"doc_id": "d", "budget_usd": 1000}', "budget_usd cannot be set"),
    ],
)
def test_a_body_that_is_not_the_workflows_inputs_is_422(
    ingest: App, http: httpx.Client, clock: FakeClock, body: bytes, says: str
) -> None:
    answer = post(http, "ingest", body, signed(body, "m1", clock.now()))
    assert answer.status_code == 422, answer.text
    assert says in answer.json()["message"]
    assert run_ids(ingest) == []


def test_a_trigger_whose_secret_is_not_set_answers_503(
    ingest: App, http: httpx.Client, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV)
    body = json.dumps({"doc_id": "d-1"}).encode()
    answer = post(http, "ingest", body, signed(body, "m1", clock.now()))
    assert answer.status_code == 503
    assert f"${ENV} is not set" in answer.json()["message"]
    assert run_ids(ingest) == []


def test_declaring_a_trigger_checks_the_workflow_and_the_variable_name(app: App) -> None:
    with pytest.raises(UnknownWorkflowError):
        app.webhook_trigger("missing", secret_env=ENV)

    @app.workflow(name="w")
    def w() -> None: ...

    with pytest.raises(ConfigurationError, match="secret_env names"):
        app.webhook_trigger(w, secret_env="")
    app.webhook_trigger(w, secret_env=ENV)
    with pytest.raises(ConfigurationError, match="has a webhook trigger already"):
        app.webhook_trigger(w, secret_env=ENV)


# -- surestep serve --app, a real process ----------------------------------------------------

PROJECT = """
from surestep import App

app = App()

@app.workflow(name="ingest")
def ingest(doc_id: str) -> str:
    return doc_id

app.webhook_trigger("ingest", secret_env="{env}")
"""


def _serve(tmp_path: Path, db_url: str, secret: str | None, port: int) -> subprocess.Popen[str]:
    (tmp_path / "hooks_project.py").write_text(PROJECT.format(env=ENV))
    env = {**os.environ, "SURESTEP_DATABASE_URL": db_url}
    env.pop(ENV, None)
    if secret is not None:
        env[ENV] = secret
    return subprocess.Popen(
        [sys.executable, "-c", "from surestep.cli import main; main()", "serve", "--app",
         "hooks_project:app", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )  # fmt: skip


def test_serve_app_answers_signed_webhooks(tmp_path: Path, db_url: str) -> None:
    port = free_port()
    process = _serve(tmp_path, db_url, SECRET, port)
    try:
        assert process.stdout is not None
        assert f"http://localhost:{port}/api" in process.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        body = b'{"doc_id": "d-9"}'
        deadline = time.monotonic() + 15
        with httpx.Client(base_url=base, timeout=30) as client:
            while True:
                try:
                    answer = post(client, "ingest", body, signed(body, "msg_9", time.time()))
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "surestep serve did not listen"
                    time.sleep(0.05)
        assert answer.status_code == 202, answer.text
        assert answer.json()["run_id"] == "webhook:ingest:msg_9"
    finally:
        process.terminate()
        process.communicate(timeout=15)
    observer = App(db_url)
    try:
        assert [r.id for r in observer.list_runs()] == ["webhook:ingest:msg_9"]
    finally:
        observer.close()


def test_serve_app_refuses_to_start_without_a_triggers_secret(tmp_path: Path, db_url: str) -> None:
    process = _serve(tmp_path, db_url, None, free_port())
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 1, output
    assert f"the webhook trigger secret ${ENV} is not set" in output
