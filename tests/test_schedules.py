"""Cron schedules on both databases, in-process: fires and their run ids, racing Apps,
catch-up after an outage, a crash between start and advance, a changed cron, DST, the
worker's timer, and ``surestep schedules`` (real processes: tests/integration/
test_schedule_processes.py)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from surestep import App, FakeClock, State
from surestep.cli import app as cli
from surestep.errors import ConfigurationError
from surestep.flow.cron import Cron
from surestep.flow.schedule_store import ScheduleStore
from surestep.flow.schedules import fire_run_id
from surestep.testing import drive

#: A quarter-hour boundary: 2024-01-01T00:00:00Z.
T0 = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
Q = 15 * 60.0


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ticking(url: str, clock: FakeClock, cron: str = "*/15 * * * *", **options: str) -> App:
    """An App with the schedule ``tick``: its workflow returns the fire time it got."""
    app = App(url, clock=clock)

    @app.schedule(cron, name="tick", **options)
    def tick(fired_at: datetime) -> str:
        return fired_at.isoformat()

    return app


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=T0 + 60)


@pytest.fixture
def ticker(db_url: str, clock: FakeClock) -> Iterator[App]:
    app = ticking(db_url, clock)
    yield app
    app.close()


def schedule_runs(app: App) -> list[str]:
    return sorted(r.id for r in app.list_runs(limit=1000) if r.id.startswith("schedule:"))


# -- declaring -----------------------------------------------------------------------------


def test_a_bad_cron_is_refused_at_decoration_and_registers_nothing(app: App) -> None:
    def tick(fired_at: datetime) -> None: ...

    with pytest.raises(ConfigurationError, match=r"schedule 'tick': cron '\*/15 \* \*'"):
        app.schedule("*/15 * *", name="tick")(tick)
    with pytest.raises(ConfigurationError, match="catch_up='some'"):
        app.schedule("0 * * * *", name="tick", catch_up="some")(tick)
    assert app.registry.find("tick") is None and app.schedules.declared() == []


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("def f(when: datetime) -> None: ...", "it has: when"),
        ("def f(fired_at: datetime, n: int) -> None: ...", "give n a default"),
        ("def f(fired_at) -> None: ...", "annotate it as `datetime`"),
        ("def f(fired_at: str) -> None: ...", "annotate it as `datetime`"),
    ],
)
def test_the_function_must_take_fired_at_datetime(app: App, source: str, says: str) -> None:
    namespace: dict[str, object] = {"datetime": datetime}
    exec(source, namespace)
    with pytest.raises(ConfigurationError, match="`fired_at: datetime`") as caught:
        app.schedule("0 * * * *", name="f")(namespace["f"])  # type: ignore[arg-type]
    assert says in str(caught.value)


# -- firing --------------------------------------------------------------------------------


def test_each_fire_starts_one_run_named_by_its_time(ticker: App, clock: FakeClock) -> None:
    assert ticker.schedules.sweep() == []  # stores the schedule: first fire at 00:15
    assert ticker.schedules.records()[0].next_fire_at == T0 + Q
    clock.set(T0 + Q + 0.05)
    assert ticker.schedules.sweep() == [f"schedule:tick:{iso(T0 + Q)}"]
    assert ticker.schedules.sweep() == []  # moved on to 00:30
    record = ticker.schedules.records()[0]
    assert (record.next_fire_at, record.last_fire_at) == (T0 + 2 * Q, T0 + Q)
    handle = ticker.handle(f"schedule:tick:{iso(T0 + Q)}")
    drive(ticker, until=lambda: handle.state is State.SUCCESS)
    assert handle.result() == "2024-01-01T00:15:00+00:00"


def test_four_apps_racing_over_each_fire_start_one_run(db_url: str, clock: FakeClock) -> None:
    """Four Apps (four connections) sweep at the same instant, for 6 periods."""
    apps = [ticking(db_url, clock) for _ in range(4)]
    try:
        apps[0].schedules.sweep()
        started: list[list[str]] = []
        for period in range(1, 7):
            clock.set(T0 + period * Q + 1)
            gate = threading.Barrier(4)
            results: list[list[str]] = [[] for _ in apps]

            def sweep(n: int, gate: threading.Barrier, results: list[list[str]]) -> None:
                gate.wait()
                results[n] = apps[n].schedules.sweep()

            threads = [threading.Thread(target=sweep, args=(n, gate, results)) for n in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            started.append(sorted({run for result in results for run in result}))
        expected = [f"schedule:tick:{iso(T0 + p * Q)}" for p in range(1, 7)]
        assert started == [[run] for run in expected]
        assert schedule_runs(apps[0]) == expected
    finally:
        for app in apps:
            app.close()


@pytest.mark.parametrize(
    ("policy", "fired"),
    [
        ("all", [1, 2, 3, 4]),
        ("latest", [4]),
        ("none", []),
    ],
)
def test_after_an_outage_the_catch_up_policy_holds(
    db_url: str, clock: FakeClock, policy: str, fired: list[int]
) -> None:
    before = ticking(db_url, clock, catch_up=policy)
    before.schedules.sweep()
    before.close()
    clock.set(T0 + 4 * Q + 300)  # down from 00:01 to 01:05: fires 00:15 ... 01:00 missed
    after = ticking(db_url, clock, catch_up=policy)
    try:
        assert after.schedules.sweep() == [f"schedule:tick:{iso(T0 + p * Q)}" for p in fired]
        assert after.schedules.records()[0].next_fire_at == T0 + 5 * Q
        clock.set(T0 + 5 * Q)  # the next fire is on time, whatever the policy
        assert after.schedules.sweep() == [f"schedule:tick:{iso(T0 + 5 * Q)}"]
        assert len(schedule_runs(after)) == len(fired) + 1
    finally:
        after.close()


def test_a_crash_between_start_and_advance_neither_repeats_nor_skips(
    db_url: str, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ticking(db_url, clock, catch_up="all")
    first.schedules.sweep()
    clock.set(T0 + 2 * Q + 1)

    def die(*args: object) -> bool:
        raise RuntimeError("the worker died here")

    with monkeypatch.context() as patch:
        patch.setattr(ScheduleStore, "advance", die)
        with pytest.raises(RuntimeError):
            first.schedules.sweep()
    first.close()
    runs = [f"schedule:tick:{iso(T0 + Q)}", f"schedule:tick:{iso(T0 + 2 * Q)}"]
    restarted = ticking(db_url, clock, catch_up="all")
    try:
        assert schedule_runs(restarted) == runs  # started before the crash
        assert restarted.schedules.sweep() == runs  # planned again: start finds them
        assert schedule_runs(restarted) == runs
        assert restarted.schedules.sweep() == []
        clock.set(T0 + 3 * Q)
        assert restarted.schedules.sweep() == [f"schedule:tick:{iso(T0 + 3 * Q)}"]
    finally:
        restarted.close()


def test_a_changed_cron_updates_the_stored_schedule_when_a_worker_starts(
    db_url: str, clock: FakeClock
) -> None:
    old = ticking(db_url, clock)
    old.schedules.sweep()
    old.close()
    new = ticking(db_url, clock, cron="0 */2 * * *", catch_up="all", timezone="Europe/Berlin")
    try:
        new.schedules.sweep()
        record = new.schedules.records()[0]
        assert (record.cron, record.timezone, record.catch_up) == (
            "0 */2 * * *",
            "Europe/Berlin",
            "all",
        )
        assert record.next_fire_at == T0 + 3600  # 02:00 in Berlin
        clock.set(T0 + 3600)
        assert new.schedules.sweep() == [f"schedule:tick:{iso(T0 + 3600)}"]
        handle = new.handle(f"schedule:tick:{iso(T0 + 3600)}")
        drive(new, until=lambda: handle.state is State.SUCCESS)
        assert handle.result() == "2024-01-01T02:00:00+01:00"  # fired_at in the zone
    finally:
        new.close()


def test_dst_the_repeated_hour_fires_once(db_url: str) -> None:
    berlin = ZoneInfo("Europe/Berlin")
    clock = FakeClock(start=datetime(2024, 10, 26, 12, tzinfo=berlin).timestamp())
    app = ticking(db_url, clock, cron="30 2 * * *", timezone="Europe/Berlin")
    try:
        app.schedules.sweep()
        started = []
        # Every 10 minutes through the night of the change (02:30 happens twice).
        for _ in range(24 * 6):
            clock.advance(600)
            started += app.schedules.sweep()
        assert started == ["schedule:tick:2024-10-27T00:30:00Z"]
    finally:
        app.close()


def test_workers_fire_schedules_as_a_timer(ticker: App) -> None:
    """An idle in-process worker moves a FakeClock straight to the next fire."""
    wanted = [f"schedule:tick:{iso(T0 + p * Q)}" for p in (1, 2, 3)]

    def fired() -> bool:
        runs = {r.id: r.state for r in ticker.list_runs(limit=100)}
        return all(runs.get(run) is State.SUCCESS for run in wanted)

    drive(ticker, until=fired)
    assert schedule_runs(ticker)[:3] == wanted


# -- surestep schedules ------------------------------------------------------------------------


def test_pause_resume_trigger_and_list_from_the_command_line(db_url: str) -> None:
    clock = FakeClock(start=time.time())  # the command line reads the real clock
    app = ticking(db_url, clock)
    runner = CliRunner()
    try:
        app.schedules.sweep()
        listed = runner.invoke(cli, ["schedules", "list", "--json", "--db", db_url])
        assert listed.exit_code == 0, listed.output
        (row,) = json.loads(listed.stdout)
        assert (row["name"], row["cron"], row["paused"]) == ("tick", "*/15 * * * *", False)

        paused = runner.invoke(cli, ["schedules", "pause", "tick", "--db", db_url])
        assert paused.exit_code == 0, paused.output
        clock.set(row["next_fire_at"] + 1)
        assert app.schedules.sweep() == []  # paused: the fire passes
        assert app.schedules.next_due() is None

        resumed = runner.invoke(cli, ["schedules", "resume", "tick", "--db", db_url])
        assert resumed.exit_code == 0, resumed.output
        record = app.schedules.records()[0]
        assert not record.paused and record.next_fire_at > time.time()
        assert record.next_fire_at == Cron("*/15 * * * *", "UTC").next_after(time.time() - 1)

        triggered = runner.invoke(cli, ["schedules", "trigger", "tick", "--db", db_url])
        assert triggered.exit_code == 0, triggered.output
        run_id = triggered.stdout.strip()
        assert run_id.startswith("schedule:tick:manual:")
        handle = app.handle(run_id)
        drive(app, until=lambda: handle.state is State.SUCCESS)
        fired_at = datetime.fromisoformat(handle.result())
        assert abs(fired_at.timestamp() - time.time()) < 3600  # now, not a cron time

        table = runner.invoke(cli, ["schedules", "list", "--db", db_url])
        assert "tick" in table.stdout and "*/15 * * * *" in table.stdout

        unknown = runner.invoke(cli, ["schedules", "pause", "nope", "--db", db_url])
        assert unknown.exit_code == 1
        assert "no schedule named 'nope' is stored (known: tick)" in unknown.output
    finally:
        app.close()


def test_fire_run_ids_are_the_fire_time_in_utc() -> None:
    berlin = datetime(2024, 7, 1, 3, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    assert fire_run_id("nightly", berlin) == "schedule:nightly:2024-07-01T01:00:00Z"
