"""Starting one run id from several processes at once creates one run, executed once.

Six real processes, released together, each call ``app.start(greet, "x",
run_id="same-id")`` on one SQLite file. The run id is the idempotency key, so exactly one
of them creates the run and the others get a handle on it.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from types import ModuleType

import pytest

from surestep import IdempotencyConflictError, State
from surestep.testing import run_workflow

START_APP = Path(__file__).with_name("start_app.py")
PROCESSES = 6


def _load_start_app() -> ModuleType:
    # By file path, so the test does not depend on pytest's import mode or sys.path.
    spec = importlib.util.spec_from_file_location("surestep_start_app", START_APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


start_app = _load_start_app()
RUN_ID = start_app.RUN_ID

Race = Callable[[int], list[list[str]]]


@pytest.fixture
def race(tmp_path: Path) -> Iterator[Race]:
    """``race(rounds)``: in each round, all the processes start ``same-id`` on
    ``runs-<round>.db`` at once. Returns each process's output lines."""
    procs: list[subprocess.Popen[bytes]] = []

    def run(rounds: int) -> list[list[str]]:
        for n in range(PROCESSES):
            with (
                (tmp_path / f"out-{n}").open("wb") as out,
                (tmp_path / f"err-{n}").open("wb") as err,
            ):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(START_APP), str(tmp_path), str(n), str(rounds)],
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                    )
                )
        wait_for_files(lambda n: f"ready-{n}", "getting ready")
        for k in range(rounds):
            (tmp_path / f"go-{k}").touch()
            wait_for_files(lambda n, k=k: f"done-{k}-{n}", f"finishing round {k}")
        outputs = []
        for n, proc in enumerate(procs):
            status = proc.wait(timeout=60)
            errors = read(f"err-{n}")
            assert status == 0 and errors == "", f"process {n} exited {status}:\n{errors}"
            outputs.append(read(f"out-{n}").splitlines())
        return outputs

    def wait_for_files(name: Callable[[int], str], what: str) -> None:
        """Wait until each process ``n`` has created the file ``name(n)``."""
        deadline = time.monotonic() + 60
        while not all((tmp_path / name(n)).exists() for n in range(PROCESSES)):
            for n, proc in enumerate(procs):
                # Looked at after poll(): a process creates its file before it exits.
                if proc.poll() is not None and not (tmp_path / name(n)).exists():
                    pytest.fail(f"process {n} exited before {what}:\n{read(f'err-{n}')}")
            assert time.monotonic() < deadline, f"the processes did not get {what} within 60s"
            time.sleep(0.002)

    def read(name: str) -> str:
        return (tmp_path / name).read_text()

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)


def test_concurrent_starts_of_one_run_id_create_and_execute_it_once(
    tmp_path: Path, race: Race
) -> None:
    db, side_effect = tmp_path / "runs-0.db", tmp_path / "side-effect.log"
    # The schema exists before the race, so this test is about the run's creation alone;
    # the test below races on a new file.
    app = start_app.build(db, side_effect)
    try:
        assert app.list_runs() == []
    finally:
        app.close()

    outputs = race(1)
    assert outputs == [[f"0 {RUN_ID}"]] * PROCESSES

    app = start_app.build(db, side_effect)
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
    tmp_path: Path, race: Race
) -> None:
    # The window is a few milliseconds wide, so race on many new files.
    rounds = 150
    outputs = race(rounds)
    failures = [line for lines in outputs for line in lines if " error " in line]
    assert failures == [], f"{len(failures)} of {rounds * PROCESSES} starts failed: {failures[:3]}"
    assert outputs == [[f"{k} {RUN_ID}" for k in range(rounds)]] * PROCESSES

    for k in range(rounds):
        db = tmp_path / f"runs-{k}.db"
        app = start_app.build(db, tmp_path / "side-effect.log")
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
    app = start_app.build(tmp_path / "runs.db", tmp_path / "side-effect.log")
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
