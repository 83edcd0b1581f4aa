"""Review tasks across real processes, on a SQLite file shared by processes and on
PostgreSQL: a worker SIGKILLed after a decision, two processes racing to decide the
same tasks, and an SLA that runs out while no worker runs.

What the engine promises, and so what is asserted here:

* A decision is stored once, in the transaction that resumes the run; a worker that dies
  after it loses nothing: the next worker replays the run, the review returns the stored
  decision, and nothing before the review runs again (the step in flight at the kill
  runs again, at least once, as any step does).
* Of two processes deciding one task at the same moment exactly one wins; the other
  gets ``ReviewConflictError``; the decision log's hash chain verifies.
* A due time that passes while no worker runs is applied by the next worker at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import processes  # siblings in tests/integration
import pytest
import review_app
from webhook_receiver import SECRET, TOKEN, Receiver  # tests/webhook_receiver.py

from surestep import App, State
from surestep.review import notify

REVIEW_APP = Path(__file__).with_name("review_app.py")
DECIDER = Path(__file__).with_name("review_decider.py")

Spawn = Callable[[], processes.WorkerProcess]


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    path = tmp_path / "logs"
    path.mkdir()
    return path


@pytest.fixture
def spawn(db_url: str, log_dir: Path, tmp_path: Path) -> Iterator[Spawn]:
    """Start ``review_app.py`` workers; any still running at the end is killed."""
    started: list[processes.WorkerProcess] = []

    def start() -> processes.WorkerProcess:
        argv = [sys.executable, str(REVIEW_APP), db_url, str(log_dir)]
        worker = processes.WorkerProcess(argv, log_dir, tmp_path / f"worker-{len(started)}.err")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()


@pytest.fixture
def app(db_url: str, log_dir: Path) -> Iterator[App]:
    """The test process's App: real clock, same database as the workers."""
    app = review_app.build(db_url, log_dir)
    yield app
    app.close()


def starts(log_dir: Path) -> Counter[str]:
    """How many times each step (idempotency key) was started, over every process."""
    return Counter(
        line.split(" ")[0]
        for log in log_dir.glob("*.log")
        for line in log.read_text().splitlines()
        if line.split(" ")[1] == "start"
    )


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.01)


def decision_records(app: App, run_id: str) -> list[dict[str, object]]:
    with app.store.reading() as cur:
        cur.execute(
            "SELECT record FROM surestep_review_decisions WHERE run_id = ? ORDER BY seq",
            (run_id,),
        )
        return [json.loads(text) for (text,) in cur.fetchall()]


@pytest.mark.slow
def test_a_worker_sigkilled_after_a_decision_resumes_the_run_once_with_it(
    app: App, spawn: Spawn, log_dir: Path
) -> None:
    handle = app.start("reviewed", 7, 3.0, run_id="r-1")
    first = spawn()
    first.wait_until(lambda: handle.state == State.NEEDS_REVIEW, "the run parked for review")
    [task] = app.reviews.list(run_id="r-1")

    # Decided from this process while the worker lives: it takes the run back and runs
    # the step after the review, which is slow enough for the kill to land inside it.
    app.reviews.decide(task.id, "edit", by="alice", data={"amount": 8}, comment="typo")
    first.wait_until(lambda: starts(log_dir)["r-1:2"] == 1, "the post-review step starting")
    first.kill()
    assert handle.state == State.RUNNING  # killed mid-step: nothing committed the run

    second = spawn()
    assert handle.result(timeout=60) == 'edit {"amount": 8}'
    assert second.stop() == 0, second.stderr()
    assert "Traceback" not in first.stderr() + second.stderr()

    # Nothing before the review ran again; the step after it ran in both workers (it was
    # in flight at the kill), each time with the reviewer's edit.
    assert starts(log_dir) == {"r-1:0": 1, "r-1:2": 2}
    assert [w for w in first.log_lines() if w[1] == "start"] == [
        ["r-1:0", "start", "[7]"],
        ["r-1:2", "start", '["edit",{"amount":8}]'],
    ]
    assert second.log_lines() == [
        ["r-1:2", "start", '["edit",{"amount":8}]'],
        ["r-1:2", "done"],
    ]
    # One decision, recorded once, and the review step's output is that decision.
    [record] = decision_records(app, "r-1")
    assert (record["outcome"], record["data"], record["reviewer"]) == (
        "edit",
        {"amount": 8},
        "alice",
    )
    run = app.get_run("r-1")
    assert [(s.position, s.name, s.state) for s in run.steps] == [
        (0, "prepare", State.SUCCESS),
        (1, "review:check", State.SUCCESS),
        (2, "book", State.SUCCESS),
    ]
    assert run.steps[1].output["data"] == {"amount": 8}
    decided = [e for e in run.events if (e.reason or "").startswith("review task")]
    decided = [e for e in decided if "decided" in (e.reason or "")]
    assert [e.reason for e in decided] == [f"review task {task.id} decided: edit (typo)"]
    resumed = [e for e in run.events if e.position is None and e.to_state == State.RUNNING]
    # Claimed before the review, after the decision, and after the kill: no more.
    assert len(resumed) == 3, [(e.from_state, e.to_state, e.reason) for e in run.events]
    assert app.reviews.verify("r-1") == (1, [])


