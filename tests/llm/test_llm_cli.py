"""``surestep show``, ``calls``, ``costs`` and ``budget`` on runs with LLM steps."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel
from typer.testing import CliRunner, Result

from surestep import App, State
from surestep.cli import app as cli
from surestep.testing import FakeLLM, drive, run_workflow


class Label(BaseModel):
    label: str


def invoke(*args: str) -> Result:
    env: dict[str, str | None] = {"COLUMNS": "200", "SURESTEP_DATABASE_URL": None}
    return CliRunner().invoke(cli, list(args), env=env)


def make_runs(app: App) -> tuple[str, str]:
    fake = FakeLLM()
    app.llm_provider("fake", provider=fake)
    app.llm_price("fake:m", input_per_mtok=100_000, output_per_mtok=200_000)
    label = app.llm_step(name="label", schema=Label, models=["fake:m"], prompt=lambda t: t)

    @app.workflow(name="triage")
    def triage(text: str) -> str:
        return str(label(text).label)

    fake.reply("nope").reply({"label": "bug"})
    done = run_workflow(app, "triage", "it crashes", run_id="ok")
    stopped = app.start("triage", "again", run_id="broke", budget_usd=0.0)
    drive(app, until=lambda: stopped.state == State.DEAD_LETTER)
    return done.id, stopped.id


def test_show_and_calls_list_every_model_call(db_url: str) -> None:
    app = App(db_url)
    try:
        done, _ = make_runs(app)
    finally:
        app.close()
    shown = invoke("show", done, "--db", db_url)
    assert shown.exit_code == 0, shown.output
    assert "model calls" in shown.stdout and "fake:m" in shown.stdout
    assert "invalid" in shown.stdout and "ok" in shown.stdout
    assert "spent $4.00; no budget" in shown.stdout  # 2 calls of 10 + 5 tokens at $2 each
    listed = json.loads(invoke("calls", done, "--json", "--db", db_url).stdout)
    assert [c["outcome"] for c in listed["calls"]] == ["invalid", "ok"]
    assert listed["spent_usd"] == 4.0
    as_json = json.loads(invoke("show", done, "--json", "--db", db_url).stdout)
    assert len(as_json["model_calls"]) == 2


def test_costs_by_workflow_with_cost_per_success(db_url: str) -> None:
    app = App(db_url)
    try:
        make_runs(app)
    finally:
        app.close()
    result = invoke("costs", "--json", "--db", db_url, "--since", "1h")
    assert result.exit_code == 0, result.output
    [line] = json.loads(result.stdout)
    assert line["workflow"] == "triage" and line["calls"] == 2
    assert line["cost_usd"] == 4.0 and line["wasted_usd"] == 2.0
    assert line["runs"] == 1 and line["succeeded"] == 1 and line["per_success_usd"] == 4.0
    table = invoke("costs", "--db", db_url)
    assert "triage" in table.stdout and "$4.00" in table.stdout
    [by_step] = json.loads(invoke("costs", "--steps", "--json", "--db", db_url).stdout)
    assert by_step["step"] == "label" and by_step["calls"] == 2
    assert "label" in invoke("costs", "--steps", "--db", db_url).stdout


def test_budget_raises_and_removes(db_url: str) -> None:
    app = App(db_url)
    try:
        _, stopped = make_runs(app)
    finally:
        app.close()
    raised = invoke("budget", stopped, "--usd", "2.5", "--db", db_url)
    assert raised.exit_code == 0, raised.output
    assert "of a $2.50 budget" in raised.stdout
    assert "no budget" in invoke("budget", stopped, "--none", "--db", db_url).stdout
    both = invoke("budget", stopped, "--db", db_url)
    assert both.exit_code == 2 and "--usd N" in both.stderr
    missing = invoke("budget", "nope", "--usd", "1", "--db", db_url)
    assert missing.exit_code == 1 and "no run with id 'nope'" in missing.stderr
    negative = invoke("budget", stopped, "--usd", "-1", "--db", db_url)
    assert negative.exit_code != 0 and "budget_usd must be" in negative.stderr


def test_costs_since_an_age_past_any_date_is_a_usage_error(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'surestep.db'}"
    App(db).close()
    for age, why in (("99999999999d", "longer than any date"), ("999999999d", "past the year 1")):
        result = invoke("costs", "--since", age, "--db", db)
        assert result.exit_code == 2, result.output
        assert why in result.output and "give a shorter age" in result.output
