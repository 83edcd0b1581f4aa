"""Starting one run id from several processes at once creates one run, executed once.

Six real processes, released together, each call ``app.start(greet, "x",
run_id="same-id")`` on one SQLite file. The run id is the idempotency key, so exactly one
of them creates the run and the others get a handle on it.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import processes  # siblings in tests/integration
import pytest
import start_app

from surestep import IdempotencyConflictError, State
from surestep.testing import run_workflow

PROCESSES = 6
RUN_ID = start_app.RUN_ID


def sqlite_urls(folder: Path, rounds: int) -> list[str]:
    return [f"sqlite:///{folder / f'runs-{k}.db'}" for k in range(rounds)]


def test_concurrent_starts_of_one_run_id_create_and_execute_it_once(tmp_path: Path) -> None:
    [url] = sqlite_urls(tmp_path, 1)
    side_effect = tmp_path / "side-effect.log"
    # The schema exists before the race, so this test is about the run's creation alone;
    # the test below races on a new file.
    app = start_app.build(url, side_effect)
    try:
        assert app.list_runs() == []
    finally:
        app.close()

    outputs = processes.race_starts(tmp_path, [url], PROCESSES)
    assert outputs == [[f"0 {RUN_ID}"]] * PROCESSES

    app = start_app.build(url, side_effect)
    try:
        [run] = app.list_runs(limit=100)
        assert (run.id, run.workflow, run.state, run.inputs) == (
            RUN_ID,
            "greet",
            State.PENDING,
            {"name": "x"},
        )
        events = app.get_run(RUN_ID).events
        creations = [e for e in events if e.from_state is None]
        assert len(creations) == 1 and creations[0].to_state == State.PENDING, events
        assert len(events) == 1, events

        handle = run_workflow(app, "greet", "x", run_id=RUN_ID, timeout=30)
        assert handle.result(timeout=0) == "hello x"
        # Started again after it finished: the same run, not a new execution.
        again = app.start("greet", "x", run_id=RUN_ID)
        assert again.state == State.SUCCESS
        assert len(app.list_runs(limit=100)) == 1
        assert len([e for e in app.get_run(RUN_ID).events if e.from_state is None]) == 1
    finally:
        app.close()

    assert side_effect.read_text().splitlines() == ["body x", f"step {RUN_ID}:0"]


def test_processes_opening_a_new_database_at_once_all_migrate_and_start_it(
    tmp_path: Path,
) -> None:
    # The window is a few milliseconds wide, so race on many new files.
    rounds = 150
    outputs = processes.race_starts(tmp_path, sqlite_urls(tmp_path, rounds), PROCESSES)
    failures = [line for lines in outputs for line in lines if " error " in line]
    assert failures == [], f"{len(failures)} of {rounds * PROCESSES} starts failed: {failures[:3]}"
    assert outputs == [[f"{k} {RUN_ID}" for k in range(rounds)]] * PROCESSES

    for k in range(rounds):
        db = tmp_path / f"runs-{k}.db"
        app = start_app.build(f"sqlite:///{db}", tmp_path / "side-effect.log")
        try:
            [run] = app.list_runs(limit=100)
            assert run.id == RUN_ID
            events = app.get_run(RUN_ID).events
            assert [e.to_state for e in events] == [State.PENDING]
        finally:
            app.close()
        with closing(sqlite3.connect(db)) as conn:
            (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
            versions = [v for (v,) in conn.execute("SELECT version FROM surestep_migrations")]
        assert mode == "wal"
        assert versions == sorted(set(versions)) and versions[0] == 1


def test_reusing_a_run_id_for_other_work_is_a_conflict(tmp_path: Path) -> None:
    app = start_app.build(f"sqlite:///{tmp_path / 'runs.db'}", tmp_path / "side-effect.log")
    try:
        app.start("greet", "x", run_id=RUN_ID)

        with pytest.raises(IdempotencyConflictError) as other_inputs:
            app.start("greet", "y", run_id=RUN_ID)
        message = str(other_inputs.value)
        assert RUN_ID in message and "other inputs" in message and "different run_id" in message

        with pytest.raises(IdempotencyConflictError) as other_workflow:
            app.start("farewell", "x", run_id=RUN_ID)
        message = str(other_workflow.value)
        assert RUN_ID in message and "'greet'" in message and "another run_id" in message

        [run] = app.list_runs(limit=100)
        assert (run.workflow, run.inputs) == ("greet", {"name": "x"})
    finally:
        app.close()
