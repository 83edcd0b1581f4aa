"""A damaged row of the model-call ledger (a hand edit, a bad restore) or a provider's
text PostgreSQL cannot store: listings show what can be read and name what cannot, a
budget that cannot be read stops calls instead of allowing any, and a call is recorded
whatever text its provider sent."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner, Result

from surestep import App, CorruptRecordError, State
from surestep.cli import app as cli
from surestep.llm import ModelServerError
from surestep.llm.types import ChatRequest, ChatResponse, Usage
from surestep.testing import FakeLLM, drive, run_workflow


def invoke(*args: str) -> Result:
    env: dict[str, str | None] = {"COLUMNS": "250", "SURESTEP_DATABASE_URL": None}
    return CliRunner().invoke(cli, list(args), env=env)


def one_run(app: App, fake: FakeLLM | None = None) -> str:
    fake = fake or FakeLLM(respond=lambda request: "a summary")
    app.llm_provider("fake", provider=fake)
    app.llm_price("fake:m", input_per_mtok=1000, output_per_mtok=2000)
    summarize = app.llm_step(name="summarize", models=["fake:m"], prompt=lambda t: t)

    @app.workflow(name="digest")
    def digest(text: str) -> str:
        return str(summarize(text))

    return run_workflow(app, "digest", "long text", run_id="r1", budget_usd=5.0).id


def damage(app: App, sql: str, *args: object) -> None:
    with app.store.transaction() as cur:
        cur.execute(sql, args)


def is_postgres(db_url: str) -> bool:
    return db_url.startswith("postgresql")


def test_a_call_row_with_unreadable_numbers_is_listed_with_its_problems(db_url: str) -> None:
    app = App(db_url)
    try:
        run_id = one_run(app)
        # SQLite keeps whatever text it is given; PostgreSQL's columns take NaN and ±inf.
        pg = is_postgres(db_url)
        damage(
            app,
            "UPDATE surestep_llm_calls SET cost_usd = ?, latency = ?, confidence = ?",
            float("nan") if pg else float("inf"),
            float("inf") if pg else "slow",
            float("-inf"),
        )
        [call] = app.llm.ledger.calls(run_id)
    finally:
        app.close()
    assert call.outcome == "ok" and call.model_ref == "fake:m"
    assert (call.cost_usd, call.latency, call.confidence) == (0.0, 0.0, None)
    assert len(call.problems) == 3
    assert "surestep_llm_calls.cost_usd of call" in call.problems[0]
    for command in (("calls", run_id), ("show", run_id)):
        shown = invoke(*command, "--db", db_url)
        assert shown.exit_code == 0, shown.output
        assert "ok (corrupt)" in shown.stdout
        assert "surestep_llm_calls.latency of call" in shown.stdout
        assert "budget: corrupt record: surestep_llm_calls.cost_usd" in shown.stdout
    listed = json.loads(invoke("calls", run_id, "--json", "--db", db_url).stdout)
    assert listed["spent_usd"] is None and "cost_usd" in listed["budget_problem"]
    assert len(listed["calls"][0]["problems"]) == 3
    costs = invoke("costs", "--db", db_url)
    assert costs.exit_code == 0, costs.output
    assert "digest" in costs.stdout


def test_an_unreadable_budget_is_shown_and_stops_further_calls(db_url: str) -> None:
    app = App(db_url)
    try:
        run_id = one_run(app)
        bad = float("nan") if is_postgres(db_url) else "plenty"
        damage(app, "UPDATE surestep_runs SET budget_usd = ?", bad)
        with pytest.raises(CorruptRecordError, match=r"surestep_runs\.budget_usd"):
            app.llm.ledger.budget(run_id)
        shown = invoke("show", run_id, "--db", db_url)
        assert shown.exit_code == 0, shown.output
        assert "budget: corrupt record: surestep_runs.budget_usd" in shown.stdout
        # A new run whose budget cannot be read makes no call: unreadable is not unlimited.
        stopped = app.start("digest", "more text", run_id="r2")
        damage(app, "UPDATE surestep_runs SET budget_usd = ? WHERE id = 'r2'", bad)
        drive(app, until=lambda: stopped.state == State.DEAD_LETTER)
        error = str(app.get_run("r2").error)
        assert "budget cannot be checked" in error and "budget_usd" in error
        assert app.llm.ledger.calls("r2") == []
        # Setting a budget repairs it.
        fixed = invoke("budget", "r2", "--usd", "1", "--db", db_url)
        assert fixed.exit_code == 0, fixed.output
        assert app.llm.ledger.budget("r2") == (1.0, 0.0)
    finally:
        app.close()


class NulProvider:
    """A provider whose texts hold NUL characters, which PostgreSQL's text refuses."""

    kind, pricing_id = "fake", None

    def __init__(self) -> None:
        self.name = "nul"
        self.calls = 0

    def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        if self.calls == 1:
            raise ModelServerError("upstream said \x00boom\x00", model=request.model, status=500)
        return ChatResponse("fine", Usage(3, 4), "st\x00op", request.model)


def test_a_provider_text_with_nul_characters_is_recorded(db_url: str) -> None:
    app = App(db_url)
    try:
        app.llm_provider("nul", provider=NulProvider())
        step = app.llm_step(name="s", models=["nul:m"], prompt=lambda t: t)

        @app.workflow(name="w")
        def w(text: str) -> str:
            return str(step(text))

        handle = run_workflow(app, "w", "x")
        assert handle.result() == "fine"
        calls = app.llm.ledger.calls(handle.id)
    finally:
        app.close()
    assert [c.outcome for c in calls] == ["server_error", "ok"]
    assert calls[0].error == "upstream said \ufffdboom\ufffd"
    assert calls[1].finish_reason == "st\ufffdop"
