"""Fan-out with surestep.map, on both databases, with in-process workers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

import surestep
from surestep import App, ChildRunError, ConfigurationError, Retry, State
from surestep.clock import FakeClock
from surestep.flow.store import MapStore
from surestep.testing import drive, run_workflow


class Gauge:
    """How many children run at once, at most."""

    def __init__(self) -> None:
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


def fan_app(app: App, gauge: Gauge, fail: set[int] | None = None) -> Callable[[int], int]:
    failing = fail or set()

    @app.step(name="work", retry=Retry(max_attempts=1), on_exhausted="fail")
    def work(n: int) -> int:
        with gauge:
            time.sleep(0.02)
        if n in failing:
            raise ValueError(f"item {n} is bad")
        return n * n

    @app.workflow(name="square")
    def square(n: int) -> int:
        return work(n)

    @app.workflow(name="squares")
    def squares(count: int, concurrency: int) -> list[int]:
        return surestep.map(square, range(count), concurrency=concurrency)

    @app.workflow(name="tolerant")
    def tolerant(count: int) -> list[object]:
        found = surestep.map(square, range(count), return_exceptions=True)
        return [r if isinstance(r, int) else f"error: {r.message}" for r in found]

    @app.workflow(name="strict")
    def strict(count: int, fail_fast: bool) -> str:
        try:
            surestep.map(square, range(count), concurrency=2, fail_fast=fail_fast)
        except ChildRunError as exc:
            return exc.message
        return "no failure"

    return square


def test_results_come_back_in_input_order_within_the_concurrency(app: App) -> None:
    gauge = Gauge()
    fan_app(app, gauge)
    handle = app.start("squares", 30, 4)
    drive(app, until=lambda: handle.state == State.SUCCESS, concurrency=16)
    assert handle.result() == [n * n for n in range(30)]
    assert gauge.peak <= 4  # never more than the map's concurrency, with 16 free slots
    [progress] = MapStore(app.store).progress(handle.id)
    assert (progress.total, progress.done, progress.failed, progress.held) == (30, 30, 0, 0)
    children = app.list_runs(workflow="square", limit=100)
    assert len(children) == 30 and {c.parent_id for c in children} == {handle.id}
    # The parent was woken once, when the last child finished: two claims in all.
    claims = [e for e in app.get_run(handle.id).events if e.reason == "claimed"]
    assert len(claims) == 2


def test_a_failed_child_fails_the_map_after_the_rest_settle(app: App) -> None:
    fan_app(app, Gauge(), fail={3})
    handle = app.start("strict", 8, False)
    drive(app, until=lambda: handle.state == State.SUCCESS)
    message = handle.result()
    assert "1 of 8 child runs failed" in message and "item 3" in message
    states = [c.state for c in app.list_runs(workflow="square", limit=100)]
    assert states.count(State.SUCCESS) == 7 and states.count(State.FAILED) == 1


def test_fail_fast_cancels_the_children_not_yet_finished(app: App) -> None:
    fan_app(app, Gauge(), fail={0})
    handle = app.start("strict", 12, True)
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert "item 0" in handle.result()
    states = [c.state for c in app.list_runs(workflow="square", limit=100)]
    assert states.count(State.CANCELLED) >= 1  # those not finished when the map failed
    assert all(s in (State.SUCCESS, State.FAILED, State.CANCELLED) for s in states)


def test_return_exceptions_puts_errors_in_place(app: App) -> None:
    fan_app(app, Gauge(), fail={1})
    result = run_workflow(app, "tolerant", 3).result()
    assert result[0] == 0 and result[2] == 4
    assert "item 1 is bad" in result[1]


def test_a_replay_returns_the_recorded_results_without_new_children(app: App) -> None:
    square = fan_app(app, Gauge())
    flaky = {"left": 1}

    @app.step(retry=Retry(max_attempts=3, initial_delay=0.01, jitter=False))
    def total(values: list[int]) -> int:
        if flaky["left"]:
            flaky["left"] -= 1
            raise ConnectionError("down")
        return sum(values)

    @app.workflow(name="summed")
    def summed(count: int) -> int:
        return total(surestep.map(square, range(count)))

    assert run_workflow(app, "summed", 5).result() == 30
    assert len(app.list_runs(workflow="square", limit=100)) == 5


def test_an_empty_map_and_plain_calls_outside_a_workflow(app: App) -> None:
    square = fan_app(app, Gauge())
    assert run_workflow(app, "squares", 0, 3).result() == []
    assert surestep.map(square, [2, 3]) == [4, 9]  # outside a workflow: plain calls


def test_gathered_child_runs_start_together(app: App) -> None:
    square = fan_app(app, Gauge())

    @app.workflow(name="gathered")
    async def gathered(count: int) -> list[int]:
        calls = [surestep.run_child_async(square, n) for n in range(count)]
        return list(await asyncio.gather(*calls))

    handle = run_workflow(app, "gathered", 6)
    assert handle.result() == [n * n for n in range(6)]
    parked = [
        e.id
        for e in app.get_run(handle.id).events
        if e.position is None and e.to_state == "waiting"
    ]
    created = [app.get_run(c.id).events[0].id for c in app.list_runs(workflow="square")]
    # Every child existed before the parent first parked: one execution started them all.
    assert len(created) == 6 and max(created) < min(parked)


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"concurrency": 0}, "concurrency must be"), ({"concurrency": True}, "concurrency must be")],
)
def test_bad_settings(app: App, settings: dict[str, object], message: str) -> None:
    square = fan_app(app, Gauge())
    with pytest.raises(ConfigurationError, match=message):
        surestep.map(square, [1], **settings)  # type: ignore[arg-type]
    with pytest.raises(surestep.UnknownWorkflowError, match="not a workflow"):
        surestep.map(len, [1])


def test_the_cli_shows_a_maps_progress_and_lists_its_children(db_url: str) -> None:
    import json

    from typer.testing import CliRunner

    from surestep.cli import app as cli

    app = App(db_url)
    try:
        fan_app(app, Gauge())
        handle = app.start("squares", 12, 3)
        drive(app, until=lambda: handle.state == State.SUCCESS)
    finally:
        app.close()
    env: dict[str, str | None] = {"COLUMNS": "200", "SURESTEP_DATABASE_URL": None}
    runner = CliRunner()
    shown = runner.invoke(cli, ["show", handle.id, "--db", db_url], env=env)
    assert shown.exit_code == 0, shown.output
    assert "maps" in shown.stdout and "square" in shown.stdout
    maps = json.loads(runner.invoke(cli, ["show", handle.id, "--json", "--db", db_url]).stdout)
    assert maps["maps"][0]["total"] == 12 and maps["maps"][0]["done"] == 12
    listed = runner.invoke(cli, ["runs", "--parent", handle.id, "--json", "--db", db_url])
    children = json.loads(listed.stdout)
    assert [c["id"] for c in children] == [f"{handle.id}:0:{i:02d}" for i in range(12)]


def test_cancelling_a_held_child_starts_no_other(app: App) -> None:
    square = fan_app(app, Gauge())

    @app.workflow(name="patient")
    def patient(count: int) -> int:
        found = surestep.map(square, range(count), concurrency=2, return_exceptions=True)
        return sum(1 for r in found if isinstance(r, ChildRunError))

    handle = app.start("patient", 6)
    drive(app, until=lambda: handle.state == State.WAITING)  # the parent parked; 6 children

    def due_children() -> int:
        with app.store.reading() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM surestep_runs WHERE parent_id = ?"
                " AND state = 'pending' AND available_at < 1e17",
                (handle.id,),
            )
            return int(cur.fetchone()[0])

    assert due_children() == 2
    app.cancel(f"{handle.id}:0:4")  # held: it never took a place
    assert due_children() == 2  # so it frees none
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == 1  # the cancelled child, in its place; the rest ran
    [progress] = MapStore(app.store).progress(handle.id)
    assert (progress.total, progress.done, progress.failed, progress.held) == (6, 6, 1, 0)


def test_a_map_created_before_its_counts_were_sharded_still_completes(app: App) -> None:
    """A map whose row counts its children itself (schema < 19: shards = 0) goes on
    counting there after an upgrade, releasing held children and waking its parent."""
    gauge = Gauge()
    fan_app(app, gauge)
    handle = app.start("squares", 9, 2)
    drive(app, until=lambda: handle.state == State.WAITING)
    with app.store.transaction() as cur:  # as schema 18 left it: counts in the map's row
        cur.execute(
            "UPDATE surestep_maps SET shards = 0, shards_done = 0,"
            " done = (SELECT SUM(done) FROM surestep_map_shards WHERE parent_id = ?),"
            " failed = (SELECT SUM(failed) FROM surestep_map_shards WHERE parent_id = ?)"
            " WHERE parent_id = ?",
            (handle.id, handle.id, handle.id),
        )
        cur.execute("DELETE FROM surestep_map_shards WHERE parent_id = ?", (handle.id,))
    drive(app, until=lambda: handle.state == State.SUCCESS)
    assert handle.result() == [n * n for n in range(9)]
    assert gauge.peak <= 2
    [progress] = MapStore(app.store).progress(handle.id)
    assert (progress.total, progress.done, progress.failed, progress.held) == (9, 9, 0, 0)


def test_prune_deletes_a_maps_rows_and_a_runs_messages_with_the_run(
    app: App, clock: FakeClock
) -> None:
    fan_app(app, Gauge())

    @app.workflow(name="approval")
    def approval() -> object:
        return surestep.wait_for_event("approved")

    old_map = app.start("squares", 70, 70)  # 70 children: more than the 64 shards
    old_wait = app.start(approval)
    app.send_event(old_wait.id, "approved", {"by": "alice"})
    app.send_event(old_wait.id, "unrelated", {})  # never consumed, pruned all the same
    drive(app, until=lambda: old_map.state == old_wait.state == State.SUCCESS, concurrency=16)
    clock.advance(40 * 86400)
    new_map = app.start("squares", 3, 3)
    new_wait = app.start(approval)
    app.send_event(new_wait.id, "approved", {"by": "bob"})
    drive(app, until=lambda: new_map.state == new_wait.state == State.SUCCESS)

    def rows(table: str, column: str, run_id: str) -> int:
        with app.store.reading() as cur:
            cur.execute(f"SELECT COUNT(*) FROM {table} WHERE {column} = ?", (run_id,))
            count: int = cur.fetchone()[0]
            return count

    owned = [("surestep_maps", "parent_id"), ("surestep_map_shards", "parent_id")]
    assert [rows(t, c, old_map.id) for t, c in owned] == [1, 64]
    assert rows("surestep_messages", "run_id", old_wait.id) == 2
    assert app.prune(older_than=timedelta(days=30)) == 72  # two runs and 70 children
    assert [rows(t, c, old_map.id) for t, c in owned] == [0, 0]
    assert rows("surestep_messages", "run_id", old_wait.id) == 0
    assert [rows(t, c, new_map.id) for t, c in owned] == [1, 3]
    assert rows("surestep_messages", "run_id", new_wait.id) == 1
    assert new_map.result() == [0, 1, 4] and new_wait.result() == {"by": "bob"}
