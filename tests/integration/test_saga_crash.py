"""Crash test for sagas: a worker SIGKILLed while undoing failed runs, on both databases.

What the engine promises, and so what is asserted here:

* A run that failed for good undoes its completed steps in reverse order, each undo a
  checkpointed step at position ``-(p + 1)``, and then ends ``failed``, whatever
  happened to the worker that was undoing it.
* A run whose compensation had begun is resumed *in* its compensation: the workflow
  function is not called again, no step of the workflow runs again, and the undos whose
  checkpoints committed are not run again. Only an undo in flight at the kill (no
  checkpoint) is run a second time: at most one per run, and at most ``concurrency`` in
  all.
* The run is taken back at once because its worker's process is gone, and the new
  worker records the remaining undos and the end of the run.
"""

from __future__ import annotations

import itertools
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import processes
import pytest
import saga_app  # siblings in tests/integration

from surestep import App, RunRecord, State

SAGA_APP = Path(__file__).with_name("saga_app.py")

RUNS = 10


STEPS: int = saga_app.STEPS
CONCURRENCY: int = saga_app.CONCURRENCY


class Line(NamedTuple):
    """One side effect, as ``saga_app.py`` logs it."""

    key: str  # the step's idempotency key, or the run id for "workflow"
    action: str  # "do", "undo", "give_up" or "workflow"
    i: str  # i of step_i / undo_i, "-" otherwise
    event: str  # "start", "done" or "enter"

    @property
    def run_id(self) -> str:
        return self.key.split(":", 1)[0]


class WorkerProcess(processes.WorkerProcess):
    """``python saga_app.py URL LOG_DIR``: a real worker process."""

    def __init__(self, url: str, log_dir: Path, stderr_path: Path) -> None:
        super().__init__([sys.executable, str(SAGA_APP), url, str(log_dir)], log_dir, stderr_path)

    def lines(self) -> list[Line]:
        """The side effects of this process, in the order it wrote them."""
        return [Line(*words) for words in self.log_lines()]

    def undo_starts(self) -> int:
        return sum(1 for line in self.lines() if line.action == "undo" and line.event == "start")


Spawn = Callable[[], WorkerProcess]


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def spawn(db_url: str, log_dir: Path, tmp_path: Path) -> Iterator[Spawn]:
    """Start worker processes; any still running at the end of the test is killed."""
    started: list[WorkerProcess] = []

    def start() -> WorkerProcess:
        worker = WorkerProcess(db_url, log_dir, tmp_path / f"worker-{len(started)}.err")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()


@pytest.fixture
def app(db_url: str, log_dir: Path) -> Iterator[App]:
    app = saga_app.build(db_url, log_dir)
    yield app
    app.close()


def _pid_of(worker_id: str) -> int:
    # Worker ids are "host/namespace:pid:random".
    return int(worker_id.rsplit(":", 2)[1])


