"""Values are checked against their annotations before they are stored: a step's output
that does not match is a failed attempt (retried, then on_exhausted), a workflow's input
that does not match is refused at start(), and nothing is stored lossily."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import surestep
from surestep import (
    App,
    InputValidationError,
    Retry,
    SerializationError,
    State,
)
from surestep.testing import run_workflow

NO_WAIT = Retry(max_attempts=3, initial_delay=0, jitter=False)


class Fields(BaseModel):
    invoice_no: str
    total: float


def attempt_errors(app: App, run_id: str) -> list[str | None]:
    return [
        None if a.error is None else a.error["type"]
        for s in app.get_run(run_id).steps
        for a in s.attempt_records
    ]


def test_an_output_that_misses_a_field_is_retried_then_dead_lettered(app: App) -> None:
    @app.step(retry=NO_WAIT)
    def extract(doc: str) -> Fields:
        return {"invoice_no": "INV-1"}  # type: ignore[return-value]  # no total

    @app.workflow()
    def invoice(doc: str) -> str:
        return extract(doc).invoice_no

    handle = run_workflow(app, invoice, "d")
    run = app.get_run(handle.id)
    assert run.state == State.DEAD_LETTER  # not success, and not a failed run
    assert attempt_errors(app, handle.id) == ["surestep.errors.OutputValidationError"] * 3
    assert run.error is not None
    message = run.error["message"]
    assert run.error["type"] == "surestep.errors.OutputValidationError"
    assert "step 'extract'" in message and "Fields" in message
    assert "total: Field required (received nothing)" in message
    assert run.steps[0].output is None  # nothing was recorded as its output


def test_a_wrong_output_that_is_right_on_the_next_attempt_succeeds(app: App) -> None:
    replies: list[Any] = [
        {"invoice_no": 7, "total": "n/a"},
        {"invoice_no": "INV-1", "total": "9.5"},
    ]

    @app.step(retry=NO_WAIT)
    def extract() -> Fields:
        return replies.pop(0)  # type: ignore[no-any-return]

    @app.workflow()
    def invoice() -> float:
        fields = extract()
        assert isinstance(fields, Fields)  # a dict of the right shape is converted
        return fields.total

    handle = run_workflow(app, invoice)
    assert handle.result() == 9.5
    step = app.get_run(handle.id).steps[0]
    assert step.state == State.SUCCESS and step.output == {"invoice_no": "INV-1", "total": 9.5}
    first = step.attempt_records[0]
    assert first.error is not None
    assert first.error["type"] == "surestep.errors.OutputValidationError"
    assert "invoice_no: Input should be a valid string (received int)" in first.error["message"]
    assert "total: Input should be a valid number" in first.error["message"]


def test_an_invalid_output_with_on_exhausted_fail_reaches_the_workflow(app: App) -> None:
    @app.step(retry=Retry(max_attempts=1), on_exhausted="fail")
    def count() -> int:
        return "many"  # type: ignore[return-value]

    @app.workflow()
    def wf() -> str:
        try:
            count()
        except surestep.StepError as exc:
            return exc.error_type
        return "no error"

    assert run_workflow(app, wf).result() == "surestep.errors.OutputValidationError"


def test_the_readme_stub_returning_none_is_a_step_failure_not_a_lost_run(app: App) -> None:
    @app.step(retry=NO_WAIT)
    def fetch(doc_id: str) -> str: ...

    @app.workflow(name="summarize")
    def summarize(doc_id: str) -> dict[str, str]:
        text = fetch(doc_id)
        return {"summary": text[:100]}

    handle = run_workflow(app, summarize, "doc-1")
    run = app.get_run(handle.id)
    assert run.state == State.DEAD_LETTER  # `surestep retry` works once fetch is written
    assert run.error is not None and run.error["type"].endswith("OutputValidationError")
    assert "received NoneType" in run.error["message"]


def test_a_set_returned_where_nothing_says_how_to_store_it_is_refused(app: App) -> None:
    @app.step(retry=NO_WAIT)
    def tags():  # type: ignore[no-untyped-def]
        return {"b", "a"}

    @app.step(retry=NO_WAIT)
    def labels() -> dict[str, Any]:
        return {"doc": {"tags": frozenset({"x"})}}

    @app.step()
    def typed() -> set[int]:
        return {3, 1}

    @app.workflow()
    def one() -> None:
        tags()

    @app.workflow()
    def two() -> None:
        labels()

    @app.workflow()
    def three() -> bool:
        value = typed()
        return isinstance(value, set) and value == {1, 3}

    for wf, where in ((one, "step 'tags'"), (two, "step 'labels'")):
        handle = run_workflow(app, wf)
        run = app.get_run(handle.id)
        # A code bug, not a flaky dependency: one attempt, then dead letter.
        assert run.state == State.DEAD_LETTER and attempt_errors(app, handle.id) == [
            "surestep.errors.SerializationError"
        ]
        assert run.error is not None and where in run.error["message"]
        assert "set" in run.error["message"] and "annotate it" in run.error["message"]
    assert "at ['doc']['tags'] is a frozenset" in str(app.get_run(handle.id).error)
    assert run_workflow(app, three).result() is True  # annotated, it round-trips


def test_workflow_inputs_are_validated_at_start_and_nothing_is_stored(app: App) -> None:
    @app.workflow()
    def wf(count: int, fields: Fields | None = None) -> int:
        return count

    with pytest.raises(InputValidationError, match=r"argument 'count' of workflow 'wf'.*int"):
        app.start(wf, {1, 2})
    with pytest.raises(InputValidationError, match=r"argument 'fields'.*total: Field required"):
        app.start(wf, 1, fields={"invoice_no": "x"})
    with pytest.raises(InputValidationError, match=r"missing a required argument: 'count'"):
        app.start(wf)
    assert app.list_runs() == []
    assert run_workflow(app, wf, "5").result() == 5  # converted, as stored


def test_a_lossy_workflow_input_is_refused_at_start(app: App) -> None:
    @app.workflow()
    def wf(tags, by_id: dict):  # type: ignore[no-untyped-def,type-arg]
        return None

    with pytest.raises(SerializationError, match=r"argument 'tags' of workflow 'wf' is a set"):
        app.start(wf, {"a"}, {})
    with pytest.raises(SerializationError, match=r"'by_id'.* at \[1\] is a dict key of type int"):
        app.start(wf, [], {1: "x"})
    assert app.list_runs() == []


def test_a_compensable_step_is_not_run_with_arguments_that_cannot_be_kept(app: App) -> None:
    calls: list[Any] = []

    def refund(amount: int) -> None: ...

    @app.step(compensate=refund)
    def charge(amount: int) -> str:
        calls.append(amount)
        return "charged"

    @app.workflow()
    def order() -> None:
        charge("a lot")  # type: ignore[arg-type]

    handle = run_workflow(app, order)
    run = app.get_run(handle.id)
    assert calls == []  # the side effect never happened
    assert run.state == State.DEAD_LETTER and run.error is not None
    assert "argument 'amount' of step 'charge'" in run.error["message"]


def test_a_workflow_output_that_does_not_match_fails_the_run(app: App) -> None:
    @app.workflow()
    def wf() -> int:
        return "not a number"  # type: ignore[return-value]

    handle = run_workflow(app, wf)
    run = app.get_run(handle.id)
    assert run.state == State.FAILED and run.error is not None
    assert (
        "output of workflow 'wf' does not match the return annotation int" in (run.error["message"])
    )
