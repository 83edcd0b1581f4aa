"""A record surestep cannot decode (an unknown state, a JSON column that is not JSON)
quarantines its run, on both databases: the worker dead-letters that run and carries on
with the others, and listings mark it corrupt instead of failing."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from surestep import App, CorruptRecordError, State, sleep, wait_for_event
from surestep.cli import app as cli
from surestep.states import SETTLED
from surestep.testing import drive


def register(app: App) -> None:
    @app.step()
    def double(n: int) -> int:
        return n * 2

    @app.workflow(name="flow")
    def flow(n: int) -> int:
        doubled = double(n)
        sleep(10)
        return doubled + 1

    @app.workflow(name="listener")
    def listener() -> Any:
        return wait_for_event("go")


def raw_sql(app: App, sql: str, *params: Any) -> None:
    """Write around surestep, as a hand edit or a downgraded program would."""
    with app.store.transaction() as cur:
        cur.execute(sql, params)


def allow_unknown_states(app: App, db_url: str) -> None:
    """Drop the schema's checks on states, as in a database from before they existed."""
    if db_url.startswith("sqlite"):
        for table in ("runs", "steps", "attempts", "events"):
            for verb in ("insert", "update"):
                raw_sql(app, f"DROP TRIGGER IF EXISTS surestep_{table}_state_{verb}")
    else:
        raw_sql(app, "ALTER TABLE surestep_runs DROP CONSTRAINT IF EXISTS surestep_runs_state")
        raw_sql(app, "ALTER DOMAIN surestep_state DROP CONSTRAINT surestep_state_check")


def settled(app: App, *run_ids: str) -> bool:
    return all(app.get_run(run_id).state in SETTLED for run_id in run_ids)


STEP_CORRUPTIONS = [
    ("surestep_steps", "state", "exploded", "position 0"),
    ("surestep_steps", "output", "{not json", "position 0"),
    ("surestep_steps", "error", "[1, 2", "position 0"),
    ("surestep_steps", "inputs", "{'n': 1}", "position 0"),
]


@pytest.mark.parametrize(("table", "column", "value", "where"), STEP_CORRUPTIONS)
def test_a_worker_quarantines_a_run_with_a_corrupt_step_and_carries_on(
    app: App, db_url: str, table: str, column: str, value: str, where: str
) -> None:
    register(app)
    bad = app.start("flow", 1, run_id="bad")
    drive(app, until=lambda: bad.state == State.WAITING)  # step 0 recorded, then a sleep
    allow_unknown_states(app, db_url)
    raw_sql(app, f"UPDATE {table} SET {column} = ? WHERE run_id = 'bad'", value)
    good = app.start("flow", 2, run_id="good")

    drive(app, until=lambda: settled(app, "bad", "good"))

    assert good.result() == 5
    reason = f"corrupt record: {table}.{column}, run bad, {where}"
    run = app.get_run("bad")
    assert run.state == State.DEAD_LETTER
    assert run.error is not None and run.error["type"] == "CorruptRecordError"
    assert run.error["message"].startswith(reason)
    quarantine = run.events[-1]
    assert (quarantine.from_state, quarantine.to_state) == (State.RUNNING, State.DEAD_LETTER)
    assert quarantine.reason == reason
    assert run.corrupt and run.corrupt[0].startswith(reason)  # get_run explains, not fails

    listed = {r.id: r for r in app.list_runs()}
    assert set(listed) == {"bad", "good"}
    assert [r.id for r in app.list_runs(State.DEAD_LETTER)] == ["bad"]


def test_a_run_with_corrupt_inputs_is_quarantined(app: App) -> None:
    register(app)
    app.start("flow", 1, run_id="bad")
    raw_sql(app, "UPDATE surestep_runs SET inputs = '{oops' WHERE id = 'bad'")
    good = app.start("flow", 2, run_id="good")

    drive(app, until=lambda: settled(app, "bad", "good"))

    assert good.result() == 5
    run = app.get_run("bad")
    assert run.state == State.DEAD_LETTER
    assert run.events[-1].reason == "corrupt record: surestep_runs.inputs, run bad"
    assert run.corrupt[0].startswith("corrupt record: surestep_runs.inputs, run bad: not valid")


def test_a_corrupt_event_payload_quarantines_the_run_that_receives_it(app: App) -> None:
    register(app)
    waiting = app.start("listener", run_id="bad")
    drive(app, until=lambda: waiting.state == State.WAITING)
    app.send_event("bad", "go", {"ok": True})
    raw_sql(app, "UPDATE surestep_messages SET payload = 'nope' WHERE run_id = 'bad'")
    good = app.start("listener", run_id="good")
    app.send_event("good", "go", 7)

    drive(app, until=lambda: settled(app, "bad", "good"))

    assert good.result() == 7
    run = app.get_run("bad")
    assert run.state == State.DEAD_LETTER
    assert run.events[-1].reason is not None
    assert run.events[-1].reason.startswith(
        "corrupt record: surestep_messages.payload (event 'go', message 1), run bad, position 0"
    )


def test_a_corrupt_waiting_for_wakes_the_run_rather_than_stranding_it(app: App) -> None:
    register(app)
    waiting = app.start("listener", run_id="w")
    drive(app, until=lambda: waiting.state == State.WAITING)
    raw_sql(app, "UPDATE surestep_runs SET waiting_for = 'event:go' WHERE id = 'w'")
    assert app.get_run("w").corrupt[0].startswith("corrupt record: surestep_runs.waiting_for")

    app.send_event("w", "go", "now")
    drive(app, until=lambda: settled(app, "w"))
    assert waiting.result() == "now"


def test_listings_and_show_mark_corrupt_runs_instead_of_failing(app: App, db_url: str) -> None:
    register(app)
    drive_one = app.start("flow", 1, run_id="done")
    drive(app, until=lambda: drive_one.state in SETTLED)
    app.start("flow", 2, run_id="odd")
    allow_unknown_states(app, db_url)
    raw_sql(app, "UPDATE surestep_runs SET state = 'exploded', error = 'x{' WHERE id = 'odd'")
    raw_sql(app, "UPDATE surestep_runs SET output = '{{' WHERE id = 'done'")

    listed = {r.id: r for r in app.list_runs()}
    assert listed["odd"].state == "exploded"
    assert listed["odd"].corrupt == (
        "corrupt record: surestep_runs.state, run odd: 'exploded' is not a state surestep "
        "knows (pending, running, waiting, needs_review, success, failed, dead_letter, "
        "cancelled)",
        "corrupt record: surestep_runs.error, run odd: not valid JSON (Expecting value: "
        "line 1 column 1 (char 0)): 'x{'",
    )
    assert listed["done"].state == State.SUCCESS and listed["done"].output is None
    with pytest.raises(CorruptRecordError, match=r"surestep_runs\.state, run odd"):
        app.handle("odd")

    runner = CliRunner()
    listing = runner.invoke(cli, ["runs", "--db", db_url])
    assert listing.exit_code == 0, listing.output
    assert "exploded (corrupt)" in listing.output and "done" in listing.output
    shown = runner.invoke(cli, ["show", "done", "--db", db_url])
    assert shown.exit_code == 0, shown.output
    assert "corrupt record: surestep_runs.output, run done" in " ".join(shown.output.split())
    as_json = runner.invoke(cli, ["runs", "--json", "--db", db_url])
    assert as_json.exit_code == 0 and '"corrupt": [' in as_json.output