def _undo_position(i: int) -> int:
    return -(i + 1)


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_sigkill_mid_compensation_resumes_the_undos_without_replaying_the_workflow(
    app: App, spawn: Spawn
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    about = f"(random seed {seed})"
    run_ids = [f"saga-{i:02d}" for i in range(RUNS)]
    # Kill after some undos have started, not after a fixed time.
    first, at_kill = _kill_mid_compensation(app, spawn, run_ids, rng.randint(3, 14), rng)
    compensating = sorted(
        run_id
        for run_id, record in at_kill.items()
        if record.state == State.RUNNING and record.compensating == State.FAILED
    )
    assert compensating, f"the kill landed while no run was compensating {about}"

    final = spawn()
    _wait_until_all_failed(app, final, RUNS, about)
    assert final.stop() == 0, final.stderr()
    workers = [first, final]
    for worker in workers:
        assert "Traceback" not in worker.stderr(), worker.stderr()
    generation_of = {worker.pid: g for g, worker in enumerate(workers)}
    records = {run_id: app.get_run(run_id) for run_id in run_ids}

    # -- the database: every run failed and undid all its steps ------------------------

    committed_by: dict[str, int] = {}  # step key -> generation of the worker
    for run_id, record in records.items():
        assert record.state == State.FAILED, f"{run_id}: {record.state} {about}"
        assert record.compensating is None, run_id
        # the failure the run compensated for outlives the crash and the recovery
        assert _failure_message(record).endswith("cannot be completed"), run_id
        steps = {step.position: step for step in record.steps}
        undo_positions = [_undo_position(i) for i in range(STEPS)]
        assert sorted(steps) == sorted([*undo_positions, *range(STEPS + 1)]), run_id
        for i in range(STEPS):
            do, undo = steps[i], steps[_undo_position(i)]
            assert (do.name, do.state, do.compensation) == (f"step_{i}", State.SUCCESS, f"undo_{i}")
            assert (undo.name, undo.state) == (f"undo_{i}", State.SUCCESS), f"{run_id} undo {i}"
        give_up = steps[STEPS]
        assert (give_up.name, give_up.state, give_up.attempts) == ("give_up", State.FAILED, 1)
        for step in record.steps:
            key = f"{run_id}:{step.position}"
            # The attempt that committed the step; an attempt cut short by the kill has
            # nothing to commit.
            [attempt] = [a for a in step.attempt_records if a.state == step.state]
            assert attempt.attempt == step.attempts, key
            committed_by[key] = generation_of[_pid_of(attempt.worker)]

    # -- the side effects ---------------------------------------------------------------

    # First worker's lines, then the final worker's: the first was dead (and reaped)
    # before the final one started, so this is the order in which they happened.
    history = [(g, line) for g, worker in enumerate(workers) for line in worker.lines()]
    started_by: dict[str, list[int]] = defaultdict(list)
    finished_by: dict[str, list[int]] = defaultdict(list)
    entered_by: dict[str, list[int]] = defaultdict(list)
    for g, worker in enumerate(workers):
        seen: dict[str, list[str]] = defaultdict(list)
        for line in worker.lines():
            if line.action == "workflow":
                entered_by[line.key].append(g)
            else:
                seen[line.key].append(line.event)
        for key, events in seen.items():
            # One process executes a step at most once, and its "done" follows its
            # "start"; the step that gives up never gets to "done".
            allowed = (["start"],) if key.endswith(f":{STEPS}") else (["start"], ["start", "done"])
            assert events in allowed, f"{key} in worker {g}: {events}"
            started_by[key].append(g)
            if events == ["start", "done"]:
                finished_by[key].append(g)
    assert set(started_by) == set(committed_by), about

    for key, committer in committed_by.items():
        # Nothing started a step (an undo included) after its checkpoint committed...
        assert max(started_by[key]) == committer, (
            f"{key} was started by workers {started_by[key]} though worker {committer} "
            f"committed it {about}"
        )
        # ...and the committed execution is one that ran to its end.
        if not key.endswith(f":{STEPS}"):
            assert committer in finished_by[key], key

    # Steps the killed worker started and did not commit: those in flight at the kill.
    in_flight = sorted(key for key, gs in started_by.items() if 0 in gs and committed_by[key] != 0)
    in_flight_runs = [key.split(":", 1)[0] for key in in_flight]
    assert len(in_flight_runs) == len(set(in_flight_runs)), f"two steps of a run: {in_flight}"
    assert len(in_flight) <= CONCURRENCY, f"{in_flight} {about}"
    for key, gs in started_by.items():
        assert gs == ([0, 1] if key in in_flight else [committed_by[key]]), f"{key}: {gs}"
    undos_in_flight = [key for key in in_flight if ":-" in key]
    assert undos_in_flight, f"no undo was in flight at the kill: {in_flight} {about}"

    for run_id in run_ids:
        lines = [(g, line) for g, line in history if line.run_id == run_id]
        # The undos ran one after the other, in reverse order of the steps: in the order
        # of their first "done" line, and none started before the one before it was done.
        first_done: list[int] = []
        for _, line in lines:
            if line.action == "undo" and line.event == "done" and int(line.i) not in first_done:
                first_done.append(int(line.i))
        assert first_done == list(reversed(range(STEPS))), f"{run_id}: {first_done} {about}"
        undo_lines = [line for _, line in lines if line.action == "undo"]
        for earlier, later in itertools.pairwise(undo_lines):
            if later.event == "start" and later.key != earlier.key:
                assert (earlier.event, int(earlier.i)) == ("done", int(later.i) + 1), (
                    f"{run_id}: undo {later.i} started after {earlier} {about}"
                )
        # Every undo came after the step that gave up, which came after every step.
        actions = [line.action for _, line in lines if line.action != "workflow"]
        first_undo = actions.index("undo")
        assert set(actions[:first_undo]) == {"do", "give_up"}, f"{run_id}: {actions}"
        assert actions[first_undo - 1] == "give_up", f"{run_id}: {actions}"

    # -- resumed in its compensation, not replayed --------------------------------------

    [killed_id] = {record.lease_owner for record in at_kill.values() if record.lease_owner}
    assert _pid_of(killed_id) == first.pid
    for run_id in run_ids:
        before, after = at_kill[run_id], records[run_id]
        final_lines = [line for g, line in history if g == 1 and line.run_id == run_id]
        undone_before = {
            step.position
            for step in before.steps
            if step.position < 0 and step.state == State.SUCCESS
        }
        undone_after = set(range(-STEPS, 0)) - undone_before
        if run_id in compensating:
            # The final worker called neither the workflow nor any of its steps: it went
            # straight to the undos not yet recorded (none, if the kill fell between the
            # last undo's checkpoint and the end of the run).
            assert entered_by[run_id] == [0], f"{run_id} was replayed {about}"
            assert {line.action for line in final_lines} <= {"undo"}, f"{run_id}: {final_lines}"
            assert {int(line.key.rsplit(":", 1)[1]) for line in final_lines} == undone_after, (
                f"{run_id}: {final_lines} {about}"
            )
            _assert_recovered(after, killed_id, final.pid, undone_after, about)
        elif before.state == State.FAILED:
            # Finished before the kill: the final worker never touched it.
            assert final_lines == [], run_id
            assert not any(_pid_of(e.actor) == final.pid for e in after.events if ":" in e.actor)
        else:
            # Not yet compensating at the kill (pending, or still in the workflow): the
            # final worker executed the workflow, replaying what was recorded.
            assert entered_by[run_id][-1] == 1, f"{run_id}: {entered_by[run_id]}"
            if before.state == State.RUNNING:
                _assert_recovered(after, killed_id, final.pid, undone_after, about)

    # Runs held by the killed worker were taken back because its process had gone.
    recoveries = [
        (run_id, event.reason or "")
        for run_id, record in records.items()
        for event in record.events
        if event.from_state == State.RUNNING and event.to_state == State.PENDING
    ]
    assert {run_id for run_id, _ in recoveries} == {
        run_id for run_id, record in at_kill.items() if record.state == State.RUNNING
    }
    for run_id, reason in recoveries:
        assert f"worker {killed_id} is gone" in reason, f"{run_id}: {reason}"


def _assert_recovered(
    record: RunRecord, killed_id: str, final_pid: int, undone_after: set[int], about: str
) -> None:
    """The run was taken back from the killed worker once; everything after that, down
    to its end in ``failed``, was done by the final worker, which recorded (with
    success) the compensations at the positions ``undone_after``."""
    events = list(record.events)
    [recovered] = [
        i
        for i, e in enumerate(events)
        if e.from_state == State.RUNNING
        and e.to_state == State.PENDING
        and f"worker {killed_id} is gone" in (e.reason or "")
    ]
    assert _pid_of(events[recovered].actor) == final_pid, events[recovered]
    after = events[recovered + 1 :]
    assert after, f"{record.id}: nothing happened after the recovery {about}"
    assert all(_pid_of(e.actor) == final_pid for e in after), f"{record.id}: {after}"
    claim, end = after[0], after[-1]
    assert (claim.from_state, claim.to_state) == (State.PENDING, State.RUNNING), claim
    assert (end.position, end.from_state, end.to_state) == (None, State.RUNNING, State.FAILED)
    assert end.reason == f"undid {STEPS} completed step(s)", end
    recorded = [
        (e.position, e.to_state)
        for e in after
        if e.position is not None and e.from_state == State.RUNNING
    ]
    assert [p for p, _ in recorded if p < 0] == sorted(undone_after), (
        f"{record.id}: {recorded} {about}"
    )
    assert all(state == State.SUCCESS for p, state in recorded if p < 0), recorded


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_a_run_recovered_mid_compensation_keeps_the_error_it_failed_with(
    app: App, spawn: Spawn
) -> None:
    _, at_kill = _kill_mid_compensation(app, spawn, ["saga-solo"], 1, random.Random())
    assert at_kill["saga-solo"].compensating == State.FAILED
    assert _failure_message(at_kill["saga-solo"]).endswith("cannot be completed")
    final = spawn()
    _wait_until_all_failed(app, final, 1, "")
    assert final.stop() == 0, final.stderr()
    assert _failure_message(app.get_run("saga-solo")).endswith("cannot be completed")


def _kill_mid_compensation(
    app: App, spawn: Spawn, run_ids: list[str], undo_starts: int, rng: random.Random
) -> tuple[WorkerProcess, dict[str, RunRecord]]:
    """Start the runs and a worker; SIGKILL it once it has started ``undo_starts``
    undos, reap it, and return it with the runs as they were at the kill."""
    for run_id in run_ids:
        app.start("saga", run_id, run_id=run_id)
    first = spawn()
    # An undo takes 100-300 ms, so the kill lands while at least the last one seen is in
    # flight.
    first.wait_until(lambda: first.undo_starts() >= undo_starts, f"{undo_starts} undo starts")
    time.sleep(rng.uniform(0.0, 0.05))
    first.kill()
    return first, {run_id: app.get_run(run_id) for run_id in run_ids}


def _wait_until_all_failed(app: App, final: WorkerProcess, runs: int, about: str) -> None:
    deadline = time.monotonic() + 30
    while (counts := app.store.count_by_state()) != {State.FAILED: runs}:
        assert final.proc.poll() is None, final.stderr()
        assert State.DEAD_LETTER not in counts, f"{counts} {about}"
        assert time.monotonic() < deadline, f"runs not finished: {counts} {about}"
        time.sleep(0.05)


def _failure_message(record: RunRecord) -> str:
    return "" if record.error is None else str(record.error["message"])
