"""Queues (app.queue): a global concurrency, priorities and per-key caps, on both
databases, with in-process workers; the claims' query plans with a deep backlog."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

import surestep
from surestep import App, ConfigurationError, State
from surestep.storage.queues import (
    HEAD_SQL,
    KEY_HEAD_SQL,
    KEY_HEADS_LATERAL_SQL,
    KEYS_SQL,
    RUNNING_SQL,
    QueueStore,
    pick,
    served_condition,
)
from surestep.storage.rows import placement_columns
from surestep.testing import drive


class Gauge:
    """How many runs are inside ``work`` at once, at most, and in which order they came."""

    def __init__(self) -> None:
        self.now = self.peak = 0
        self.order: list[str] = []
        self.lock = threading.Lock()

    def enter(self, name: str) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.order.append(name)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def queue_app(app: App, gauge: Gauge, *, concurrency: int, cap: int | None = None) -> None:
    app.queue("llm", concurrency=concurrency)

    @app.step(name="work")
    def work(name: str) -> str:
        gauge.enter(name)
        time.sleep(0.01)
        gauge.leave()
        return name

    keyed: dict[str, Any] = {}
    if cap is not None:
        keyed = {"concurrency_key": lambda tenant, n: tenant, "per_key_concurrency": cap}

    @app.workflow(name="job", queue="llm", **keyed)
    def job(tenant: str, n: int) -> str:
        return work(f"{tenant}-{n}")

    @app.workflow(name="plain")
    def plain(n: int) -> int:
        return n


def finished(app: App, workflow: str = "job") -> int:
    with app.store.reading() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM surestep_runs WHERE workflow = ? AND state = 'success'",
            (workflow,),
        )
        return int(cur.fetchone()[0])


def test_a_queue_holds_its_concurrency_with_many_free_slots(app: App) -> None:
    gauge = Gauge()
    queue_app(app, gauge, concurrency=3)
    for n in range(24):
        app.start("job", "t", n)
    for n in range(5):
        app.start("plain", n)
    drive(app, until=lambda: finished(app) == 24 and finished(app, "plain") == 5, concurrency=16)
    assert gauge.peak == 3  # the queue's limit, not the worker's 16 slots
    [figures] = QueueStore(app.store).figures(app.clock.now())
    assert (figures.name, figures.concurrency, figures.running, figures.due) == ("llm", 3, 0, 0)


def test_higher_priority_is_claimed_first_and_equal_priority_is_fifo(app: App, clock: Any) -> None:
    gauge = Gauge()
    queue_app(app, gauge, concurrency=1)
    for n, priority in enumerate([0, 5, 0, 10, 5, -1]):
        app.start("job", "t", n, priority=priority)
        clock.advance(1)  # each later run is due later
    drive(app, until=lambda: finished(app) == 6, concurrency=4)
    assert gauge.order == ["t-3", "t-1", "t-4", "t-0", "t-2", "t-5"]


def test_one_keys_backlog_does_not_starve_another_key(app: App, clock: Any) -> None:
    gauge = Gauge()
    queue_app(app, gauge, concurrency=4, cap=2)
    for n in range(200):
        app.start("job", "big", n)
    clock.advance(1)
    for n in range(10):
        app.start("job", "small", n)
    drive(app, until=lambda: finished(app) == 210, concurrency=8)
    assert gauge.peak <= 4
    # The small tenant's runs, started after the big tenant's 200, are all done while
    # most of the big backlog still waits: with the cap, each gets half the queue.
    last_small = max(i for i, name in enumerate(gauge.order) if name.startswith("small"))
    assert last_small < 30, gauge.order[: last_small + 1]


def _backlog(app: App, tenant: str, count: int) -> None:
    """``count`` runs of ``job`` for ``tenant``, due now, written in one transaction (as
    ``app.start`` would write each: same inputs, queue and key)."""
    wf, now = app.registry.workflow("job"), app.clock.now()
    rows = []
    for n in range(count):
        queue, priority, key = placement_columns(wf.placement((tenant, n), {}))
        inputs = wf.codec.encode_args((tenant, n), {}, "a backlog run")
        rows.append((f"{tenant}-{n:05d}", wf.version, inputs, now, now, now, queue, priority, key))
    with app.store.transaction() as cur:
        cur.executemany(
            "INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs,"
            " created_at, updated_at, available_at, queue, priority, concurrency_key)"
            " VALUES (?, 'job', ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )


def test_a_10000_run_backlog_does_not_starve_another_keys_10_runs(app: App, clock: Any) -> None:
    """Fairness at depth: tenant big's 10,000 runs are all due before small's 10, yet
    small's all finish while almost all of big's still wait (each key gets at most
    per_key_concurrency of the queue's places; the claim reads past big's backlog)."""
    gauge = Gauge()
    queue_app(app, gauge, concurrency=4, cap=2)
    _backlog(app, "big", 10_000)
    clock.advance(1)
    small = [app.start("job", "small", n) for n in range(10)]
    drive(app, until=lambda: all(h.state == State.SUCCESS for h in small), concurrency=8)
    assert gauge.peak <= 4
    with app.store.reading() as cur:
        cur.execute(
            "SELECT concurrency_key, state, COUNT(*) FROM surestep_runs"
            " GROUP BY concurrency_key, state"
        )
        counts = {(key, state): int(n) for key, state, n in cur.fetchall()}
    assert counts[("small", "success")] == 10
    # small's 10 took 2 places at a time: 5 rounds, in which big had the other 2 places.
    big_done = counts.get(("big", "success"), 0)
    assert big_done < 100, big_done
    assert counts[("big", "pending")] >= 10_000 - 100 - 4


def test_pick_skips_keys_at_their_cap_and_never_caps_runs_without_a_key() -> None:
    def row(run: str, key: str | None) -> tuple[Any, ...]:
        return (run, *([None] * 9), key, 0)

    rows = [row("a1", "a"), row("a2", "a"), row("b1", "b"), row("n1", None), row("a3", "a")]
    taken, skipped = pick(rows, 3, 1, {"b": 1})
    assert [r[0] for r in taken] == ["a1", "n1"] and skipped
    taken, skipped = pick(rows, 2, None, {})
    assert [r[0] for r in taken] == ["a1", "a2"] and not skipped


@pytest.mark.parametrize(
    ("declare", "message"),
    [
        (lambda app: app.queue("q", concurrency=0), "concurrency must be an int >= 1"),
        (lambda app: app.queue("q", concurrency=True), "concurrency must be an int >= 1"),
        (lambda app: app.queue("q", concurrency=2, rate_per_second=0), "rate_per_second"),
        (
            lambda app: app.workflow(name="w", queue="nope")(lambda: None),
            "no queue named 'nope' is declared",
        ),
        (
            lambda app: app.workflow(name="w", concurrency_key=lambda: "k")(lambda: None),
            "apply within a queue",
        ),
    ],
)
def test_bad_declarations_fail_at_declaration(
    tmp_path: Any, declare: Callable[[App], object], message: str
) -> None:
    app = App(f"sqlite:///{tmp_path / 'q.db'}")
    with pytest.raises(ConfigurationError, match=message):
        declare(app)


def test_keyed_workflows_of_a_queue_must_agree_on_the_cap(tmp_path: Any) -> None:
    app = App(f"sqlite:///{tmp_path / 'q.db'}")
    app.queue("q", concurrency=4)
    app.workflow(name="a", queue="q", concurrency_key=str, per_key_concurrency=2)(lambda x: x)
    with pytest.raises(ConfigurationError, match="share one cap"):
        app.workflow(name="b", queue="q", concurrency_key=str, per_key_concurrency=3)(lambda x: x)
    with pytest.raises(ConfigurationError, match="together"):
        app.workflow(name="c", queue="q", concurrency_key=str)(lambda x: x)


def test_a_bad_priority_is_refused_before_anything_is_stored(app: App) -> None:
    queue_app(app, Gauge(), concurrency=1)
    for priority in ("high", 1.5, True, 2**31):
        with pytest.raises(ConfigurationError, match="priority must be an int"):
            app.start("job", "t", 1, priority=priority)
    with pytest.raises(ConfigurationError, match="in none"):
        app.start("plain", 1, priority=3)
    assert app.list_runs() == []


def test_a_map_of_a_queued_workflow_puts_its_children_in_the_queue(app: App) -> None:
    gauge = Gauge()
    queue_app(app, gauge, concurrency=2, cap=2)

    @app.workflow(name="fan")
    def fan(count: int) -> list[str]:
        return surestep.map(job, [("m", n) for n in range(count)], concurrency=8)

    @app.workflow(name="job2", queue="llm", concurrency_key=lambda t: t[0], per_key_concurrency=2)
    def job(item: tuple[str, int]) -> str:
        return f"{item[0]}-{item[1]}"

    handle = app.start("fan", 12)
    drive(app, until=lambda: handle.state == State.SUCCESS, concurrency=16)
    assert len(handle.result()) == 12
    with app.store.reading() as cur:
        cur.execute(
            "SELECT DISTINCT queue, concurrency_key FROM surestep_runs WHERE parent_id = ?",
            (handle.id,),
        )
        assert cur.fetchall() == [("llm", "m")]


def _plan(app: App, db_url: str, sql: str, params: list[Any]) -> str:
    with app.store.reading() as cur:
        if db_url.startswith("sqlite"):
            cur.execute("EXPLAIN QUERY PLAN " + sql, params)
        else:
            cur.execute("EXPLAIN " + sql, params)
        return " ".join(str(row) for row in cur.fetchall())


def test_queued_claims_read_indexes_with_a_deep_backlog(app: App, db_url: str) -> None:
    queue_app(app, Gauge(), concurrency=4, cap=2)
    now = app.clock.now()
    with app.store.transaction() as cur:
        cur.executemany(
            "INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs,"
            " created_at, updated_at, available_at, queue, priority, concurrency_key)"
            " VALUES (?, ?, '1', ?, '{}', ?, ?, ?, ?, ?, ?)",
            [
                (
                    f"r{n}",
                    "job" if n % 5 else "plain",
                    "success" if n % 3 == 0 else "pending",
                    now,
                    now,
                    now + n,
                    "llm" if n % 5 else None,
                    n % 3,
                    f"t{n % 7}" if n % 5 else None,  # a run in no queue has no key
                )
                for n in range(20_000)
            ],
        )
        if not db_url.startswith("sqlite"):
            cur.execute("ANALYZE surestep_runs")
    served, params = served_condition([("job", "1")])
    queries = {
        "surestep_runs_claimable_by_queue": (
            HEAD_SQL.format(served=served),
            ["llm", now + 1e6, *params, 10],
        ),
        "surestep_runs_claimable_by_key": (KEYS_SQL, ["llm", "llm"]),
        "surestep_runs_running_by_queue": (RUNNING_SQL, ["llm"]),
    }
    key_head = KEY_HEAD_SQL.format(key="concurrency_key = ?", served=served)
    queries["surestep_runs_claimable_by_key "] = (key_head, ["llm", "t1", now + 1e6, *params, 2])
    # The head of the runs without a key: from the key index too, not by reading the
    # queue's index past every keyed run (the planner guesses many have no key, as most
    # runs in the table have none).
    no_key = KEY_HEAD_SQL.format(key="concurrency_key IS NULL", served=served)
    queries["surestep_runs_claimable_by_key  "] = (no_key, ["llm", now + 1e6, *params, 2])
    if app.store.lateral_joins:  # type: ignore[attr-defined]
        heads = KEY_HEADS_LATERAL_SQL.format(served=served)  # every key's head at once
        args = [["t1", "t2"], [2, 1], "llm", now + 1e6, *params]
        queries["surestep_runs_claimable_by_key   "] = (heads, args)
    for index, (sql, args) in queries.items():
        plan = _plan(app, db_url, sql, args)
        assert index.strip() in plan, (index, plan)
        assert "SCAN surestep_runs " not in plan + " " and "Seq Scan" not in plan, plan
        assert "TEMP B-TREE" not in plan and "Sort " not in plan, plan  # the index's order


def test_the_queues_command_lists_limits_running_and_backlog(app: App, db_url: str) -> None:
    import json

    from typer.testing import CliRunner

    from surestep.cli import app as cli

    queue_app(app, Gauge(), concurrency=3, cap=2)
    QueueStore(app.store).declare(app.registry.queues(), app.clock.now())
    for n in range(4):
        app.start("job", "t", n)
    app.store.claim("w", [], 1, app.clock.now(), 30)  # nothing: job is claimed by queue
    QueueStore(app.store).claim("llm", "w", [("job", "1")], 8, app.clock.now, 30)
    found = CliRunner().invoke(cli, ["queues", "--json", "--db", db_url])
    assert found.exit_code == 0, found.output
    [row] = json.loads(found.output)
    assert (row["name"], row["concurrency"], row["per_key_concurrency"]) == ("llm", 3, 2)
    assert (row["running"], row["due"]) == (2, 2)  # the tenant's cap held the third back
    table = CliRunner().invoke(cli, ["queues", "--db", db_url])
    assert table.exit_code == 0 and "2/3" in table.output, table.output


def _claim_times(app: App, workflow: str) -> list[float]:
    """When each run of ``workflow`` was claimed, in the order of the claims."""
    with app.store.reading() as cur:
        cur.execute(
            "SELECT e.at FROM surestep_events e JOIN surestep_runs r ON r.id = e.run_id"
            " WHERE r.workflow = ? AND e.position IS NULL AND e.to_state = 'running'"
            " ORDER BY e.id",
            (workflow,),
        )
        return [float(row[0]) for row in cur.fetchall()]


@pytest.mark.parametrize("rate", [2.0, 0.5])
def test_a_rate_limit_spaces_a_queues_starts(app: App, clock: Any, rate: float) -> None:
    """A second's worth of starts at once (at least one), then one every 1/rate seconds:
    the worker, idle while the rate holds runs back, wakes when the next start is
    allowed (on the injected clock, which it advances)."""
    app.queue("paced", concurrency=10, rate_per_second=rate)

    @app.workflow(name="tick", queue="paced")
    def tick(n: int) -> int:
        return n

    for n in range(7):
        app.start("tick", n)
    drive(app, until=lambda: finished(app, "tick") == 7, concurrency=8)
    times = _claim_times(app, "tick")
    burst = max(1, int(rate))
    expected = [0.0] * burst + [k / rate for k in range(1, 7 - burst + 1)]
    assert [round(t - times[0], 6) for t in times] == expected


def test_a_rate_limit_refills_while_idle_up_to_its_burst(app: App, clock: Any) -> None:
    app.queue("paced", concurrency=10, rate_per_second=3)

    @app.workflow(name="tick", queue="paced")
    def tick(n: int) -> int:
        return n

    queues = QueueStore(app.store)
    queues.declare(app.registry.queues(), clock.now())
    for n in range(10):
        app.start("tick", n)
    took = queues.claim("paced", "w", [("tick", "1")], 10, clock.now, 30)
    assert (len(took.runs), took.blocked) == (3, True)  # the burst: a second's worth
    assert took.retry_at == pytest.approx(clock.now() + 1 / 3)
    clock.advance(0.5)  # 1.5 tokens: one start
    assert len(queues.claim("paced", "w", [("tick", "1")], 10, clock.now, 30).runs) == 1
    clock.advance(60)  # a long idle spell refills to the burst, not beyond
    took = queues.claim("paced", "w", [("tick", "1")], 10, clock.now, 30)
    assert (len(took.runs), took.blocked) == (3, True)
    clock.advance(-5)  # a worker whose clock is behind: it refills nothing
    took = queues.claim("paced", "w", [("tick", "1")], 10, clock.now, 30)
    assert (took.runs, took.blocked) == ([], True)
    assert took.retry_at == pytest.approx(clock.now() + 5 + 1 / 3)
    clock.advance(5.3)  # and it did not move the refill time back: 0.9 tokens
    assert queues.claim("paced", "w", [("tick", "1")], 10, clock.now, 30).runs == []
    clock.advance(0.05)
    assert len(queues.claim("paced", "w", [("tick", "1")], 10, clock.now, 30).runs) == 1
