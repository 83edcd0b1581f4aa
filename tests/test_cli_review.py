"""``surestep review`` and ``surestep audit`` against real databases: tasks are opened by
workflows driven with the library, then listed, shown and decided from the command."""

from __future__ import annotations

import csv
import getpass
import io
import json
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import BaseModel
from test_review import rewrite_decisions
from typer.testing import CliRunner, Result

import surestep
from surestep import App, Retry, State
from surestep.cli import app as cli
from surestep.testing import drive

IBAN = "DE89370400440532013000"


class Invoice(BaseModel):
    vendor: str
    total: Decimal


@dataclass
class Desk:
    """Three invoices waiting in finance's inbox (inv-1..3, tasks ``ids``) and a step
    that exhausted its retries waiting for operators (calc-1, task ``step``)."""

    app: App
    url: str
    ids: dict[str, int]
    step: int


@pytest.fixture
def desk(app: App, db_url: str) -> Desk:
    @app.workflow(name="invoice")
    def invoice(doc: str) -> dict[str, object]:
        fields = {"vendor": f"ACME {doc}", "total": "120.50", "iban": IBAN}
        decision = surestep.request_review(
            fields,
            kind="approve_invoice",
            groups=["finance"],
            sla=timedelta(hours=1),
            escalate_to=["group:managers"],
            form=Invoice,
            proposal={"vendor": f"ACME {doc}", "total": "120.50"},
            confidence=0.62,
            instructions="Check the total against the PDF.",
            redact=["iban"],
        )
        data = decision.data
        vendor = data.vendor if isinstance(data, Invoice) else None
        return {"outcome": decision.outcome, "by": decision.reviewer, "vendor": vendor}

    @app.step(name="divide", retry=Retry(max_attempts=1), on_exhausted="review")
    def divide(a: int, b: int) -> float:
        return a / b

    @app.workflow(name="calc")
    def calc(a: int, b: int) -> float:
        return divide(a, b)

    for doc in ("1", "2", "3"):
        app.start(invoice, doc, run_id=f"inv-{doc}")
    app.start(calc, 1, 0, run_id="calc-1")
    drive(app, until=lambda: len(app.reviews.list()) == 4)
    ids = {t.run_id: t.id for t in app.reviews.list(kind="approve_invoice")}
    [step] = app.reviews.list(kind="step_exhausted")
    return Desk(app, db_url, ids, step.id)