TASKS = 30


@pytest.mark.slow
def test_two_processes_deciding_the_same_tasks_at_once_exactly_one_wins_each(
    app: App, spawn: Spawn, log_dir: Path, db_url: str, tmp_path: Path
) -> None:
    handles = [app.start("reviewed", n, 0.0, run_id=f"c-{n:02d}") for n in range(TASKS)]
    worker = spawn()
    worker.wait_until(
        lambda: len(app.reviews.list(kind="check", limit=100)) == TASKS, "every task open"
    )
    tasks = {t.run_id: t.id for t in app.reviews.list(kind="check", limit=100)}
    (tmp_path / "tasks").write_text("".join(f"{tasks[h.id]}\n" for h in handles))

    deciders: dict[str, subprocess.Popen[bytes]] = {}
    pairs = (("approver", "approve", "rejecter"), ("rejecter", "reject", "approver"))
    try:
        # Each decides every task; they meet at a barrier before each one (see
        # review_decider.py), so every task is contended by both at the same moment.
        for name, outcome, rival in pairs:
            with (
                (tmp_path / f"{name}.out").open("wb") as out,
                (tmp_path / f"{name}.err").open("wb") as err,
            ):
                deciders[name] = subprocess.Popen(
                    [sys.executable, str(DECIDER), db_url, str(tmp_path), name, outcome, rival],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                )
        for name, proc in deciders.items():
            status = proc.wait(timeout=90)
            errors = (tmp_path / f"{name}.err").read_text()
            assert status == 0 and errors == "", f"{name} exited {status}:\n{errors}"
    finally:
        for proc in deciders.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    said = {
        name: dict(
            line.split(" ", 1)
            for line in (tmp_path / f"{name}.out").read_text().split("\n")
            if line
        )
        for name in deciders
    }
    winner: dict[str, str] = {}
    for run_id, task_id in tasks.items():
        answers = sorted(said[name][str(task_id)] for name in deciders)
        assert answers == ["conflict decided", "won"], (run_id, answers)
        winner[run_id] = next(n for n in deciders if said[n][str(task_id)] == "won")
    print("wins:", Counter(winner.values()))

    outcome_of = {"approver": "approve", "rejecter": "reject"}
    for handle in handles:
        n = int(handle.id.split("-")[1])
        expected = {"approve": f'approve {{"amount": {n}}}', "reject": "reject null"}
        assert handle.result(timeout=60) == expected[outcome_of[winner[handle.id]]]
        [record] = decision_records(app, handle.id)
        assert (record["outcome"], record["reviewer"]) == (
            outcome_of[winner[handle.id]],
            winner[handle.id],
        )
        task = app.reviews.get(tasks[handle.id])
        assert (task.state, task.reviewer) == ("decided", winner[handle.id])
        resumed = [
            e
            for e in app.get_run(handle.id).events
            if e.position is None and e.to_state == State.RUNNING
        ]
        assert len(resumed) == 2, handle.id  # claimed before the review and after it
    assert worker.stop() == 0, worker.stderr()
    assert "Traceback" not in worker.stderr()
    counts = starts(log_dir)
    assert counts == Counter({f"c-{n:02d}:{p}": 1 for n in range(TASKS) for p in (0, 2)})
    assert app.reviews.verify() == (TASKS, [])


