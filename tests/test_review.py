"""Human review as a branch of a workflow, on both databases, with a fake clock."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from pydantic import BaseModel

import surestep
from surestep import (
    App,
    ConfigurationError,
    Decision,
    FakeClock,
    Retry,
    ReviewConflictError,
    ReviewValidationError,
    State,
)
from surestep.review.rows import TaskSpec
from surestep.review.store import ReviewStore
from surestep.testing import drive

HOUR = 3600.0


class Invoice(BaseModel):
    vendor: str
    total: Decimal


def invoice_app(app: App, calls: list[str], **review: object) -> None:
    @app.step(name="extract")
    def extract(doc: str) -> dict[str, object]:
        calls.append("extract")
        return {"vendor": f"ACME {doc}", "total": "120.50"}

    @app.step(name="book")
    def book(vendor: str) -> str:
        calls.append("book")
        return f"booked {vendor}"

    @app.workflow(name="invoice")
    def invoice(doc: str) -> dict[str, object]:
        fields = extract(doc)
        options: dict[str, object] = {"groups": ["finance"], "form": Invoice, **review}
        decision = surestep.request_review(
            fields,
            kind="approve_invoice",
            proposal=fields,
            confidence=0.62,
            instructions="Check the total against the PDF.",
            **options,  # type: ignore[arg-type]
        )
        if not decision.approved:
            return {"outcome": decision.outcome, "by": decision.reviewer}
        assert isinstance(decision.data, Invoice)
        return {"outcome": decision.outcome, "booked": book(decision.data.vendor)}


def rewrite_decisions(app: App, db_url: str, old: str, new: str, run_id: str = "%") -> None:
    """Edit stored decision records behind surestep's back, as someone with write access
    to the database would: the append-only trigger dropped (disabled on PostgreSQL)."""
    with app.store.transaction() as cur:
        if db_url.startswith("sqlite"):
            cur.execute("DROP TRIGGER surestep_review_decisions_no_update")
        else:
            cur.execute(
                "ALTER TABLE surestep_review_decisions DISABLE TRIGGER"
                " surestep_review_decisions_append_only"
            )
        cur.execute(
            "UPDATE surestep_review_decisions SET record = REPLACE(record, ?, ?)"
            " WHERE run_id LIKE ?",
            (old, new, run_id),
        )


def parked(app: App, run_id: str) -> None:
    drive(app, until=lambda: app.handle(run_id).state == State.NEEDS_REVIEW)


def test_a_review_parks_the_run_and_its_decision_resumes_it_without_rerunning(
    app: App,
) -> None:
    calls: list[str] = []
    invoice_app(app, calls)
    handle = app.start("invoice", "doc-1", run_id="inv-1")
    parked(app, "inv-1")
    run = app.get_run("inv-1")
    assert run.lease_owner is None and run.state == State.NEEDS_REVIEW
    [task] = app.reviews.list(group="finance")
    assert (task.kind, task.run_id, task.state, task.confidence) == (
        "approve_invoice",
        "inv-1",
        "open",
        0.62,
    )
    assert task.payload == {"vendor": "ACME doc-1", "total": "120.50"}
    assert task.form is not None and task.form["required"] == ["vendor", "total"]
    assert app.reviews.list(group="legal") == []  # another group's inbox

    decision = app.reviews.decide(task.id, "approve", by="alice", comment="totals match")
    assert decision.data == task.proposal
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == {"outcome": "approve", "booked": "booked ACME doc-1"}
    assert calls == ["extract", "book"]  # nothing before the review ran again
    assert app.reviews.get(task.id).state == "decided"
    assert app.reviews.list(group="finance") == []
    reasons = [e.reason or "" for e in app.get_run("inv-1").events]
    assert any("opened for group:finance" in r for r in reasons)
    assert any("decided: approve (totals match)" in r for r in reasons)


def test_an_edit_must_fit_the_form_and_a_bad_one_stores_nothing(app: App) -> None:
    invoice_app(app, [])
    handle = app.start("invoice", "doc-2", run_id="inv-2")
    parked(app, "inv-2")
    [task] = app.reviews.list(kind="approve_invoice")
    with pytest.raises(ReviewValidationError) as caught:
        app.reviews.decide(task.id, "edit", by="alice", data={"vendor": "ACME", "total": "x"})
    assert [f["path"] for f in caught.value.fields] == ["total"]
    assert caught.value.fields[0]["message"] == "'x' is not a number: write it like 12.50"
    assert app.reviews.get(task.id).state == "open"
    assert app.get_run("inv-2").state == State.NEEDS_REVIEW

    app.reviews.decide(task.id, "edit", by="alice", data={"vendor": "ACME Ltd", "total": 99})
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == {"outcome": "edit", "booked": "booked ACME Ltd"}


def test_a_second_decision_and_a_decision_on_a_cancelled_run_conflict(app: App) -> None:
    invoice_app(app, [])
    app.start("invoice", "a", run_id="inv-a")
    app.start("invoice", "b", run_id="inv-b")
    drive(app, until=lambda: len(app.reviews.list()) == 2)
    first, second = sorted(app.reviews.list(), key=lambda t: t.run_id)
    app.reviews.decide(first.id, "reject", by="alice")
    with pytest.raises(ReviewConflictError) as caught:
        app.reviews.decide(first.id, "approve", by="bob")
    assert caught.value.reason == "decided" and "by alice" in str(caught.value)

    app.cancel("inv-b", reason="duplicate")
    assert app.reviews.get(second.id).state == "cancelled"
    with pytest.raises(ReviewConflictError) as caught:
        app.reviews.decide(second.id, "approve", by="bob")
    assert caught.value.reason == "cancelled"


def test_claims_release_reassign_and_snooze_are_logged(app: App, clock: FakeClock) -> None:
    invoice_app(app, [])
    app.start("invoice", "c", run_id="inv-c")
    parked(app, "inv-c")
    [task] = app.reviews.list()
    app.reviews.claim(task.id, by="alice")
    with pytest.raises(ReviewConflictError):
        app.reviews.claim(task.id, by="bob")
    with pytest.raises(ReviewConflictError):
        app.reviews.decide(task.id, "approve", by="bob")  # claimed by alice
    app.reviews.snooze(task.id, by="alice", until=timedelta(minutes=30))
    assert app.reviews.get(task.id).follow_up_at == pytest.approx(clock.now() + 1800)
    app.reviews.release(task.id, by="alice")
    moved = app.reviews.reassign(task.id, to=["carol", "group:audit"], by="ops", reason="leave")
    assert (moved.assignee, moved.groups, moved.claimed_by) == ("carol", ("audit",), None)
    assert [t.id for t in app.reviews.inbox("carol")] == [task.id]
    assert app.reviews.list(group="finance") == []
    reasons = " | ".join(e.reason or "" for e in app.get_run("inv-c").events)
    for said in ("claimed", "follow up at", "released by alice", "reassigned to user:carol"):
        assert said in reasons


def test_escalation_chain_then_expiry_even_with_no_worker_at_the_due_time(
    app: App, clock: FakeClock
) -> None:
    invoice_app(
        app,
        [],
        assignee="alice",
        groups=[],
        sla=timedelta(hours=2),
        escalate_to=["bob", "group:managers"],
        on_expiry="reject",
    )
    handle = app.start("invoice", "d", run_id="inv-d")
    parked(app, "inv-d")
    [task] = app.reviews.inbox("alice")
    assert task.due_at == pytest.approx(clock.now() + 2 * HOUR)

    clock.advance(5 * HOUR)  # no worker runs meanwhile: the next one applies it
    assert app.reviews.sweep() == [(task.id, "escalated to user:bob")]
    bob = app.reviews.get(task.id)
    assert (bob.assignee, bob.level, bob.due_at) == (
        "bob",
        1,
        pytest.approx(clock.now() + 2 * HOUR),
    )
    assert app.reviews.inbox("alice") == [] and [t.id for t in app.reviews.inbox("bob")] == [
        task.id
    ]

    # A worker applies the rest on its own: the fake clock jumps to each due time.
    drive(app, until=lambda: handle.state == State.SUCCESS)
    result = handle.result()
    assert result["outcome"] == "reject" and result["by"] not in ("alice", "bob")  # the SLA
    final = app.reviews.get(task.id)
    assert (final.state, final.outcome, final.level) == ("expired", "reject", 2)
    reasons = [e.reason or "" for e in app.get_run("inv-d").events]
    assert any("escalated to group:managers (level 2)" in r for r in reasons)


def test_keep_leaves_an_overdue_task_open(app: App, clock: FakeClock) -> None:
    invoice_app(app, [], sla=timedelta(minutes=10))
    app.start("invoice", "e", run_id="inv-e")
    parked(app, "inv-e")
    clock.advance(HOUR)
    [(task_id, what)] = app.reviews.sweep()
    assert what == "kept open, overdue"
    task = app.reviews.get(task_id)
    assert task.state == "open" and task.overdue(clock.now()) and task.overdue_since is not None
    assert [t.id for t in app.reviews.list(overdue=True)] == [task_id]
    assert app.reviews.sweep() == []  # once


def test_expiry_to_dead_letter_and_a_redrive_opens_a_fresh_task(app: App, clock: FakeClock) -> None:
    invoice_app(app, [], sla=timedelta(minutes=10), on_expiry="dead_letter")
    handle = app.start("invoice", "f", run_id="inv-f")
    parked(app, "inv-f")
    clock.advance(HOUR)
    app.reviews.sweep()
    assert handle.state == State.DEAD_LETTER
    [old] = app.reviews.list(state="expired")
    app.retry("inv-f")
    parked(app, "inv-f")
    [fresh] = app.reviews.list()
    assert fresh.id != old.id and fresh.position == old.position
    app.reviews.decide(fresh.id, "approve", by="alice")
    drive(app, until=lambda: handle.state == State.SUCCESS)


def test_on_exhausted_review_retry_with_edited_inputs(app: App) -> None:
    seen: list[int] = []

    @app.step(retry=Retry(max_attempts=2, initial_delay=1.0), on_exhausted="review")
    def divide(a: int, b: int) -> float:
        seen.append(b)
        return a / b

    @app.workflow(name="calc")
    def calc(a: int, b: int) -> float:
        return divide(a, b)

    handle = app.start(calc, 1, 0, run_id="calc-1")
    parked(app, "calc-1")
    [task] = app.reviews.list(kind="step_exhausted")
    assert task.groups == ("operators",) and task.position == 0
    assert task.payload["step"] == "divide" and task.payload["inputs"] == {"a": 1, "b": 0}
    assert task.payload["error"]["type"] == "ZeroDivisionError"
    assert [a["attempt"] for a in task.context["attempts"]] == [1, 2]
    assert app.get_run("calc-1").steps[0].state == State.NEEDS_REVIEW

    with pytest.raises(ReviewValidationError) as caught:
        app.reviews.decide(task.id, "retry", by="ops", data={"inputs": {"a": 1, "b": "x"}})
    assert caught.value.fields[0]["path"] == "b"
    app.reviews.decide(task.id, "retry", by="ops", data={"inputs": {"a": 1, "b": 4}})
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == 0.25 and seen == [0, 0, 4]


def test_on_exhausted_review_output_by_hand_and_dead_letter_and_cancel(app: App) -> None:
    undone: list[str] = []

    @app.step(name="reserve", compensate=lambda: undone.append("reserve"))
    def reserve() -> str:
        return "held"

    @app.step(name="fetch", retry=Retry(max_attempts=1), on_exhausted="review")
    def fetch(key: str) -> int:
        raise ConnectionError(f"no {key}")

    @app.workflow(name="job")
    def job(key: str) -> int:
        reserve()
        return fetch(key) + 1

    runs = {name: app.start(job, name, run_id=name) for name in ("by-hand", "dlq", "stop")}
    drive(app, until=lambda: all(h.state == State.NEEDS_REVIEW for h in runs.values()))
    tasks = {t.run_id: t for t in app.reviews.list(kind="step_exhausted")}

    with pytest.raises(ReviewValidationError):
        app.reviews.decide(tasks["by-hand"].id, "output", by="ops", data="forty")
    app.reviews.decide(tasks["by-hand"].id, "output", by="ops", data=41)
    app.reviews.decide(tasks["dlq"].id, "dead_letter", by="ops")
    app.reviews.decide(tasks["stop"].id, "cancel", by="ops", comment="customer left")
    drive(
        app,
        until=lambda: (
            runs["by-hand"].state == State.SUCCESS and runs["stop"].state == State.CANCELLED
        ),
    )
    assert runs["by-hand"].result() == 42
    assert runs["dlq"].state == State.DEAD_LETTER
    assert undone == ["reserve"]  # only the cancelled run undid its step


def test_a_run_deadline_opens_a_task_an_operator_resolves(app: App, clock: FakeClock) -> None:
    @app.workflow(name="slow")
    def slow() -> str:
        surestep.sleep(timedelta(days=2))
        return "done"

    runs = {
        name: app.start(slow, run_id=name, deadline=timedelta(hours=1), on_deadline="review")
        for name in ("resume", "fail", "cancel")
    }
    drive(app, until=lambda: all(h.state == State.WAITING for h in runs.values()))
    clock.advance(2 * HOUR)
    drive(app, until=lambda: len(app.reviews.list(kind="run_deadline")) == 3)
    tasks = {t.run_id: t for t in app.reviews.list(kind="run_deadline")}
    assert tasks["fail"].groups == ("operators",)
    with pytest.raises(ReviewValidationError):
        app.reviews.decide(tasks["fail"].id, "approve", by="ops")
    for outcome, task in tasks.items():
        app.reviews.decide(task.id, outcome, by="ops")
    drive(app, until=lambda: runs["resume"].state == State.SUCCESS)
    assert runs["fail"].state == State.FAILED and runs["cancel"].state == State.CANCELLED


def test_gathered_async_reviews_wait_for_both(app: App) -> None:
    @app.workflow(name="pair")
    async def pair() -> list[str]:
        first, second = await asyncio.gather(
            surestep.request_review_async({"n": 1}, kind="left"),
            surestep.request_review_async({"n": 2}, kind="right"),
        )
        return [first.outcome, second.outcome]

    handle = app.start(pair, run_id="pair")
    drive(app, until=lambda: len(app.reviews.list()) == 2)
    left, right = sorted(app.reviews.list(), key=lambda t: t.position or 0)
    assert (left.kind, right.kind) == ("left", "right")
    app.reviews.decide(right.id, "reject", by="bob")
    drive(
        app,
        until=lambda: (
            handle.state == State.NEEDS_REVIEW and app.reviews.get(left.id).state == "open"
        ),
    )
    app.reviews.decide(left.id, "approve", by="alice")
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == ["approve", "reject"]


def test_sensitive_fields_are_masked_in_listings_and_export(app: App) -> None:
    @app.workflow(name="payout")
    def payout(iban: str) -> str:
        decision = surestep.request_review(
            {"name": "Ann", "bank": {"iban": iban}}, kind="payout", redact=["iban"]
        )
        return decision.outcome

    handle = app.start(payout, "DE89370400440532013000", run_id="pay")
    parked(app, "pay")
    [task] = app.reviews.list()
    shown = surestep.review.service.public(task)  # type: ignore[attr-defined]
    assert shown["payload"] == {"name": "Ann", "bank": {"iban": "***"}}
    app.reviews.decide(task.id, "approve", by="alice")
    drive(app, until=lambda: handle.state == State.SUCCESS)
    [record] = list(app.reviews.export())
    assert record["input"]["bank"]["iban"] == "***" and record["data"]["bank"]["iban"] == "***"
    assert "DE89" not in " ".join(e.reason or "" for e in app.get_run("pay").events)


def test_stats_count_overrides_escalations_and_sla(app: App, clock: FakeClock) -> None:
    invoice_app(app, [], sla=timedelta(hours=1), escalate_to=["group:managers"])
    for doc in ("s1", "s2", "s3"):
        app.start("invoice", doc, run_id=doc)
    drive(app, until=lambda: len(app.reviews.list()) == 3)
    tasks = {t.run_id: t for t in app.reviews.list()}
    clock.advance(600)
    app.reviews.decide(tasks["s1"].id, "approve", by="alice")
    app.reviews.decide(tasks["s2"].id, "reject", by="alice")
    clock.advance(2 * HOUR)
    app.reviews.sweep()  # s3 escalates to managers
    stats = app.reviews.stats(kind="approve_invoice")
    assert (stats.open, stats.decided, stats.overdue) == (1, 2, 0)
    assert stats.override_rate == 0.5 and stats.sla_adherence == 1.0
    assert stats.escalation_rate == pytest.approx(1 / 3)
    assert stats.p50_seconds == pytest.approx(600)
    assert stats.reviewers["alice"].decided == 2 and stats.reviewers["alice"].overrides == 1


def test_bad_review_requests_fail_where_they_are_made(app: App) -> None:
    @app.workflow(name="bad")
    def bad(option: str) -> str:
        settings: dict[str, object] = {
            "priority": {"priority": 101},
            "expiry": {"on_expiry": "shrug", "sla": timedelta(hours=1)},
            "no-sla": {"escalate_to": ["bob"]},
            "confidence": {"confidence": 1.5},
            "groups": {"groups": "finance"},
        }[option]
        return surestep.request_review({}, kind="k", **settings).outcome  # type: ignore[arg-type]

    for option in ("priority", "expiry", "no-sla", "confidence", "groups"):
        handle = app.start(bad, option, run_id=f"bad-{option}")
        drive(app, until=lambda h=handle: h.state in (State.FAILED, State.SUCCESS))  # type: ignore[misc]
        assert handle.state == State.FAILED
        assert "ConfigurationError" in (app.get_run(handle.id).error or {}).get("type", "")
    with pytest.raises(surestep.SurestepError, match="only inside a workflow"):
        surestep.request_review({}, kind="k")
    with pytest.raises(ConfigurationError):
        app.reviews.get("1; drop table")  # type: ignore[arg-type]


def test_the_decision_log_verifies_and_a_tampered_record_is_reported(app: App, db_url: str) -> None:
    invoice_app(app, [])
    app.start("invoice", "t", run_id="inv-t")
    parked(app, "inv-t")
    [task] = app.reviews.list()
    app.reviews.decide(task.id, "approve", by="alice")
    assert app.reviews.verify() == (1, [])
    rewrite_decisions(app, db_url, "alice", "mallory")
    checked, problems = app.reviews.verify("inv-t")
    assert checked == 1 and [p.message for p in problems] == [
        "was changed after it was written (hash mismatch)",
        "task 1 now differs from its record in ['reviewer']",
    ]


def test_a_task_edited_behind_the_log_is_reported(app: App) -> None:
    invoice_app(app, [])
    app.start("invoice", "t2", run_id="inv-t2")
    parked(app, "inv-t2")
    [task] = app.reviews.list()
    app.reviews.decide(task.id, "approve", by="alice")
    with app.store.transaction() as cur:
        cur.execute(
            "UPDATE surestep_review_tasks SET reviewer = 'mallory', data = '{}' WHERE id = ?",
            (task.id,),
        )
    _, problems = app.reviews.verify()
    assert [p.message for p in problems] == [
        f"task {task.id} now differs from its record in ['data', 'reviewer']"
    ]


def test_the_decision_log_refuses_updates(app: App) -> None:
    invoice_app(app, [])
    app.start("invoice", "u", run_id="inv-u")
    parked(app, "inv-u")
    [task] = app.reviews.list()
    app.reviews.decide(task.id, "approve", by="alice")
    with pytest.raises(Exception, match="append-only"), app.store.transaction() as cur:
        cur.execute("UPDATE surestep_review_decisions SET hash = 'x'")


def test_a_decision_returned_to_the_workflow_is_a_decision(app: App) -> None:
    seen: list[Decision[object]] = []

    @app.workflow(name="plain")
    def plain() -> str:
        decision = surestep.request_review({"q": "ok?"}, kind="plain")
        seen.append(decision)
        return decision.reviewer

    handle = app.start(plain, run_id="plain")
    parked(app, "plain")
    [task] = app.reviews.list()
    app.reviews.decide(task.id, "approve", by="alice", comment="fine")
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == "alice"
    assert seen[-1].data == {"q": "ok?"} and seen[-1].comment == "fine"


def test_a_reviewer_cannot_overtake_a_reassignment(app: App) -> None:
    invoice_app(app, [])
    handle = app.start("invoice", "r", run_id="inv-r")
    parked(app, "inv-r")
    [task] = app.reviews.list(group="finance")
    # alice (in finance) looked at the task; an operator moves it before she decides
    app.reviews.reassign(task.id, to="group:audit", by="ops", reason="needs audit")
    with pytest.raises(surestep.ReviewNotFoundError):
        app.reviews.decide(task.id, "approve", by="alice", as_member_of=["finance"])
    with pytest.raises(surestep.ReviewNotFoundError):
        app.reviews.claim(task.id, by="alice", as_member_of=["finance"])
    assert app.reviews.get(task.id).state == "open"
    app.reviews.decide(task.id, "approve", by="carol", as_member_of=["audit"])
    drive(app, until=lambda: handle.state == State.SUCCESS)


def test_a_worker_with_stale_history_does_not_reopen_a_decided_review(app: App) -> None:
    @app.workflow(name="pair2")
    async def pair2() -> list[str]:
        left, right = await asyncio.gather(
            surestep.request_review_async({"n": 1}, kind="left"),
            surestep.request_review_async({"n": 2}, kind="right"),
        )
        return [left.outcome, right.outcome]

    handle = app.start(pair2, run_id="stale")
    drive(app, until=lambda: len(app.reviews.list()) == 2)
    left, right = sorted(app.reviews.list(), key=lambda t: t.position or 0)
    app.reviews.decide(left.id, "approve", by="alice")
    # A worker claims the run and reads its history: right still needs review...
    [claimed] = app.store.claim("stale-worker", [("pair2", "1")], 1, app.clock.now(), 30.0)
    assert claimed.recorded[1].state == State.NEEDS_REVIEW
    # ...then bob decides it, before the worker reaches that position.
    app.reviews.decide(right.id, "reject", by="bob")
    spec = TaskSpec(kind="right", workflow="pair2", payload="{}")
    opened = ReviewStore(app.store).open_at(
        "stale", claimed.token, "stale-worker", 1, "review:right", spec, app.clock.now()
    )
    assert opened == (None, False)  # no third task: the worker runs again on fresh history
    assert len(app.reviews.list(state=None)) == 2
    app.store.release([("stale", claimed.token)], "stale-worker", "test", app.clock.now())
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == ["approve", "reject"]


def test_a_deadline_still_applies_while_a_run_waits_for_a_person(
    app: App, clock: FakeClock
) -> None:
    invoice_app(app, [])
    handle = app.start(
        "invoice", "late", run_id="inv-late", deadline=timedelta(hours=1), on_deadline="fail"
    )
    parked(app, "inv-late")
    [task] = app.reviews.list()
    clock.advance(2 * HOUR)
    drive(app, until=lambda: handle.state == State.FAILED)
    assert app.reviews.get(task.id).state == "cancelled"
    with pytest.raises(ReviewConflictError):
        app.reviews.decide(task.id, "approve", by="alice")


def test_a_run_that_ends_without_its_review_closes_the_task(app: App) -> None:
    invoice_app(app, [])
    app.start("invoice", "gone", run_id="inv-gone")
    parked(app, "inv-gone")
    [task] = app.reviews.list()
    # A redeploy: the same workflow no longer asks for a review.
    other = App(app.database_url, clock=app.clock)

    @other.step(name="extract")
    def extract(doc: str) -> dict[str, object]:
        return {"vendor": "ACME", "total": "1"}

    @other.workflow(name="invoice")
    def invoice(doc: str) -> dict[str, object]:
        return extract(doc)

    with other.store.transaction() as cur:  # an operator pushes the parked run on
        cur.execute(
            "UPDATE surestep_runs SET state = 'pending', available_at = 0 WHERE id = 'inv-gone'"
        )
    drive(other, until=lambda: other.handle("inv-gone").state == State.SUCCESS)
    assert app.reviews.get(task.id).state == "cancelled"
    other.close()


def test_data_of_an_approval_must_fit_the_form_and_a_rejection_takes_none(app: App) -> None:
    invoice_app(app, [])
    app.start("invoice", "v", run_id="inv-v")
    parked(app, "inv-v")
    [task] = app.reviews.list()
    with pytest.raises(ReviewValidationError) as caught:
        app.reviews.decide(task.id, "approve", by="alice", data={"total": "lots"})
    assert {f["path"] for f in caught.value.fields} == {"", "total"}
    with pytest.raises(ReviewValidationError):
        app.reviews.decide(task.id, "reject", by="alice", data={"why": "no"})
    assert app.reviews.get(task.id).state == "open"


def test_a_group_given_as_assignee_is_refused(app: App) -> None:
    @app.workflow(name="misassigned")
    def misassigned() -> str:
        return surestep.request_review({}, kind="k", assignee="group:finance").outcome

    handle = app.start(misassigned, run_id="mis")
    drive(app, until=lambda: handle.state == State.FAILED)
    assert "give groups=['finance'] instead" in app.get_run("mis").error["message"]