def invoke(desk: Desk, *args: str) -> Result:
    environment: dict[str, str | None] = {"COLUMNS": "250", "SURESTEP_DATABASE_URL": desk.url}
    return CliRunner().invoke(cli, list(args), env=environment)


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def assert_clean_error(result: Result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def finish(desk: Desk, run_id: str) -> object:
    handle = desk.app.handle(run_id)
    drive(desk.app, until=lambda: handle.state in (State.SUCCESS, State.FAILED, State.CANCELLED))
    return handle.result()


# -- list and show -------------------------------------------------------------------


def test_list_shows_open_tasks_masked_as_a_table_and_as_json(desk: Desk) -> None:
    table = ok(invoke(desk, "review", "list"))
    for expected in ("approve_invoice", "step_exhausted", "inv-1", "calc-1", "group:finance"):
        assert expected in table
    assert '"iban": "***"' in table and IBAN not in table
    assert "overdue" in table  # due an hour after the fake clock's start, long gone

    listed = json.loads(ok(invoke(desk, "review", "list", "--json")))
    assert {t["id"] for t in listed} == {*desk.ids.values(), desk.step}
    assert listed[0]["id"] == desk.step  # priority 60 before the invoices' 50
    invoice = next(t for t in listed if t["run_id"] == "inv-1")
    assert invoice["payload"]["iban"] == "***" and invoice["sensitive"] == ["iban"]
    assert IBAN not in json.dumps(listed)


def test_list_filters(desk: Desk) -> None:
    def ids(*args: str) -> list[int]:
        return [t["id"] for t in json.loads(ok(invoke(desk, "review", "list", "--json", *args)))]

    invoices = sorted(desk.ids.values())
    assert sorted(ids("--group", "finance")) == invoices
    assert sorted(ids("--group", "legal", "--group", "operators")) == [desk.step]
    assert ids("--assignee", "nobody") == []
    assert ids("--kind", "step_exhausted") == [desk.step]
    assert ids("--run", "inv-2") == [desk.ids["inv-2"]]
    assert sorted(ids("--overdue")) == invoices  # the step's task has no SLA
    assert len(ids("--limit", "2")) == 2
    assert ids("--state", "decided") == []
    desk.app.reviews.decide(desk.ids["inv-1"], "approve", by="alice")
    assert ids("--state", "decided") == [desk.ids["inv-1"]]
    assert len(ids("--state", "any")) == 4


def test_list_usage_errors(desk: Desk) -> None:
    assert_clean_error(invoke(desk, "review", "list", "--state", "bogus"), 2, "bogus")
    assert_clean_error(
        invoke(desk, "review", "list", "--run", "inv-1", "--group", "finance"), 2, "--run"
    )
    assert_clean_error(
        invoke(desk, "review", "list", "--group", "finance", "--state", "decided"),
        1,
        "error: an inbox",
    )
    assert invoke(desk, "review", "list", "--group", "legal").stdout == "no review tasks\n"


def test_show_prints_what_the_reviewer_needs_and_the_history(desk: Desk) -> None:
    task_id = desk.ids["inv-1"]
    desk.app.reviews.claim(task_id, by="alice")
    shown = ok(invoke(desk, "review", "show", str(task_id)))
    for expected in (
        '"vendor": "ACME 1"',
        '"iban": "***"',
        "0.62",
        "total: number | string",
        "vendor: string",
        "Check the total against the PDF.",
        "group:finance",
        "group:managers",
        "approve | reject | edit",
        f"review task {task_id} opened for group:finance",
        f"review task {task_id} claimed",
    ):
        assert expected in shown, expected
    assert IBAN not in shown
    assert IBAN in ok(invoke(desk, "review", "show", str(task_id), "--reveal"))

    data = json.loads(ok(invoke(desk, "review", "show", str(task_id), "--json")))
    assert data["payload"]["iban"] == "***" and data["candidates"] == ["group:finance"]
    assert data["outcomes"] == ["approve", "reject", "edit"] and data["claimed_by"] == "alice"
    assert [h["actor"] for h in data["history"]][-1] == "alice"


def test_show_of_a_step_that_exhausted_its_retries_has_its_last_error(desk: Desk) -> None:
    shown = ok(invoke(desk, "review", "show", str(desk.step)))
    for expected in ("divide", '{"a": 1, "b": 0}', "ZeroDivisionError", "retry | output"):
        assert expected in shown, expected


def test_show_of_an_unknown_task(desk: Desk) -> None:
    assert_clean_error(invoke(desk, "review", "show", "999"), 1, "error: no review task 999")
    assert_clean_error(invoke(desk, "review", "show", "abc"), 2, "TASK_ID")


# -- acting --------------------------------------------------------------------------


def test_claim_and_release_with_conflicts(desk: Desk) -> None:
    task = str(desk.ids["inv-1"])
    assert ok(invoke(desk, "review", "claim", task, "--as", "alice")) == (
        f"review task {task} claimed by alice\n"
    )
    assert_clean_error(
        invoke(desk, "review", "claim", task, "--as", "bob"),
        1,
        "claimed by alice",
        "(conflict: claimed)",
    )
    assert_clean_error(invoke(desk, "review", "release", task, "--as", "bob"), 1, "not bob")
    ok(invoke(desk, "review", "release", task, "--as", "alice"))
    assert desk.app.reviews.get(int(task)).claimed_by is None
    ok(invoke(desk, "review", "claim", task, "--as", "alice"))
    ok(invoke(desk, "review", "release", task, "--as", "ops", "--force"))
    assert desk.app.reviews.get(int(task)).claimed_by is None


def test_approve_several_reports_each_and_exits_1_if_any_failed(desk: Desk) -> None:
    first, second = desk.ids["inv-1"], desk.ids["inv-2"]
    desk.app.reviews.decide(second, "reject", by="carol")
    result = invoke(desk, "review", "approve", str(first), str(second), "999", "--as", "bob")
    assert result.exit_code == 1
    assert result.stdout == f"review task {first} decided: approve (by bob)\n"
    assert f"review task {second} is decided (by carol)" in result.stderr
    assert "(conflict: decided)" in result.stderr and "no review task 999" in result.stderr
    assert "2 of 3 task(s) were not decided" in result.stderr
    assert finish(desk, "inv-1") == {"outcome": "approve", "by": "bob", "vendor": "ACME 1"}


def test_reject_with_a_comment_and_approve_as_the_os_user(desk: Desk) -> None:
    task = desk.ids["inv-1"]
    ok(invoke(desk, "review", "reject", str(task), "--as", "bob", "--comment", "duplicate"))
    assert (desk.app.reviews.get(task).outcome, desk.app.reviews.get(task).comment) == (
        "reject",
        "duplicate",
    )
    assert finish(desk, "inv-1") == {"outcome": "reject", "by": "bob", "vendor": None}
    out = ok(invoke(desk, "review", "approve", str(desk.ids["inv-2"])))
    assert out.endswith(f"(by {getpass.getuser()})\n")


def test_edit_must_fit_the_form(desk: Desk) -> None:
    task = str(desk.ids["inv-3"])
    bad = invoke(
        desk, "review", "edit", task, "--as", "alice", "--data", '{"vendor": "X", "total": "y"}'
    )
    assert_clean_error(bad, 1, "does not fit the form", "total:", "Nothing was stored")
    assert desk.app.reviews.get(int(task)).state == "open"
    assert_clean_error(
        invoke(desk, "review", "edit", task, "--as", "alice", "--data", "{nope"), 2, "JSON"
    )
    good = '{"vendor": "ACME Ltd", "total": 99}'
    assert ok(invoke(desk, "review", "edit", task, "--as", "alice", "--data", good)) == (
        f"review task {task} decided: edit (by alice)\n"
    )
    assert finish(desk, "inv-3") == {"outcome": "edit", "by": "alice", "vendor": "ACME Ltd"}


def test_decide_a_step_that_exhausted_its_retries(desk: Desk) -> None:
    task = str(desk.step)
    assert_clean_error(
        invoke(desk, "review", "decide", task, "approve", "--as", "ops"),
        1,
        "takes retry, output, dead_letter, cancel",
    )
    assert_clean_error(
        invoke(desk, "review", "decide", task, "output", "--as", "ops", "--data", '"x"'),
        1,
        "error:",
    )
    ok(
        invoke(
            desk,
            "review",
            "decide",
            task,
            "retry",
            "--as",
            "ops",
            "--data",
            '{"inputs": {"a": 1, "b": 4}}',
        )
    )
    assert finish(desk, "calc-1") == 0.25


def test_reassign_moves_a_task_to_other_inboxes(desk: Desk) -> None:
    task = str(desk.ids["inv-1"])
    out = ok(
        invoke(
            desk, "review", "reassign", task, "--to", "carol", "--to", "group:audit",
            "--as", "ops", "--reason", "alice is away",
        )
    )  # fmt: skip
    assert out.startswith(f"review task {task} reassigned to ") and "user:carol" in out
    assert [t.id for t in desk.app.reviews.inbox("carol")] == [int(task)]
    reasons = " ".join(e.reason or "" for e in desk.app.get_run("inv-1").events)
    assert "alice is away" in reasons
    assert_clean_error(
        invoke(desk, "review", "reassign", task, "--to", "a", "--to", "b", "--as", "ops"),
        1,
        "one assignee",
    )


# -- export, stats, audit -------------------------------------------------------------


def decide_some(desk: Desk) -> None:
    desk.app.reviews.decide(desk.ids["inv-1"], "approve", by="alice")
    desk.app.reviews.decide(
        desk.ids["inv-2"], "edit", by="bob", data={"vendor": "B", "total": 1, "iban": IBAN}
    )


def test_export_jsonl_and_csv_are_masked(desk: Desk, tmp_path: Path) -> None:
    decide_some(desk)
    lines = ok(invoke(desk, "review", "export")).splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["outcome"] for r in records] == ["approve", "edit"]
    first = records[0]
    assert first["input"]["iban"] == "***" and first["confidence"] == 0.62
    assert first["proposal"] == {"vendor": "ACME 1", "total": "120.50"}
    assert records[1]["data"]["iban"] == "***" and records[1]["reviewer"] == "bob"
    assert IBAN not in "".join(lines)

    target = tmp_path / "decisions.csv"
    result = invoke(
        desk, "review", "export", "--format", "csv", "--output", str(target),
        "--since", "2020-01-01", "--kind", "approve_invoice",
    )  # fmt: skip
    assert result.exit_code == 0 and "exported 2 decision(s)" in result.stderr
    text = target.read_text()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["outcome"] for r in rows] == ["approve", "edit"]
    assert json.loads(rows[0]["input"])["iban"] == "***" and IBAN not in text
    assert rows[1]["reviewer"] == "bob" and float(rows[0]["confidence"]) == 0.62


