"""The REST API over real HTTP on 127.0.0.1, on both databases.

The server runs in a thread of the test process, over the test's App (so the FakeClock
and ``drive`` apply); ``test_serve_*`` start ``surestep serve`` as a real process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_site import serving  # tests/console_site.py
from pydantic import BaseModel

import surestep
from surestep import App, State
from surestep.testing import drive

NOT_FOUND = {
    "code": "review_not_found",
    "message": "no such review task, or not one you may see",
    "reason": None,
    "fields": None,
}


class Invoice(BaseModel):
    vendor: str
    total: Decimal


_CLIENTS: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


class Api:
    """One user's HTTP client (closed after the test)."""

    def __init__(self, base: str, token: str | None, scheme: str = "Bearer") -> None:
        headers = {} if token is None else {"Authorization": f"{scheme} {token}"}
        self.http = httpx.Client(base_url=base, headers=headers, timeout=30)
        _CLIENTS.append(self.http)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)

    def post(self, path: str, body: Any = None) -> httpx.Response:
        return self.http.post(path, json=body)


@pytest.fixture
def invoices(app: App) -> App:
    """A workflow that asks for a review of an invoice, by group and with a form."""

    @app.workflow(name="invoice")
    def invoice(doc: str, group: str) -> dict[str, object]:
        fields = {"vendor": f"ACME {doc}", "total": "120.50", "iban": "DE89370400440532013000"}
        decision = surestep.request_review(
            fields, kind="approve_invoice", groups=[group], form=Invoice, redact=["iban"]
        )
        return {"outcome": decision.outcome, "by": decision.reviewer, "data": decision.data}

    return app


@pytest.fixture
def http(invoices: App) -> Iterator[dict[str, Api]]:
    """Clients for alice (finance), bob (legal), olga (operator), and no token; a task
    for finance (run fin-1) and one for legal (run leg-1)."""
    app = invoices
    tokens = {
        "alice": app.users.add("alice", "reviewer", ["finance"]),
        "bob": app.users.add("bob", "reviewer", ["legal"]),
        "olga": app.users.add("olga", "operator"),
    }
    app.start("invoice", "1", "finance", run_id="fin-1")
    app.start("invoice", "2", "legal", run_id="leg-1")
    drive(app, until=lambda: len(app.reviews.list()) == 2)
    with serving(app) as base:
        yield {
            **{name: Api(base, token) for name, token in tokens.items()},
            "anonymous": Api(base, None),
        }


def task_of(app: App, run_id: str) -> int:
    [task] = app.reviews.list(run_id=run_id, state=None)
    return task.id


