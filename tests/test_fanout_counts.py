"""A map's counts stay exact with more children than shards (64), with concurrent ends,
failures, fail_fast, a limited map and a cancel of the parent, on both databases; on
PostgreSQL a child's end that only counts is one statement, and the children are
created by one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from test_fanout import Gauge  # a sibling module

import surestep
from surestep import App, ChildRunError, Retry, State
from surestep.flow.store import HELD, SHARDS, MapStore
from surestep.review.rows import TaskSpec
from surestep.review.store import ReviewStore
from surestep.storage.rows import Placement
from surestep.testing import drive


def map_app(
    app: App, fail: set[int] | None = None, pause: float = 0.0, gauge: Gauge | None = None
) -> Callable[[int], int]:
    failing, running = fail or set(), gauge or Gauge()

    @app.step(name="work", retry=Retry(max_attempts=1), on_exhausted="fail")
    def work(n: int) -> int:
        with running:
            time.sleep(pause)
        if n in failing:
            raise ValueError(f"item {n} is bad")
        return n

    @app.workflow(name="child")
    def child(n: int) -> int:
        return work(n)

    @app.workflow(name="many")
    def many(count: int, concurrency: int | None, fail_fast: bool) -> list[object]:
        try:
            found = surestep.map(
                child,
                range(count),
                concurrency=concurrency,
                fail_fast=fail_fast,
                return_exceptions=not fail_fast,
            )
        except ChildRunError as exc:
            return [exc.message]
        return [r if isinstance(r, int) else "failed" for r in found]

    return child


def ends_in_one(app: App) -> list[bool]:
    """Whether each child end the PostgreSQL store tried in one map statement did end
    the run there (empty on SQLite, which has no such statement)."""
    store: Any = app.store
    seen: list[bool] = []
    if not app.database_url.startswith("postgresql"):
        return seen
    original = store._finish_in_one

    def spy(sql: str, params: dict[str, Any]) -> tuple[bool, bool, bool]:
        found: tuple[bool, bool, bool] = original(sql, params)
        if "surestep_map_shards" in sql:
            seen.append(found[1])
        return found

    store._finish_in_one = spy
    return seen


def progress(app: App, parent: str) -> tuple[int, int, int, int]:
    [found] = MapStore(app.store).progress(parent)
    return found.total, found.done, found.failed, found.held


def test_every_end_counts_once_with_more_children_than_shards(app: App) -> None:
    count = 3 * SHARDS + 10  # shards of 3 and 4 children
    map_app(app, fail={5, 70, 150})
    seen = ends_in_one(app)
    handle = app.start("many", count, None, False)
    drive(app, until=lambda: handle.state == State.SUCCESS, concurrency=16)
    result = handle.result()
    assert result == [n if n not in {5, 70, 150} else "failed" for n in range(count)]
    assert progress(app, handle.id) == (count, count, 3, 0)
    claims = [e for e in app.get_run(handle.id).events if e.reason == "claimed"]
    assert len(claims) == 2  # woken once, by the end that completed the last shard
    if app.database_url.startswith("postgresql"):
        # Each shard's last end counts the shard in the map's row (the general path);
        # every other end, failures included, was one statement.
        assert (len(seen), sum(seen)) == (count, count - SHARDS)


@pytest.mark.parametrize("queued", [False, True])
def test_each_child_is_created_with_its_columns_and_event(app: App, queued: bool) -> None:
    """The map's creation (on PostgreSQL one statement from arrays) writes every child
    as the portable statements do: id, inputs, due or held, placement, trace, event."""
    map_app(app)
    parent = app.start("many", 0, None, False).id
    with app.store.transaction() as cur:
        cur.execute("UPDATE surestep_runs SET trace_context = 'tp-1' WHERE id = ?", (parent,))
    now = app.clock.now()
    [run] = app.store.claim("w", [("many", "1")], 1, now, 30)
    inputs = [f'{{"n": {n}}}' for n in range(12)]
    placements = [Placement("q", n % 3, None if n % 2 else f"k{n}") for n in range(12)]
    MapStore(app.store).start(
        run.id,
        run.token,
        "w",
        0,
        "map:child",
        ("child", "1"),
        inputs,
        3,
        False,
        now,
        placements if queued else [],
    )
    with app.store.reading() as cur:
        cur.execute(
            "SELECT id, workflow, workflow_version, state, inputs, created_at, updated_at,"
            " available_at, queue, priority, concurrency_key, trace_context"
            " FROM surestep_runs WHERE parent_id = ? ORDER BY id",
            (parent,),
        )
        rows = [tuple(row) for row in cur.fetchall()]
        cur.execute(
            "SELECT run_id, position, step, from_state, to_state, at, actor, reason, attempt"
            " FROM surestep_events WHERE run_id LIKE ? ORDER BY run_id",
            (f"{parent}:%",),
        )
        events = [tuple(row) for row in cur.fetchall()]
    expected = [
        (
            f"{parent}:0:{n:02d}",
            "child",
            "1",
            "pending",
            inputs[n],
            now,
            now,
            now if n < 3 else HELD,
            *(("q", n % 3, None if n % 2 else f"k{n}") if queued else (None, 0, None)),
            "tp-1",
        )
        for n in range(12)
    ]
    assert rows == expected
    reason = f"started by run {parent}"
    assert events == [
        (row[0], None, None, None, "pending", now, "surestep", reason, None) for row in rows
    ]


def test_fail_fast_beyond_the_shards_wakes_the_parent_at_the_first_failure(app: App) -> None:
    count = 2 * SHARDS + 20
    map_app(app, fail={100})
    handle = app.start("many", count, None, True)
    drive(app, until=lambda: handle.state == State.SUCCESS, concurrency=16)
    [message] = handle.result()
    assert "the first, item 100: " in message and "item 100 is bad" in message
    states = [c.state for c in app.list_runs(workflow="child", limit=1000)]
    assert len(states) == count and states.count(State.FAILED) == 1
    assert set(states) <= {State.SUCCESS, State.FAILED, State.CANCELLED}


def test_a_limited_map_releases_every_child_and_counts_each_end(app: App) -> None:
    count = 2 * SHARDS + 30
    gauge = Gauge()
    map_app(app, pause=0.002, gauge=gauge)
    handle = app.start("many", count, 6, False)
    drive(app, until=lambda: handle.state == State.SUCCESS, concurrency=16)
    assert handle.result() == list(range(count))
    assert progress(app, handle.id) == (count, count, 0, 0)
    assert 1 <= gauge.peak <= 6


def test_a_child_ending_with_an_open_review_task_closes_it_and_counts(app: App) -> None:
    """Another end listener's work (the review store closing a run's open tasks) is not
    skipped by a map's child ending in one statement: its probe sends the end down the
    general path."""
    map_app(app)
    parent = app.start("many", 0, None, False).id
    now = app.clock.now()
    [run] = app.store.claim("w", [("many", "1")], 1, now, 30)
    inputs = [f'{{"n": {n}}}' for n in range(2 * SHARDS)]  # shards of two
    maps = MapStore(app.store)
    maps.start(run.id, run.token, "w", 0, "map:child", ("child", "1"), inputs, 200, False, now)
    tokens = {c.id: c.token for c in app.store.claim("w", [("child", "1")], 200, now, 30)}
    first, second = f"{parent}:0:000", f"{parent}:0:001"
    spec = TaskSpec(kind="step", workflow="child", payload="{}")
    [task, _] = ReviewStore(app.store).open_at(first, tokens[first], "w", 3, "ask", spec, now)
    for child in (first, second):
        app.store.finish(child, tokens[child], "w", State.SUCCESS, now, parent_id=parent)
    with app.store.reading() as cur:
        cur.execute("SELECT state FROM surestep_review_tasks WHERE id = ?", (task,))
        assert cur.fetchone()[0] == "cancelled"
        cur.execute(
            "SELECT shard, done FROM surestep_map_shards WHERE parent_id = ? AND shard < 2"
            " ORDER BY shard",
            (parent,),
        )
        assert [tuple(row) for row in cur.fetchall()] == [(0, 1), (1, 1)]
    assert [app.get_run(c).state for c in (first, second)] == [State.SUCCESS] * 2


def test_a_child_failing_with_children_of_its_own_cancels_them_and_counts(app: App) -> None:
    map_app(app)
    parent = app.start("many", 0, None, False).id
    now = app.clock.now()
    [run] = app.store.claim("w", [("many", "1")], 1, now, 30)
    inputs = [f'{{"n": {n}}}' for n in range(2 * SHARDS)]  # shards of two
    maps = MapStore(app.store)
    maps.start(run.id, run.token, "w", 0, "map:child", ("child", "1"), inputs, 200, False, now)
    tokens = {c.id: c.token for c in app.store.claim("w", [("child", "1")], 200, now, 30)}
    first = f"{parent}:0:000"
    grandchild = f"{first}:4"
    app.store.start_child(
        first, tokens[first], "w", 4, "run_child", grandchild, "child", "1", '{"n": 9}', now
    )
    error = '{"type": "ValueError", "message": "bad"}'
    app.store.finish(first, tokens[first], "w", State.FAILED, now, error=error, parent_id=parent)
    assert app.get_run(grandchild).state == State.CANCELLED
    assert app.get_run(first).state == State.FAILED
    [found] = maps.progress(parent)
    assert (found.done, found.failed) == (1, 1)


@pytest.mark.timeout(180)
def test_cancelling_the_parent_while_its_children_end_leaves_exact_counts(app: App) -> None:
    count = 4 * SHARDS
    map_app(app, pause=0.003)
    handle = app.start("many", count, None, False)
    errors: list[BaseException] = []
    stop = threading.Event()

    def settled() -> bool:
        with app.store.reading() as cur:
            cur.execute(
                "SELECT COUNT(*) FROM surestep_runs WHERE parent_id = ?"
                " AND state IN ('success', 'failed', 'cancelled')",
                (handle.id,),
            )
            ended = int(cur.fetchone()[0])
        return stop.is_set() or (handle.state == State.CANCELLED and ended == count)

    def work() -> None:
        try:
            drive(app, until=settled, timeout=150, concurrency=16)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        while len(app.list_runs(workflow="child", state=State.SUCCESS, limit=100)) < 40:
            assert time.monotonic() < deadline and not errors, errors
            time.sleep(0.01)
        app.cancel(handle.id)  # while children end, on a worker's 16 slots
    except BaseException:
        stop.set()
        raise
    finally:
        worker.join()
    assert not errors, errors
    states = [c.state for c in app.list_runs(workflow="child", limit=1000)]
    cancelled = states.count(State.CANCELLED)
    assert cancelled >= 1 and states.count(State.SUCCESS) == count - cancelled
    assert progress(app, handle.id) == (count, count, cancelled, 0)
