"""Crash test on PostgreSQL: several worker processes share one database, and some are
killed with SIGKILL while the others keep going.

What the engine promises, and so what is asserted (see ``pg_history.py`` for how each
is read from the event log and the side-effect logs):

* Every run finishes, with the right output, however its workers died.
* No run is executed by two workers at once: its holds (claim to the next transition
  out of running) never overlap, and every step attempt was recorded by the worker that
  held the run at that moment.
* A step whose checkpoint committed is never executed again.
* A step in flight when its worker died has no checkpoint and is executed again by the
  worker that recovers the run: at most one such step per run the killed worker held,
  so at most ``concurrency`` per kill.
* A killed worker's runs are taken back at once by the workers on its host, which see
  its process is gone, not after its leases lapse.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pg_app  # siblings in tests/integration
import pg_history
import pg_workers
import pytest

from surestep import RunRecord, State

RUNS = 2000
STEPS = 10
WORKERS = 4
KILLS = 2
CONCURRENCY = 8


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[pg_workers.Workers]:
    started = pg_workers.Workers(tmp_path)
    yield started
    started.cleanup()


def _run_id(i: int) -> str:
    return f"run-{i:04d}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_sigkilled_workers_on_postgres_lose_no_run_and_overlap_no_run(
    postgres_schema_url: str, workers: pg_workers.Workers
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    about = f"(random seed {seed})"
    began = time.monotonic()
    app = pg_app.build(postgres_schema_url, workers.log_dir)
    try:
        for i in range(RUNS):
            app.start("chain", i, STEPS, run_id=_run_id(i))
        started = time.monotonic()

        # A lease far longer than the heartbeat: a survivor never loses a run, so every
        # takeover here is the recovery of a killed worker's run.
        procs = [
            workers.start(
                pg_app.worker_argv(
                    postgres_schema_url,
                    workers.log_dir,
                    concurrency=CONCURRENCY,
                    lease_seconds=15.0,
                    heartbeat_interval=0.5,
                    step_sleep=(0.001, 0.005),
                )
            )
            for _ in range(WORKERS)
        ]
        killed = procs[:KILLS]
        for worker in killed:
            # Kill after the worker has done some work, not after a fixed time.
            target = rng.randint(200, 800)
            worker.wait_until(lambda w=worker, t=target: w.starts() >= t, f"{target} starts")
            time.sleep(rng.uniform(0.0, 0.02))
            worker.kill()
        counts = app.store.count_by_state()
        assert counts.get(State.SUCCESS, 0) < RUNS, f"the kills landed too late {about}"

        survivors = procs[KILLS:]
        deadline = time.monotonic() + 240
        while app.store.count_by_state() != {State.SUCCESS: RUNS}:
            for worker in survivors:
                assert worker.proc.poll() is None, worker.stderr()
            assert time.monotonic() < deadline, f"{app.store.count_by_state()} {about}"
            time.sleep(0.1)
        finished = time.monotonic()
        for worker in survivors:
            assert worker.stop() == 0, worker.stderr()
        for worker in procs:
            assert "Traceback" not in worker.stderr(), worker.stderr()

        with ThreadPoolExecutor(6) as pool:
            records: list[RunRecord] = list(pool.map(app.get_run, map(_run_id, range(RUNS))))
    finally:
        app.close()

    history = pg_history.check_executions(
        records,
        workers.logs(),
        steps=STEPS,
        step_output=lambda record, i: pg_app.step_output(record.inputs["seed"], i),
        run_output=lambda record: pg_app.chain_output(record.inputs["seed"], STEPS),
    )

    killed_ids = {worker.pid for worker in killed}
    lost = history.lost_holds
    assert lost, f"no run was ever recovered from a killed worker {about}"
    for hold in lost:
        assert pg_workers.pid_of(hold.worker) in killed_ids, f"{hold} {about}"
        assert hold.exit is not None
        # Taken back because its process had gone, by another worker (a survivor, or
        # the other killed worker before its own kill).
        assert hold.exit.reason == f"worker {hold.worker} is gone (its process has exited)"
        recoverer = pg_workers.pid_of(hold.exit.actor)
        assert recoverer in {w.pid for w in procs} and recoverer != pg_workers.pid_of(hold.worker)
    # Steps executed and never committed: those in flight at a kill, one per run the
    # killed worker held at most (pg_history checks that), so at most CONCURRENCY.
    for worker in killed:
        mine = [u for u in history.uncommitted if u[1] == worker.pid]
        assert len(mine) <= CONCURRENCY, f"worker {worker.pid}: {mine} {about}"
    assert all(u[1] in killed_ids for u in history.uncommitted), history.uncommitted
    assert history.uncommitted, f"no kill interrupted a step; the test proved nothing {about}"

    print(
        f"\n{RUNS} runs x {STEPS} steps, {WORKERS} workers, {KILLS} killed: started in "
        f"{started - began:.1f}s, finished {finished - started:.1f}s later; "
        f"{len(lost)} runs recovered, {len(history.uncommitted)} steps re-executed {about}"
    )