def test_no_token_a_bad_token_and_a_disabled_user_get_401(
    invoices: App, http: dict[str, Api]
) -> None:
    base = str(http["alice"].http.base_url)
    task = task_of(invoices, "fin-1")
    invoices.users.disable("bob")
    callers = {
        "none": http["anonymous"],
        "bad": Api(base, "sst_" + "x" * 43),
        "not ours": Api(base, "hunter2"),
        "disabled": http["bob"],
        "basic": Api(base, "YWxpY2U6eA==", scheme="Basic"),
    }
    bodies = []
    for name, caller in callers.items():
        for response in (
            caller.get("/api/reviews"),
            caller.get(f"/api/reviews/{task}"),
            caller.post(f"/api/reviews/{task}/decide", {"outcome": "approve"}),
            caller.get("/api/runs"),
            caller.get("/api/me"),
        ):
            assert response.status_code == 401, (name, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            bodies.append(response.json())
    assert all(b == bodies[0] for b in bodies)  # which of them it was is not said
    assert bodies[0]["code"] == "unauthorized"
    assert invoices.reviews.get(task).state == "open"


def test_a_reviewer_sees_and_decides_only_their_groups_tasks(
    invoices: App, http: dict[str, Api]
) -> None:
    alice, bob = http["alice"], http["bob"]
    finance, legal = task_of(invoices, "fin-1"), task_of(invoices, "leg-1")

    listed = alice.get("/api/reviews")
    assert listed.status_code == 200
    assert [t["run_id"] for t in listed.json()] == ["fin-1"]  # not legal's task
    assert alice.get("/api/reviews", group="legal").status_code == 403
    assert [t["run_id"] for t in alice.get("/api/reviews", group="finance").json()] == ["fin-1"]
    assert alice.get("/api/reviews", state="decided").status_code == 403

    # Another group's task answers exactly as a task that does not exist.
    for response in (
        bob.get(f"/api/reviews/{finance}"),
        bob.post(f"/api/reviews/{finance}/decide", {"outcome": "approve"}),
        bob.post(f"/api/reviews/{finance}/claim"),
        bob.get("/api/reviews/999999"),
        bob.post("/api/reviews/999999/decide", {"outcome": "approve"}),
    ):
        assert (response.status_code, response.json()) == (404, NOT_FOUND)
    assert invoices.reviews.get(finance).state == "open"
    assert bob.post(f"/api/reviews/{legal}/claim").json()["claimed_by"] == "bob"
    assert bob.get("/api/runs").status_code == 403  # runs are for operators
    assert bob.post(f"/api/reviews/{legal}/reassign", {"to": ["bob"]}).status_code == 403


def test_sensitive_fields_are_masked_in_listings_and_shown_to_the_decider(
    invoices: App, http: dict[str, Api]
) -> None:
    alice, olga = http["alice"], http["olga"]
    [listed] = alice.get("/api/reviews").json()
    assert listed["payload"]["iban"] == "***" and listed["sensitive"] == ["iban"]
    assert listed["outcomes"] == ["approve", "reject", "edit"]
    one = alice.get(f"/api/reviews/{listed['id']}").json()
    assert one["payload"]["iban"] == "DE89370400440532013000"
    assert all(t["payload"]["iban"] == "***" for t in olga.get("/api/reviews").json())


def test_an_operator_sees_every_task_and_reassigns(invoices: App, http: dict[str, Api]) -> None:
    alice, bob, olga = http["alice"], http["bob"], http["olga"]
    finance = task_of(invoices, "fin-1")
    assert {t["run_id"] for t in olga.get("/api/reviews").json()} == {"fin-1", "leg-1"}
    assert [t["run_id"] for t in olga.get("/api/reviews", group="legal").json()] == ["leg-1"]
    assert alice.post(f"/api/reviews/{finance}/claim").status_code == 200

    moved = olga.post(f"/api/reviews/{finance}/reassign", {"to": ["group:legal"], "reason": "VAT"})
    assert moved.status_code == 200, moved.text
    assert (moved.json()["groups"], moved.json()["claimed_by"]) == (["legal"], None)
    assert alice.get(f"/api/reviews/{finance}").status_code == 404
    assert {t["run_id"] for t in bob.get("/api/reviews").json()} == {"fin-1", "leg-1"}
    reasons = [e.reason or "" for e in invoices.get_run("fin-1").events]
    assert any("reassigned to group:legal: VAT" in r for r in reasons)
    assert olga.post("/api/reviews/999999/reassign", {"to": ["bob"]}).status_code == 404
    bad = olga.post(f"/api/reviews/{finance}/reassign", {"to": []})
    assert bad.status_code == 422 and bad.json()["fields"][0]["path"] == "body.to"


def test_a_decision_over_http_resumes_the_run_and_a_second_one_conflicts(
    invoices: App, http: dict[str, Api]
) -> None:
    alice, olga = http["alice"], http["olga"]
    finance = task_of(invoices, "fin-1")

    invalid = alice.post(
        f"/api/reviews/{finance}/decide", {"outcome": "edit", "data": {"vendor": "A", "total": "x"}}
    )
    assert invalid.status_code == 422
    assert invalid.json()["code"] == "review_invalid"
    assert [f["path"] for f in invalid.json()["fields"]] == ["total"]
    assert invoices.reviews.get(finance).state == "open"  # nothing stored
    unknown = alice.post(f"/api/reviews/{finance}/decide", {"outcome": "maybe"})
    assert unknown.status_code == 422 and unknown.json()["fields"][0]["path"] == "outcome"

    decided = alice.post(
        f"/api/reviews/{finance}/decide",
        {"outcome": "edit", "data": {"vendor": "ACME Ltd", "total": "99"}, "comment": "typo"},
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["reviewer"] == "alice" and decided.json()["outcome"] == "edit"
    drive(invoices, until=lambda: invoices.handle("fin-1").state == State.SUCCESS)
    result = invoices.handle("fin-1").result()
    assert result["outcome"] == "edit" and result["by"] == "alice"
    assert result["data"]["vendor"] == "ACME Ltd"

    again = olga.post(f"/api/reviews/{finance}/decide", {"outcome": "approve"})
    assert again.status_code == 409
    assert again.json()["reason"] == "decided" and "by alice" in again.json()["message"]
    run = olga.get("/api/runs/fin-1").json()
    assert run["state"] == "success" and run["output"]["by"] == "alice"
    assert any("decided: edit (typo)" in (e["reason"] or "") for e in run["events"])
    assert {r["id"] for r in olga.get("/api/runs").json()} == {"fin-1", "leg-1"}
    assert olga.get("/api/runs/nope").status_code == 404


def test_a_cancelled_run_s_task_conflicts(invoices: App, http: dict[str, Api]) -> None:
    legal = task_of(invoices, "leg-1")
    invoices.cancel("leg-1", reason="duplicate")
    response = http["bob"].post(f"/api/reviews/{legal}/decide", {"outcome": "approve"})
    assert response.status_code == 409 and response.json()["reason"] == "cancelled"


def test_batch_decisions_answer_each_on_its_own(invoices: App, http: dict[str, Api]) -> None:
    finance, legal = task_of(invoices, "fin-1"), task_of(invoices, "leg-1")
    response = http["alice"].post(
        "/api/reviews/decisions",
        {
            "decisions": [
                {"task_id": finance, "outcome": "reject", "comment": "duplicate"},
                {"task_id": legal, "outcome": "approve"},  # not alice's
                {"task_id": finance, "outcome": "approve"},  # already decided
            ]
        },
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["status"] for r in results] == [200, 404, 409]
    assert results[0]["decision"]["outcome"] == "reject"
    assert results[1]["error"] == NOT_FOUND and results[2]["error"]["reason"] == "decided"
    assert invoices.reviews.get(legal).state == "open"
    drive(invoices, until=lambda: invoices.handle("fin-1").state == State.SUCCESS)


def test_openapi_describes_the_api(http: dict[str, Api]) -> None:
    assert http["anonymous"].get("/api/openapi.json").status_code == 401
    spec = http["alice"].get("/api/openapi.json").json()
    assert {"/api/reviews", "/api/reviews/{task_id}/decide", "/api/runs/{run_id}"} <= set(
        spec["paths"]
    )
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    decide = spec["paths"]["/api/reviews/{task_id}/decide"]["post"]
    assert {"200", "401", "404", "409", "422"} <= set(decide["responses"])
    assert http["alice"].get("/api/docs").status_code == 404  # no unauthenticated pages


# -- surestep serve, a real process ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def surestep_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from surestep.cli import main; main()", *args]


def test_serve_prints_its_url_and_never_logs_a_token(invoices: App, db_url: str) -> None:
    token = invoices.users.add("olga", "operator")
    invoices.users.add("alice", "reviewer")
    invoices.start("invoice", "1", "finance", run_id="fin-1")
    drive(invoices, until=lambda: len(invoices.reviews.list()) == 1)
    port = free_port()
    env = {**os.environ, "SURESTEP_DATABASE_URL": db_url}
    process = subprocess.Popen(
        surestep_command("serve", "--port", str(port)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f"http://localhost:{port}/api" in first
        assert f"console on http://localhost:{port}/console/" in first
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(f"{base}/api/openapi.json")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "surestep serve did not listen"
                time.sleep(0.05)
        olga = Api(base, token)
        assert olga.get("/api/me").json() == {"name": "olga", "role": "operator", "groups": []}
        assert olga.get("/api/reviews").status_code == 200
        assert Api(base, token[:-2] + "zz").get("/api/reviews").status_code == 401
        assert olga.get("/api/reviews/999999").status_code == 404
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=15)
    assert '"GET /api/reviews HTTP/1.1" 200' in output  # requests are logged...
    assert token not in output and token[:-2] not in output  # ...their tokens are not


def test_serve_without_the_web_extra_names_the_pip_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "from surestep.cli import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "serve", "--db", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    assert "pip install 'surestep[web]'" in done.stderr
    assert "fastapi and uvicorn" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.db").exists()  # it failed before touching the database


def test_an_operator_redrives_a_dead_letter(invoices: App, http: dict[str, Api]) -> None:
    down = {"yes": True}

    @invoices.step(name="call_api", retry=surestep.Retry(max_attempts=1))
    def call_api() -> str:
        if down["yes"]:
            raise ConnectionError("api is down")
        return "ok"

    @invoices.workflow(name="fragile")
    def fragile() -> str:
        return call_api()

    handle = invoices.start(fragile, run_id="dl-1")
    drive(invoices, until=lambda: handle.state == State.DEAD_LETTER)
    assert http["alice"].post("/api/runs/dl-1/redrive").status_code == 403
    assert http["olga"].post("/api/runs/fin-1/redrive").status_code == 409  # not a dead letter
    down["yes"] = False
    redriven = http["olga"].post("/api/runs/dl-1/redrive")
    assert redriven.json() == {"run_id": "dl-1", "steps": ["call_api"]}, redriven.text
    drive(invoices, until=lambda: handle.state == State.SUCCESS)
    assert any(e.actor == "api:olga" for e in invoices.get_run("dl-1").events)


def test_a_task_that_acts_on_a_run_needs_an_operator(invoices: App) -> None:
    app = invoices
    reviewer = app.users.add("rick", "reviewer", ["operators"])  # in the group, not the role
    operator = app.users.add("opal", "operator")

    @app.step(retry=surestep.Retry(max_attempts=1), on_exhausted="review")
    def flaky() -> int:
        raise ConnectionError("down")

    @app.workflow(name="job")
    def job() -> int:
        return flaky()

    handle = app.start(job, run_id="job-1")
    drive(app, until=lambda: handle.state == State.NEEDS_REVIEW)
    task_id = task_of(app, "job-1")
    with serving(app) as base:
        rick, opal = Api(base, reviewer), Api(base, operator)
        assert rick.get(f"/api/reviews/{task_id}").status_code == 200  # he may see it
        refused = rick.post(f"/api/reviews/{task_id}/decide", {"outcome": "cancel"})
        assert refused.status_code == 403 and "operator role" in refused.json()["message"]
        batch = rick.post(
            "/api/reviews/decisions", {"decisions": [{"task_id": task_id, "outcome": "cancel"}]}
        )
        assert batch.json()["results"][0]["status"] == 403
        done = opal.post(f"/api/reviews/{task_id}/decide", {"outcome": "output", "data": 7})
        assert done.status_code == 200, done.text
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == 7
