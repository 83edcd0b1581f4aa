"""The web console over real HTTP on 127.0.0.1, on both databases: sign-in and sessions,
CSRF, headers, role checks on every route, and what each page does.

The browser flows (a real Chromium) are in test_console_browser.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from console_site import (
    browser,
    csrf_in,
    declare,
    serving,
    sign_in,
    signed_in,
    unlabelled_controls,
)
from fastapi.routing import APIRoute
from starlette.testclient import TestClient

import surestep
from surestep import App, FakeClock, State
from surestep.auth.sessions import SESSION_SECONDS
from surestep.llm.ledger import CallLedger, ModelCall
from surestep.testing import drive
from surestep.web import create_app
from surestep.web.headers import CSP


@dataclass
class Site:
    app: App
    base: str
    tokens: dict[str, str]
    clients: list[httpx.Client]

    def user(self, name: str) -> httpx.Client:
        client = signed_in(self.base, self.tokens[name])
        self.clients.append(client)
        return client

    def anonymous(self) -> httpx.Client:
        client = browser(self.base)
        self.clients.append(client)
        return client


@pytest.fixture
def site(app: App) -> Iterator[Site]:
    """alice (finance) and bob (legal) review, olga operates; a finance task (fin-1), a
    legal one (leg-1) and a dead letter (dl-1)."""
    declare(app)
    tokens = {
        "alice": app.users.add("alice", "reviewer", ["finance"]),
        "bob": app.users.add("bob", "reviewer", ["legal"]),
        "olga": app.users.add("olga", "operator"),
    }
    app.start("invoice", "1", "finance", run_id="fin-1")
    app.start("invoice", "2", "legal", run_id="leg-1")
    app.start("fragile", run_id="dl-1")
    drive(
        app,
        until=lambda: len(app.reviews.list()) == 2 and app.get_run("dl-1").state == "dead_letter",
    )
    with serving(app) as base:
        clients: list[httpx.Client] = []
        yield Site(app, base, tokens, clients)
        for client in clients:
            client.close()


def task_of(app: App, run_id: str) -> int:
    [task] = app.reviews.list(run_id=run_id, state=None)
    return task.id


# -- signing in -----------------------------------------------------------------------------


def test_signing_in_sets_a_strict_httponly_cookie_whose_secret_is_stored_hashed(
    site: Site,
) -> None:
    client = site.anonymous()
    answer = sign_in(client, site.tokens["alice"], "/console/inbox")
    assert (answer.status_code, answer.headers["location"]) == (303, "/console/inbox")
    cookie = next(c for c in answer.headers.get_list("set-cookie") if "surestep_session=" in c)
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console/" in cookie
    assert "Secure" not in cookie  # plain http on 127.0.0.1; https gets Secure
    secret = client.cookies["surestep_session"]
    with site.app.store.reading() as cur:
        cur.execute("SELECT id_hash, user_name FROM surestep_console_sessions")
        rows = cur.fetchall()
    assert [(str(h), str(n)) for h, n in rows] == [
        (hashlib.sha256(secret.encode()).hexdigest(), "alice")
    ]
    assert client.get("/console/inbox").status_code == 200


def test_a_bad_token_a_stale_form_and_a_foreign_next_do_not_sign_in(site: Site) -> None:
    client = site.anonymous()
    wrong = sign_in(client, "sst_" + "x" * 43)
    assert wrong.status_code == 401 and "signs no one in" in wrong.text
    assert "surestep_session" not in client.cookies
    stale = client.post("/console/login", data={"csrf": "nope", "token": site.tokens["alice"]})
    assert stale.status_code == 403 and "surestep_session" not in client.cookies
    for evil in ("//evil.example/x", "https://evil.example/", "/api/me", "/console\\@evil"):
        answer = sign_in(site.anonymous(), site.tokens["alice"], evil)
        assert answer.headers["location"] == "/console/", evil


def test_sign_out_expiry_rotation_and_disabling_end_a_session(site: Site) -> None:
    clock = site.app.clock
    assert isinstance(clock, FakeClock)
    alice = site.user("alice")
    page = alice.get("/console/inbox")
    assert page.status_code == 200
    assert alice.post("/console/logout", data={"csrf": csrf_in(page.text)}).status_code == 303
    # The old cookie no longer works, even sent again by hand.
    assert alice.get("/console/inbox").headers["location"].startswith("/console/login")

    olga = site.user("olga")
    clock.advance(SESSION_SECONDS - 1)
    assert olga.get("/console/runs").status_code == 200
    clock.advance(2)
    expired = olga.get("/console/runs")
    assert expired.status_code == 303
    assert expired.headers["location"] == "/console/login?next=/console/runs"

    bob = site.user("bob")
    site.app.users.rotate("bob")
    assert bob.get("/console/inbox").status_code == 303
    alice = site.user("alice")
    site.app.users.disable("alice")
    assert alice.get("/console/inbox").status_code == 303


# -- every route ----------------------------------------------------------------------------

#: The console's pages a reviewer may open; every other console route is for operators.
REVIEWER_ROUTES = {
    "/console/",
    "/console/inbox",
    "/console/tasks/{task_id}",
    "/console/tasks/{task_id}/claim",
    "/console/tasks/{task_id}/release",
    "/console/tasks/{task_id}/decide",
    "/console/inbox/approve",
    "/console/logout",
}
PUBLIC_ROUTES = {"/console/login", "/"}


def console_routes(app: App) -> list[tuple[str, str]]:
    """(method, path) of every console route, from the app itself: a new page is
    checked without anyone remembering to add it here."""
    found = []
    pending = list(create_app(app).routes)
    while pending:
        route = pending.pop(0)
        if hasattr(route, "original_router"):  # FastAPI >= 0.16x keeps included routers
            pending += route.original_router.routes
        elif isinstance(route, APIRoute) and (
            route.path.startswith("/console") or route.path == "/"
        ):
            path = re.sub(r"\{(\w+):path\}", r"{\1}", route.path)
            found += [(method, path) for method in sorted(route.methods)]
    return found


def test_every_console_route_checks_the_role_and_every_post_the_csrf_token(site: Site) -> None:
    routes = console_routes(site.app)
    assert {p for _, p in routes} >= REVIEWER_ROUTES | PUBLIC_ROUTES | {"/console/runs/{run_id}"}
    task = task_of(site.app, "fin-1")
    anonymous, alice, olga = site.anonymous(), site.user("alice"), site.user("olga")
    csrf = {"alice": csrf_in(alice.get("/console/inbox").text)}
    for method, path in routes:
        if path in PUBLIC_ROUTES:
            continue
        url = path.replace("{task_id}", str(task)).replace("{run_id}", "dl-1")
        if method == "GET":
            answer = anonymous.get(url)
            assert answer.status_code == 303, (method, path)
            assert answer.headers["location"].startswith("/console/login?next="), path
        else:
            answer = anonymous.post(url, data={})
            assert answer.status_code == 303 and "/console/login" in answer.headers["location"]
        reviewer = (
            alice.get(url) if method == "GET" else alice.post(url, data={"csrf": csrf["alice"]})
        )
        if path in REVIEWER_ROUTES:
            # Allowed: answered (an empty form may be refused, 4xx), never sent to sign in.
            assert reviewer.status_code != 403 and reviewer.status_code < 500, (method, path)
            if path != "/console/logout":
                assert "/console/login" not in reviewer.headers.get("location", ""), path
            if path == "/console/logout":  # sign alice in again for the next routes
                alice = site.user("alice")
                csrf["alice"] = csrf_in(alice.get("/console/inbox").text)
        else:
            assert reviewer.status_code == 403, (method, path)
            assert "needs the operator role" in reviewer.text
        if method == "POST":
            # Signed in as an operator but without the CSRF token: refused, nothing done.
            refused = olga.post(url, data={"outcome": "approve", "task": str(task), "run": "dl-1"})
            assert refused.status_code == 403 and "CSRF" in refused.text, path
    assert site.app.reviews.get(task).state == "open"
    assert site.app.get_run("dl-1").state == State.DEAD_LETTER


def test_headers_forbid_inline_scripts_framing_and_sniffing(site: Site) -> None:
    alice = site.user("alice")
    for answer in (
        alice.get("/console/inbox"),
        site.anonymous().get("/console/login"),
        site.anonymous().get("/api/me"),
    ):
        assert answer.headers["content-security-policy"] == CSP
        assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
        assert answer.headers["cache-control"] == "no-store"
    page = alice.get("/console/inbox").text
    assert "<script>" not in page and " style=" not in page and "<style" not in page
    assert not re.search(r"<[^>]+\son[a-z]+=", page)  # no inline event handlers
    static = site.anonymous().get("/console/static/console.js")
    assert static.status_code == 200 and "javascript" in static.headers["content-type"]


# -- reviewer pages -------------------------------------------------------------------------


def test_the_inbox_shows_a_reviewer_their_groups_tasks_masked(site: Site) -> None:
    alice = site.user("alice")
    inbox = alice.get("/console/inbox").text
    finance, legal = task_of(site.app, "fin-1"), task_of(site.app, "leg-1")
    assert f"/console/tasks/{finance}" in inbox and f"/console/tasks/{legal}" not in inbox
    assert "DE89370400440532013000" not in inbox
    # Another group's task answers like a task that does not exist.
    for path in (f"/console/tasks/{legal}", "/console/tasks/999999"):
        missing = alice.get(path)
        assert missing.status_code == 404 and "no such review task" in missing.text
    assert alice.get("/console/inbox", params={"state": "decided"}).status_code == 200


def test_the_task_page_renders_instructions_sanitised_and_shows_the_proposal(
    site: Site,
) -> None:
    alice = site.user("alice")
    page = alice.get(f"/console/tasks/{task_of(site.app, 'fin-1')}").text
    assert "<h2>Check the invoice</h2>" in page and "<strong>total</strong>" in page
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    assert 'href="javascript:' not in page
    assert 'href="https://example.com/p" rel="noopener noreferrer nofollow"' in page
    assert "62%" in page  # the model's confidence
    # Sensitive fields are masked on screen, as in listings; the decider may unfold them.
    masked, revealed = page.split("Show sensitive fields (iban)")
    assert "DE89370400440532013000" not in masked, masked[masked.find("DE8937") - 300 :][:400]
    assert "&#34;iban&#34;: &#34;***&#34;" in masked
    assert "DE89370400440532013000" in revealed.split("</details>")[0]
    assert 'value="120.00"' in page  # the form starts from the proposal
    assert unlabelled_controls(page) == []


def test_an_invalid_edit_is_shown_then_a_valid_one_decides_and_the_next_task_opens(
    site: Site,
) -> None:
    app = site.app
    app.start("invoice", "3", "finance", run_id="fin-2")
    drive(app, until=lambda: len(app.reviews.list()) == 3)
    first, second = task_of(app, "fin-1"), task_of(app, "fin-2")
    alice = site.user("alice")
    csrf = csrf_in(alice.get(f"/console/tasks/{first}").text)
    edit = {"csrf": csrf, "outcome": "edit", "f.vendor": "ACME 1", "comment": "fixed"}
    wrong = alice.post(f"/console/tasks/{first}/decide", data={**edit, "f.total": "12,5O"})
    assert wrong.status_code == 422
    assert 'aria-invalid="true"' in wrong.text and "does not fit the form" in wrong.text
    assert 'value="12,5O"' in wrong.text  # what was typed stays in the field
    assert app.reviews.get(first).state == "open"
    done = alice.post(f"/console/tasks/{first}/decide", data={**edit, "f.total": "12.50"})
    assert done.status_code == 303
    assert done.headers["location"] == f"/console/tasks/{second}?decided={first}"
    drive(app, until=lambda: app.get_run("fin-1").state == State.SUCCESS)
    assert app.handle("fin-1").result()["data"] == {"vendor": "ACME 1", "total": "12.50"}
    assert app.reviews.get(first).reviewer == "alice"
    # A second decision on the same task is a conflict, shown on the page.
    again = alice.post(f"/console/tasks/{first}/decide", data={**edit, "f.total": "1"})
    assert again.status_code == 409


def test_claim_release_and_batch_approve(site: Site) -> None:
    app = site.app
    app.start("invoice", "3", "finance", run_id="fin-2")
    drive(app, until=lambda: len(app.reviews.list()) == 3)
    first, second = task_of(app, "fin-1"), task_of(app, "fin-2")
    alice = site.user("alice")
    csrf = csrf_in(alice.get("/console/inbox").text)
    claimed = alice.post(
        f"/console/tasks/{first}/claim",
        data={},
        headers={"HX-Request": "true", "X-CSRF-Token": csrf},
    )
    assert claimed.status_code == 200 and 'id="claim"' in claimed.text and "alice" in claimed.text
    assert app.reviews.get(first).claimed_by == "alice"
    assert alice.post(f"/console/tasks/{first}/release", data={"csrf": csrf}).status_code == 303
    assert app.reviews.get(first).claimed_by is None
    legal = task_of(app, "leg-1")
    batch = alice.post(
        "/console/inbox/approve",
        data={"csrf": csrf, "task": [str(first), str(second), str(legal)]},
    )
    assert batch.status_code == 303
    assert "approved%202%20tasks%3B%201%20could%20not" in batch.headers["location"]
    assert [app.reviews.get(t).outcome for t in (first, second)] == ["approve", "approve"]
    assert app.reviews.get(legal).state == "open"  # bob's group: not alice's to approve


# -- operator pages -------------------------------------------------------------------------


def test_the_run_page_shows_steps_attempts_errors_and_model_calls(site: Site) -> None:
    app = site.app
    CallLedger(app.store).record(
        ModelCall(
            run_id="dl-1", position=0, attempt=1, seq=1, workflow="fragile", step="call_api",
            provider="openai", model="gpt-4o-mini", prompt_hash="p", schema_hash=None,
            outcome="timeout", error="timed out", finish_reason=None, input_tokens=812,
            output_tokens=0, cost_usd=0.0123, priced=True, price_version="1", latency=2.5,
            confidence=None, chosen=False, cached=False, started_at=app.clock.now(),
        )
    )  # fmt: skip
    olga = site.user("olga")
    page = olga.get("/console/runs/dl-1")
    assert page.status_code == 200
    text = page.text
    assert "dead_letter" in text and "ConnectionError" in text and "api is down" in text
    assert "Traceback" in text  # the attempt's traceback, folded
    assert "openai:gpt-4o-mini" in text and "812 in / 0 out tokens" in text
    assert "$0.0123" in text and "2.5 s" in text and "not used" in text
    assert unlabelled_controls(text) == []
    listing = olga.get("/console/runs", params={"state": "dead_letter"}).text
    assert "dl-1" in listing and "fin-1" not in listing
    assert "fin-1" in olga.get("/console/runs", params={"workflow": "invoice"}).text
    later = olga.get("/console/runs", params={"since": "2100-01-01T00:00"}).text
    assert "No runs match" in later
    fragment = olga.get("/console/runs", headers={"HX-Request": "true"}).text
    assert fragment.startswith('<div id="runs">')


def test_an_operator_cancels_and_retries_from_the_run_page(site: Site) -> None:
    app = site.app
    olga = site.user("olga")
    csrf = csrf_in(olga.get("/console/runs/fin-1").text)
    retry = olga.post("/console/runs/fin-1/retry", data={"csrf": csrf})
    assert retry.status_code == 409 and "dead" in retry.text  # not a dead letter
    cancelled = olga.post("/console/runs/fin-1/cancel", data={"csrf": csrf, "reason": "dup"})
    assert cancelled.status_code == 303
    assert app.get_run("fin-1").state == State.CANCELLED
    assert any(e.actor == "console:olga" and e.reason == "dup" for e in app.get_run("fin-1").events)
    redriven = olga.post("/console/runs/dl-1/retry", data={"csrf": csrf})
    assert redriven.status_code == 303 and "call_api" in redriven.headers["location"]
    assert app.get_run("dl-1").state == State.PENDING


def test_the_dead_letter_queue_says_why_and_redrives_in_bulk(site: Site) -> None:
    app = site.app
    app.start("fragile", run_id="dl-2")
    drive(app, until=lambda: app.get_run("dl-2").state == State.DEAD_LETTER)
    olga = site.user("olga")
    page = olga.get("/console/dead-letters").text
    assert "dl-1" in page and "dl-2" in page and "ConnectionError" in page
    assert unlabelled_controls(page) == []
    done = olga.post(
        "/console/dead-letters/redrive",
        data={"csrf": csrf_in(page), "run": ["dl-1", "dl-2", "fin-1"]},
    )
    assert done.status_code == 303
    assert "redrove%202%20runs" in done.headers["location"]
    assert "fin-1" in done.headers["location"]  # not a dead letter: said why
    assert {app.get_run(r).state for r in ("dl-1", "dl-2")} == {State.PENDING}


def test_the_overview_shows_cluster_figures(site: Site) -> None:
    olga = site.user("olga")
    page = olga.get("/console/overview")
    assert page.status_code == 200
    text = page.text
    assert "<svg" in text and "Open review tasks by kind" in text
    assert "approve_invoice" in text and "fragile" in text
    assert 'href="/console/dead-letters?workflow=fragile">1<' in text
    assert olga.get("/console/").headers["location"] == "/console/overview"
    assert site.user("alice").get("/console/").headers["location"] == "/console/inbox"


def test_every_page_labels_every_control(site: Site) -> None:
    olga = site.user("olga")
    task = task_of(site.app, "fin-1")
    pages = {
        "/console/login": site.anonymous(),
        "/console/inbox": olga,
        f"/console/tasks/{task}": olga,
        "/console/runs": olga,
        "/console/runs/dl-1": olga,
        "/console/runs/fin-1": olga,
        "/console/dead-letters": olga,
        "/console/overview": olga,
    }
    for path, client in pages.items():
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert '<html lang="en">' in answer.text and '<main id="main">' in answer.text
        assert unlabelled_controls(answer.text) == [], path


def test_the_runs_list_pages_by_creation_time(site: Site) -> None:
    clock = site.app.clock
    assert isinstance(clock, FakeClock)
    for n in range(52):
        clock.advance(1)
        site.app.start("fragile", run_id=f"many-{n:02d}")
    olga = site.user("olga")
    first = olga.get("/console/runs").text
    assert "many-51" in first and "many-02" in first and "many-01" not in first
    older = re.search(r'href="(/console/runs\?[^"]*before=[^"]+)"', first)
    assert older, "no link to older runs"
    second = olga.get(older.group(1).replace("&amp;", "&")).text
    assert "many-01" in second and "many-00" in second and "dl-1" in second
    assert "many-02" not in second


def test_over_https_the_session_cookie_is_secure(site: Site) -> None:
    with TestClient(create_app(site.app), base_url="https://console.example") as client:
        form = client.get("/console/login")
        answer = client.post(
            "/console/login",
            data={"csrf": csrf_in(form.text), "token": site.tokens["alice"]},
            follow_redirects=False,
        )
    assert answer.status_code == 303
    cookie = next(c for c in answer.headers.get_list("set-cookie") if "surestep_session=" in c)
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie


def test_a_step_that_exhausted_its_retries_is_decided_by_an_operator(site: Site) -> None:
    app = site.app
    rick = app.users.add("rick", "reviewer", ["operators"])  # in the group, not the role

    @app.step(retry=surestep.Retry(max_attempts=1), on_exhausted="review")
    def flaky() -> int:
        raise ConnectionError("down")

    @app.workflow(name="job")
    def job() -> int:
        return flaky()

    app.start(job, run_id="job-1")
    drive(app, until=lambda: app.get_run("job-1").state == State.NEEDS_REVIEW)
    task = task_of(app, "job-1")
    reviewer = signed_in(site.base, rick)
    site.clients.append(reviewer)
    page = reviewer.get(f"/console/tasks/{task}")
    assert page.status_code == 200 and "needs the operator role" in page.text
    refused = reviewer.post(
        f"/console/tasks/{task}/decide", data={"csrf": csrf_in(page.text), "outcome": "cancel"}
    )
    assert refused.status_code == 403 and app.reviews.get(task).state == "open"
    olga = site.user("olga")
    page = olga.get(f"/console/tasks/{task}")
    assert "ConnectionError" in page.text  # the context: the step, its error, attempts
    csrf = csrf_in(page.text)
    bad = olga.post(
        f"/console/tasks/{task}/decide", data={"csrf": csrf, "outcome": "output", "data": "7,"}
    )
    assert bad.status_code == 422 and "not valid JSON" in bad.text
    done = olga.post(
        f"/console/tasks/{task}/decide", data={"csrf": csrf, "outcome": "output", "data": "7"}
    )
    assert done.status_code == 303
    drive(app, until=lambda: app.get_run("job-1").state == State.SUCCESS)
    assert app.handle("job-1").result() == 7
