"""Crash tests: real worker processes on a real SQLite file, killed with SIGKILL.

What the engine promises, and so what is asserted here:

* A step whose checkpoint has committed is never executed again: every later execution
  of the workflow replays its recorded output. So the worker that committed a step's
  output (``AttemptRecord.worker``) is the *last* process that started that step.
* A step in flight when its worker dies has no checkpoint, and is executed again (from
  the start) by the worker that recovers the run: at-least-once for that step. Such a
  step is one its killed worker started and did not commit; a killed worker can have at
  most ``concurrency`` of them (one per run it was executing), and at most one per run
  (a workflow's steps run one after the other, each committed before the next begins).
* A run whose worker died is recovered and finishes with the right output.
"""

from __future__ import annotations

import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import crash_app  # siblings in tests/integration
import processes
import pytest

from surestep import App, State

CRASH_APP = Path(__file__).with_name("crash_app.py")

RUNS = 40
KILLS = 5


class WorkerProcess(processes.WorkerProcess):
    """``python crash_app.py DB LOG_DIR [CONCURRENCY PAUSE]``: a real worker process."""

    def __init__(self, db: Path, log_dir: Path, stderr_path: Path, *options: str) -> None:
        super().__init__(
            [sys.executable, str(CRASH_APP), str(db), str(log_dir), *options],
            log_dir,
            stderr_path,
        )

    def lines(self) -> list[tuple[str, str]]:
        """(idempotency key, event) in the order this process wrote them."""
        return [(key, event) for key, event in self.log_lines()]

    def starts(self) -> int:
        return sum(1 for _, event in self.lines() if event == "start")