def test_export_filters_and_usage_errors(desk: Desk) -> None:
    decide_some(desk)
    assert ok(invoke(desk, "review", "export", "--kind", "other")) == ""
    assert ok(invoke(desk, "review", "export", "--since", "2999-01-01")) == ""
    assert ok(invoke(desk, "review", "export", "--since", "7d")) == ""  # decided in 2023
    empty_csv = ok(invoke(desk, "review", "export", "--format", "csv", "--kind", "other"))
    assert empty_csv.startswith("task_id,run_id,kind")
    assert_clean_error(invoke(desk, "review", "export", "--since", "soon"), 2, "--since")
    assert_clean_error(invoke(desk, "review", "export", "--format", "xml"), 2, "xml")


def test_stats_as_a_table_and_as_json(desk: Desk) -> None:
    decide_some(desk)
    figures = json.loads(ok(invoke(desk, "review", "stats", "--kind", "approve_invoice", "--json")))
    assert (figures["open"], figures["decided"], figures["overdue"]) == (1, 2, 1)
    assert figures["override_rate"] == 0.5
    assert figures["reviewers"]["bob"]["overrides"] == 1
    table = ok(invoke(desk, "review", "stats"))
    for expected in ("override rate", "50%", "per reviewer", "alice", "bob"):
        assert expected in table


def test_audit_verify_clean_then_tampered(desk: Desk) -> None:
    decide_some(desk)
    clean = invoke(desk, "audit", "verify")
    assert ok(clean) == "2 decision record(s) checked: the log is intact\n"
    assert ok(invoke(desk, "audit", "verify", "inv-1")).startswith("1 decision record(s)")

    rewrite_decisions(desk.app, desk.url, "alice", "mallory", run_id="inv-1")
    tampered = invoke(desk, "audit", "verify")
    assert tampered.exit_code == 1
    assert "run inv-1 record 1: was changed after it was written" in tampered.stdout
    assert "now differs from its record in ['reviewer']" in tampered.stdout
    assert "inv-2" not in tampered.stdout
    assert "error: 2 problem(s) in 2 decision record(s) checked" in tampered.stderr
    assert ok(invoke(desk, "audit", "verify", "inv-2")).startswith("1 decision record(s)")
