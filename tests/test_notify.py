"""The webhook notifier of review events: signed, delivered durably by the engine's own
retries, sensitive fields masked, and the secret (and URL) never stored or logged.

A real HTTP server on 127.0.0.1 receives the events; both databases, FakeClock (the
in-process worker jumps over the retry backoff).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from webhook_receiver import SECRET, TOKEN, Receiver  # tests/webhook_receiver.py

import surestep
from surestep import App, ConfigurationError, FakeClock, State
from surestep.review import notify
from surestep.testing import drive


@pytest.fixture
def receiver(clock: FakeClock) -> Iterator[Receiver]:
    found = Receiver(clock.now, [500, 500])
    yield found
    found.close()


def invoice_app(app: App) -> None:
    @app.step(name="extract")
    def extract(doc: str) -> dict[str, str]:
        return {"vendor": f"ACME {doc}", "iban": "DE44500105175407324931"}

    @app.workflow(name="invoice")
    def invoice(doc: str) -> str:
        decision = surestep.request_review(
            extract(doc),
            kind="approve_invoice",
            assignee="alice",
            groups=["finance"],
            priority=70,
            sla=timedelta(hours=2),
            redact=["iban"],
        )
        return decision.outcome


def deliveries(app: App) -> list[surestep.RunHandle]:
    runs = app.list_runs(workflow=notify.WORKFLOW, limit=100)
    return [app.handle(r.id) for r in sorted(runs, key=lambda r: r.created_at)]


def text_in_database(app: App, needle: str) -> list[str]:
    """Where ``needle`` occurs in any column of any table of the App's database."""
    with app.store.reading() as cur:
        if app.database_url.startswith("sqlite"):
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        else:
            cur.execute(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            )
        tables = [name for (name,) in cur.fetchall()]
        found = []
        for table in tables:
            cur.execute(f'SELECT * FROM "{table}"')
            found += [table for row in cur.fetchall() if needle in repr(row)]
    assert "surestep_review_tasks" in tables and "surestep_attempts" in tables
    return found