Spawn = Callable[..., WorkerProcess]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start worker processes; any still running at the end of the test is killed."""
    started: list[WorkerProcess] = []
    log_dir = tmp_path / "logs"
    log_dir.mkdir()

    def start(*options: str) -> WorkerProcess:
        stderr_path = tmp_path / f"worker-{len(started)}.err"
        worker = WorkerProcess(tmp_path / "runs.db", log_dir, stderr_path, *options)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    app = crash_app.build(tmp_path / "runs.db", tmp_path / "logs")
    yield app
    app.close()


def _pid_of(worker_id: str) -> int:
    # Worker ids are "host/namespace:pid:random".
    return int(worker_id.rsplit(":", 2)[1])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("runs", "concurrency", "pause"),
    [
        (RUNS, crash_app.CONCURRENCY, 0.03),
        # Steps that take no time, 16 runs at once: nearly every checkpoint shares its
        # commit with other runs' (group commit), so the kills land in the middle of
        # batches, between a batch's savepoints or in its one fsync. More runs, so
        # that the last kill still finds work to interrupt.
        (200, 16, 0.0),
    ],
    ids=["steps-in-flight", "mid-group-commit"],
)
def test_sigkilled_workers_lose_no_run_and_repeat_no_committed_step(
    app: App, spawn: Spawn, runs: int, concurrency: int, pause: float
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    about = f"(random seed {seed})"
    handles = [app.start("crashy", i, run_id=f"run-{i:02d}") for i in range(runs)]

    killed: list[WorkerProcess] = []
    for _ in range(KILLS):
        worker = spawn(str(concurrency), str(pause))
        # Kill after the worker has done some work, not after a fixed time: on a slow
        # machine a timed kill could land before the worker has imported anything.
        target = rng.randint(4, 24)
        worker.wait_until(lambda w=worker, t=target: w.starts() >= t, f"{target} step starts")
        time.sleep(rng.uniform(0.0, 0.05))
        worker.kill()
        killed.append(worker)
        unfinished = runs - len(app.list_runs(state="success", limit=10_000))
        assert unfinished > 0, f"the kill landed after all the work was done {about}"

    final = spawn()
    deadline = time.monotonic() + 60
    for i, handle in enumerate(handles):
        output = handle.result(timeout=max(0.1, deadline - time.monotonic()))
        assert output == crash_app.expected_output(i), f"{handle.id} {about}"
    assert final.stop() == 0, final.stderr()

    workers = [*killed, final]
    for worker in workers:
        assert "Traceback" not in worker.stderr(), worker.stderr()
    generation_of = {worker.pid: g for g, worker in enumerate(workers)}

    # Who started and finished each step, from the side-effect logs.
    started_by: dict[str, list[int]] = defaultdict(list)
    finished_by: dict[str, list[int]] = defaultdict(list)
    for g, worker in enumerate(workers):
        seen: dict[str, list[str]] = defaultdict(list)
        for key, event in worker.lines():
            seen[key].append(event)
        for key, events in seen.items():
            # One process executes a step at most once (no step here ever fails), and
            # its "done" follows its "start".
            assert events in (["start"], ["start", "done"]), f"{key} in worker {g}: {events}"
            started_by[key].append(g)
            if events == ["start", "done"]:
                finished_by[key].append(g)

    # Who committed each step, from the database.
    committed_by: dict[str, int] = {}
    for i in range(runs):
        record = app.get_run(f"run-{i:02d}")
        assert record.state == State.SUCCESS
        assert [s.position for s in record.steps] == list(range(crash_app.STEPS))
        for step in record.steps:
            key = f"{record.id}:{step.position}"
            assert step.name == "work"
            assert step.state == State.SUCCESS, key
            assert step.output == crash_app.expected_step_output(i, step.position), key
            # The attempt that committed the output; an attempt cut short by a kill has
            # nothing to commit.
            [attempt] = [a for a in step.attempt_records if a.state == State.SUCCESS]
            assert attempt.attempt == step.attempts, key
            committed_by[key] = generation_of[_pid_of(attempt.worker)]

    assert set(started_by) == set(committed_by)
    for key, committer in committed_by.items():
        # Nothing started the step after its output was committed...
        assert max(started_by[key]) == committer, (
            f"{key} was started by workers {started_by[key]} though worker {committer} "
            f"had committed it {about}"
        )
        # ...and the committed execution is one that ran to its end.
        assert committer in finished_by[key], key

    reexecuted = 0
    for g in range(len(killed)):
        # Steps this worker started and did not commit: those in flight at its kill.
        in_flight = sorted(k for k, gs in started_by.items() if g in gs and committed_by[k] != g)
        reexecuted += len(in_flight)
        assert len(in_flight) <= concurrency, f"worker {g}: {in_flight} {about}"
        owners = [key.rsplit(":", 1)[0] for key in in_flight]
        assert len(owners) == len(set(owners)), f"worker {g}: two steps of one run {in_flight}"
        for key in in_flight:
            run_id, position = key.rsplit(":", 1)
            latest = max(
                int(k.rsplit(":", 1)[1])
                for k, gs in started_by.items()
                if g in gs and k.startswith(f"{run_id}:")
            )
            assert int(position) == latest, f"worker {g} moved past uncommitted {key}"
    assert reexecuted == sum(len(gs) - 1 for gs in started_by.values())
    assert reexecuted <= KILLS * concurrency
    assert reexecuted >= 1, f"no kill interrupted a step; the test proved nothing {about}"

    # Runs held by a killed worker were taken back at once because its process had
    # gone, not after their leases lapsed.
    reasons = [
        event.reason or ""
        for i in range(runs)
        for event in app.get_run(f"run-{i:02d}").events
        if event.from_state == State.RUNNING and event.to_state == State.PENDING
    ]
    assert reasons, "no run was ever recovered from a killed worker"
    assert all("is gone" in reason for reason in reasons), reasons


@pytest.mark.slow
def test_retry_backoff_survives_a_sigkilled_worker(app: App, spawn: Spawn) -> None:
    handle = app.start("backoff", "hello", run_id="backoff-1")
    first = spawn()
    first.wait_until(lambda: handle.state == State.WAITING, "retry wait")

    [step] = app.get_run("backoff-1").steps
    assert step.state == State.WAITING and step.attempts == 1
    [failure] = step.attempt_records
    assert failure.state == State.FAILED
    assert failure.error is not None and failure.error["type"] == "ConnectionError"
    # The wait is stored with the step, not kept in the worker's memory.
    assert step.next_attempt_at == pytest.approx(failure.finished_at + crash_app.RETRY_DELAY)

    first.kill()
    second = spawn()
    assert handle.result(timeout=30) == "HELLO"
    assert second.stop() == 0, second.stderr()

    [step] = app.get_run("backoff-1").steps
    assert step.state == State.SUCCESS and step.attempts == 2
    failure, success = step.attempt_records
    assert (failure.attempt, success.attempt) == (1, 2)
    assert success.state == State.SUCCESS
    assert _pid_of(failure.worker) == first.pid
    assert _pid_of(success.worker) == second.pid
    # The new worker honoured the wait the dead one had scheduled.
    assert success.started_at >= failure.finished_at + crash_app.RETRY_DELAY
    key = "backoff-1:0"
    assert first.lines() == [(key, "start"), (key, "failed")]
    assert second.lines() == [(key, "start"), (key, "done")]
