"""Deploys must not strand runs: workers record the versions they serve with a heartbeat,
`app.versions()` / `surestep versions` show unfinished runs per version and whether a
live worker serves it, and a worker warns about runs no live worker serves."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from surestep import App, FakeClock, State, VersionRecord
from surestep.cli import app as cli
from surestep.engine.presence import Presence
from surestep.storage.workers import _UNFINISHED_SQL, WorkerEntry, WorkerStore
from surestep.testing import drive
from surestep.versions import stranded_warning, version_report


def order_app(db_url: str, clock: FakeClock, version: str) -> App:
    app = App(db_url, clock=clock)

    @app.workflow(name="order", version=version)
    def order(n: int) -> int:
        return n + 1

    return app


def test_workers_announce_beat_stop_expire_and_are_pruned(app: App, clock: FakeClock) -> None:
    workers = WorkerStore(app.store)
    start = clock.now()
    workers.announce("w-a", "host-a", 11, [("order", "2"), ("bill", "1")], start, 30.0)
    workers.announce("w-b", "host-b", 12, [("order", "1")], start, 30.0)
    assert [(w.id, w.pid, w.serves) for w in workers.live(start)] == [
        ("w-a", 11, (("bill", "1"), ("order", "2"))),
        ("w-b", 12, (("order", "1"),)),
    ]

    clock.advance(20)
    workers.announce("w-a", "host-a", 11, [("order", "2")], clock.now(), 30.0)  # a heartbeat
    clock.advance(20)  # w-b silent for 40 s, longer than its lease: taken for dead
    (alive,) = workers.live(clock.now())
    assert (alive.id, alive.started_at, alive.serves) == ("w-a", start, (("order", "2"),))

    workers.stopped("w-a", clock.now())
    assert workers.live(clock.now()) == []
    assert workers.prune(before=start + 1) == 1  # w-b, silent since start
    assert workers.prune(before=clock.now() + 1) == 1  # w-a, stopped


def test_versions_show_unfinished_runs_per_version_and_who_serves_them(
    db_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = order_app(db_url, clock, "1")
    v1.start("order", 1, run_id="old-1")
    v1.start("order", 2, run_id="old-2")
    v1.close()
    v2 = order_app(db_url, clock, "2")
    v2.start("order", 3, run_id="new-1")

    seen: list[list[VersionRecord]] = []

    def done() -> bool:
        seen.append(v2.versions())  # asked while the version-2 worker is alive
        return v2.handle("new-1").state == State.SUCCESS

    with caplog.at_level(logging.WARNING, logger="surestep.worker"):
        drive(v2, until=done)

    old, new = seen[-1]
    assert (old.workflow, old.version, dict(old.runs), old.workers) == (
        "order",
        "1",
        {State.PENDING: 2},
        (),
    )
    assert old.stranded == 2 and not old.served
    assert (new.version, dict(new.runs), new.served, new.stranded) == ("2", {}, True, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "'order' version '1': 2 run(s)" in warnings[0] and "patched()" in warnings[0]

    # The worker stopped cleanly: nothing serves version 2 now, and with no runs left it
    # is not listed.
    assert [(r.version, r.served) for r in v2.versions()] == [("1", False)]
    v2.close()


def test_the_warning_comes_at_start_up_then_once_per_check_interval(
    db_url: str, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = order_app(db_url, clock, "1")
    v1.start("order", 1, run_id="old-1")

    def warnings_after(check_every: float) -> int:
        caplog.clear()
        presence = Presence(v1.store, clock, "w-2", [("order", "2")], 30.0, check_every)
        with caplog.at_level(logging.WARNING, logger="surestep.worker"):
            presence.arrive()
            presence.beat()
            presence.beat()
        presence.leave()
        return sum("'order' version '1'" in r.getMessage() for r in caplog.records)

    assert warnings_after(check_every=3600) == 1  # at start-up only
    assert warnings_after(check_every=0) == 3  # at every check that is due
    v1.close()


def test_counting_unfinished_runs_reads_an_index_not_the_table(app: App, db_url: str) -> None:
    with app.store.reading() as cur:
        query = (
            "SELECT workflow, workflow_version, state, COUNT(*) FROM surestep_runs"
            f" WHERE {_UNFINISHED_SQL} GROUP BY state, workflow, workflow_version"
        )
        if db_url.startswith("sqlite"):
            cur.execute("EXPLAIN QUERY PLAN " + query)
        else:  # on an empty table the planner would rightly prefer a scan
            cur.execute("SET enable_seqscan = off")
            cur.execute("EXPLAIN " + query)
        plan = " ".join(str(row) for row in cur.fetchall())
    assert "surestep_runs_unfinished" in plan, plan
    assert "SCAN surestep_runs " not in plan + " " and "Seq Scan" not in plan, plan


def test_the_report_and_the_warning_are_pure_policy() -> None:
    live = [WorkerEntry("w1", "h", 1, 0.0, 0.0, 30.0, (("a", "10"), ("b", "1")), None)]
    counts = {
        ("a", "2"): {State.DEAD_LETTER: 1},  # parked for a person: counted, not stranded
        ("a", "9"): {State.WAITING: 3, State.PENDING: 1},
        ("a", "10"): {State.PENDING: 5},
    }
    report = version_report(counts, live)
    assert [(r.workflow, r.version, r.unfinished, r.served, r.stranded) for r in report] == [
        ("a", "2", 1, False, 0),
        ("a", "9", 4, False, 4),
        ("a", "10", 5, True, 0),
        ("b", "1", 0, True, 0),
    ]
    warning = stranded_warning(report)
    assert warning is not None and "'a' version '9': 4 run(s)" in warning
    assert "'2'" not in warning
    assert stranded_warning(report[2:]) is None


def test_the_versions_command_lists_stranded_versions(db_url: str, clock: FakeClock) -> None:
    v1 = order_app(db_url, clock, "1")
    v1.start("order", 1, run_id="old-1")
    v1.close()
    runner = CliRunner()
    found = runner.invoke(cli, ["versions", "--json", "--db", db_url])
    assert found.exit_code == 0, found.output
    assert json.loads(found.output) == [
        {
            "workflow": "order",
            "version": "1",
            "runs": {"pending": 1},
            "unfinished": 1,
            "served": False,
            "workers": [],
            "stranded": 1,
        }
    ]
    table = runner.invoke(cli, ["versions", "--db", db_url], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "1 pending" in table.output and "none: 1 run(s) stranded" in table.output


WORKER_MODULE = """
from surestep import App

app = App({url!r})


@app.workflow(name="order", version="2")
def order(n: int) -> int:
    return n + 1
"""


def versions_at(url: str) -> list[tuple[str, bool, int]]:
    app = App(url)
    try:
        return [(r.version, r.served, r.stranded) for r in app.versions()]
    finally:
        app.close()


def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not true within {timeout}s"
        time.sleep(0.05)


@pytest.mark.slow
def test_a_worker_process_warns_of_runs_no_live_worker_serves(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    (tmp_path / "jobs.py").write_text(textwrap.dedent(WORKER_MODULE.format(url=url)))
    client = order_app(url, FakeClock(time.time()), "1")
    client.start("order", 1, run_id="old-1")
    surestep = Path(sys.executable).parent / "surestep"
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(surestep), "worker", "jobs:app"], cwd=tmp_path, stdout=out, stderr=out
        )
        try:
            wait_for(lambda: "WARNING" in log.read_text(), timeout=20)
            assert versions_at(url) == [("1", False, 1), ("2", True, 0)]
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    text = log.read_text()
    assert "'order' version '1': 1 run(s)" in text and "surestep.patched()" in text
    assert versions_at(url) == [("1", False, 1)]  # the worker stopped cleanly
    client.close()