def test_review_events_are_posted_signed_after_retries_and_the_secret_is_never_stored(
    app: App, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    invoice_app(app)
    app.notify_reviews(receiver.url, secret=SECRET, events=("created", "decided"))
    handle = app.start("invoice", "doc-1", run_id="inv-1")
    drive(app, until=lambda: any(d.state == State.SUCCESS for d in deliveries(app)))
    assert handle.state == State.NEEDS_REVIEW
    [task] = app.reviews.list(run_id="inv-1")

    # Refused twice (HTTP 500), accepted at the third attempt: one event, signed each time.
    assert [r["status"] for r in receiver.requests] == [500, 500, 200]
    assert all(r["signed"] for r in receiver.requests)
    assert all(r["path"] == f"/hooks/{TOKEN}" for r in receiver.requests)
    first, second, third = receiver.events()
    assert first == second == third
    event_id = f"surestep-notify:webhook:{task.id}:created:0"
    assert {r["headers"]["X-Surestep-Event-Id"] for r in receiver.requests} == {event_id}
    assert third["id"] == event_id and third["event"] == "created"
    assert third["task"] | {"payload": None} == third["task"] | {
        "id": task.id,
        "run_id": "inv-1",
        "kind": "approve_invoice",
        "assignee": "alice",
        "groups": ["finance"],
        "priority": 70,
        "due_at": task.due_at,
        "level": 0,
        "state": "open",
        "payload": None,
    }
    assert third["task"]["payload"] == {"vendor": "ACME doc-1", "iban": "***"}

    [delivery] = deliveries(app)
    assert delivery.id == event_id and delivery.result() == 200
    [step] = app.get_run(delivery.id).steps
    assert step.name == notify.STEP and step.attempts == 3
    errors = [a.error for a in step.attempt_records if a.error]
    assert [e["type"].rsplit(".", 1)[-1] for e in errors] == ["WebhookDeliveryError"] * 2
    assert "answered HTTP 500" in errors[0]["message"]

    # The decision is told from the process that made it; masked data, same signing.
    app.reviews.decide(task.id, "approve", by="bob", comment="ok")
    drive(app, until=lambda: handle.state == State.SUCCESS and len(deliveries(app)) == 2)
    drive(app, until=lambda: all(d.state == State.SUCCESS for d in deliveries(app)))
    assert [r["status"] for r in receiver.requests] == [500, 500, 200, 200]
    decided = receiver.events()[-1]
    assert decided["event"] == "decided" and receiver.requests[-1]["signed"]
    assert decided["id"] == f"surestep-notify:webhook:{task.id}:decided:0"
    assert (decided["task"]["outcome"], decided["task"]["reviewer"]) == ("approve", "bob")
    assert decided["task"]["data"] == {"vendor": "ACME doc-1", "iban": "***"}

    # Neither the secret nor the URL's token is stored anywhere, or logged.
    assert text_in_database(app, SECRET) == []
    assert text_in_database(app, TOKEN) == []
    assert text_in_database(app, "DE44500105175407324931") != []  # the search does find text
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert SECRET not in logged and TOKEN not in logged


def test_an_event_is_delivered_once_and_one_never_accepted_is_dead_lettered(
    app: App, clock: FakeClock
) -> None:
    receiver = Receiver(clock.now, [500] * 100)
    try:
        invoice_app(app)
        app.notify_reviews(receiver.url, secret=SECRET, events=("created",))
        app.start("invoice", "doc-2", run_id="inv-2")
        drive(app, until=lambda: any(d.state == State.DEAD_LETTER for d in deliveries(app)))
        [delivery] = deliveries(app)
        assert len(receiver.requests) == notify.DELIVERY_RETRY.max_attempts
        # The same event again (its hook fired twice, say): no second delivery.
        task = app.reviews.get(app.reviews.list(run_id="inv-2")[0].id)
        for hook in app.hooks.on_review:
            hook("created", task)
        assert [d.id for d in deliveries(app)] == [delivery.id]
        # An operator redrives it once the receiver is back.
        receiver.statuses.clear()
        app.retry(delivery.id)
        drive(app, until=lambda: delivery.state == State.SUCCESS)
        assert [r["status"] for r in receiver.requests][-1] == 200
        assert len(receiver.requests) == notify.DELIVERY_RETRY.max_attempts + 1
    finally:
        receiver.close()


def test_events_not_asked_for_start_no_delivery(app: App, receiver: Receiver) -> None:
    invoice_app(app)
    app.notify_reviews(receiver.url, secret=SECRET, events=("escalated",))
    handle = app.start("invoice", "doc-3", run_id="inv-3")
    drive(app, until=lambda: handle.state == State.NEEDS_REVIEW)
    assert deliveries(app) == [] and receiver.requests == []


def test_signatures_cover_the_timestamp_and_the_body() -> None:
    body = b'{"event":"created"}'
    headers = {"X-Surestep-Timestamp": "1700000000", "X-Surestep-Signature": ""}
    headers["X-Surestep-Signature"] = notify.sign(SECRET, "1700000000", body)
    assert notify.verify_signature(SECRET, body, headers, now=1_700_000_100)
    assert not notify.verify_signature(SECRET, body + b" ", headers, now=1_700_000_100)
    assert not notify.verify_signature("other", body, headers, now=1_700_000_100)
    # A replay: the right signature, sent again long after.
    assert not notify.verify_signature(SECRET, body, headers, now=1_700_000_000 + 301)
    forged = {**headers, "X-Surestep-Timestamp": "1700000300"}  # a fresh time, old signature
    assert not notify.verify_signature(SECRET, body, forged, now=1_700_000_300)


def test_bad_notifier_settings_fail_where_they_are_made(app: App) -> None:
    with pytest.raises(ConfigurationError, match="http:// or https://"):
        app.notify_reviews("file:///etc/passwd", secret=SECRET)
    with pytest.raises(ConfigurationError, match="non-empty key"):
        app.notify_reviews("https://example.invalid/h", secret="")
    with pytest.raises(ConfigurationError, match="events="):
        app.notify_reviews("https://example.invalid/h", secret=SECRET, events=("opened",))
    app.notify_reviews("https://example.invalid/h", secret=SECRET)
    with pytest.raises(ConfigurationError, match="another name="):
        app.notify_reviews("https://example.invalid/other", secret=SECRET)
    hook = app.notify_reviews("https://example.invalid/other", secret=SECRET, name="pager")
    assert SECRET not in repr(hook) and "example.invalid" not in repr(hook)