@pytest.mark.slow
def test_a_due_time_passing_while_no_worker_runs_is_applied_by_the_next_worker(
    app: App, spawn: Spawn, log_dir: Path
) -> None:
    handle = app.start("expiring", 3, run_id="e-1")
    first = spawn()
    first.wait_until(lambda: handle.state == State.NEEDS_REVIEW, "the run parked for review")
    assert first.stop() == 0, first.stderr()
    [task] = app.reviews.list(run_id="e-1")
    assert task.due_at is not None and task.due_at - task.created_at == review_app.SLA

    # The due time passes with no worker anywhere: nothing applies it yet.
    wait_for(lambda: app.clock.now() > task.due_at + 0.5, "due time passing", timeout=10)
    assert app.reviews.get(task.id).state == "open"
    assert handle.state == State.NEEDS_REVIEW

    second = spawn()
    began = app.clock.now()
    assert handle.result(timeout=60) == "reject null"
    assert second.stop() == 0, second.stderr()
    assert "Traceback" not in first.stderr() + second.stderr()

    expired = app.reviews.get(task.id)
    assert (expired.state, expired.outcome, expired.comment) == ("expired", "reject", "SLA expired")
    [event] = [e for e in app.get_run("e-1").events if "decided: reject" in (e.reason or "")]
    assert f":{second.pid}:" in event.actor  # the new worker applied it...
    assert began <= event.at < began + 30  # ...as soon as it was up
    assert starts(log_dir) == {"e-1:0": 1, "e-1:2": 1}
    [record] = decision_records(app, "e-1")
    assert record["outcome"] == "reject"


@pytest.mark.slow
def test_review_events_reach_a_webhook_from_the_worker_and_the_deciding_process(
    db_url: str, log_dir: Path, spawn: Spawn, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = Receiver(time.time, [500])
    # The worker (spawned below) and this process's App read the notifier from here.
    monkeypatch.setenv("REVIEW_HOOK_URL", receiver.url)
    monkeypatch.setenv("REVIEW_HOOK_KEY", SECRET)
    app = review_app.build(db_url, log_dir)
    try:
        handle = app.start("reviewed", 5, 0.0, run_id="n-1")
        worker = spawn()
        # "created" is told by the worker that opened the task; refused once, retried.
        worker.wait_until(lambda: len(receiver.requests) == 2, "the created event, retried")
        [task] = app.reviews.list(run_id="n-1")
        app.reviews.decide(task.id, "reject", by="carol")
        # "decided" is told here, and delivered by the worker, which has the secret too.
        assert handle.result(timeout=60) == "reject null"
        worker.wait_until(lambda: len(receiver.requests) == 3, "the decided event")
        deliveries = app.list_runs(workflow=notify.WORKFLOW, limit=10)
        worker.wait_until(
            lambda: all(app.handle(d.id).state == State.SUCCESS for d in deliveries),
            "the deliveries finishing",
        )
        assert worker.stop() == 0, worker.stderr()
        assert [r["status"] for r in receiver.requests] == [500, 200, 200]
        assert all(r["signed"] for r in receiver.requests)
        events = receiver.events()
        assert [e["event"] for e in events] == ["created", "created", "decided"]
        assert events[2]["task"]["outcome"] == "reject" and events[2]["task"]["reviewer"] == "carol"
        # Every delivery ran in the worker process.
        for delivery in deliveries:
            [step] = app.get_run(delivery.id).steps
            assert all(f":{worker.pid}:" in a.worker for a in step.attempt_records)
        assert SECRET not in worker.stderr() and TOKEN not in worker.stderr()
        with app.store.reading() as cur:
            cur.execute("SELECT inputs FROM surestep_runs")
            stored = " ".join(str(inputs) for (inputs,) in cur.fetchall())
        assert "carol" in stored and SECRET not in stored and TOKEN not in stored
    finally:
        app.close()
        receiver.close()
