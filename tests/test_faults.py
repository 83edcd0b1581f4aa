"""Faults found by fault injection: zombies, recovered runs' place in the queue, locked
SQLite databases, SystemExit from user code, and skewed clocks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from surestep import App, FakeClock, State
from surestep.storage import open_store
from surestep.testing import drive

# Claims the one pending run of workflow "wf" as a worker of this host would, then exits.
_CLAIM_AND_EXIT = """
import os, sys
from surestep.engine.worker import host_key
from surestep.storage import open_store

store = open_store(sys.argv[1])
owner = f"{host_key()}:{os.getpid()}:zombie"
claimed = store.claim(owner, [("wf", "1")], 1, float(sys.argv[2]), 3600.0)
assert len(claimed) == 1, claimed
store.close()
"""


def _wait_until_zombie(pid: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat[stat.rfind(")") + 1 :].split()[0] == "Z":
            return
        time.sleep(0.02)
    raise AssertionError(f"process {pid} did not exit within {timeout}s")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_runs_of_a_zombie_worker_are_taken_over_at_once(
    app: App, db_url: str, clock: FakeClock
) -> None:
    @app.workflow(name="wf")
    def wf() -> str:
        return "done"

    handle = app.start(wf)
    # A real process of this host claims the run under an hour-long lease and exits;
    # it is not reaped (no wait()), so it stays a zombie while the worker looks.
    child = subprocess.Popen([sys.executable, "-c", _CLAIM_AND_EXIT, db_url, str(clock.now())])
    try:
        _wait_until_zombie(child.pid)
        run = app.get_run(handle.id)
        assert run.state == State.RUNNING and run.lease_owner is not None
        assert f":{child.pid}:" in run.lease_owner
        drive(app, until=lambda: handle.state == State.SUCCESS, timeout=10)
    finally:
        child.wait()
    assert handle.result() == "done"
    assert any(
        e.reason and f":{child.pid}:zombie is gone" in e.reason
        for e in app.get_run(handle.id).events
    )


@pytest.mark.parametrize("why", ["recovery", "shutdown"])
def test_a_released_run_keeps_its_place_in_the_queue(db_url: str, why: str) -> None:
    store = open_store(db_url)
    try:
        store.create_run("early", "wf", "1", "{}", 1.0, "me")
        (claimed,) = store.claim("w1", [("wf", "1")], 1, 2.0, 30.0)
        for i in range(20):  # a backlog arrives while it runs
            store.create_run(f"later-{i:02}", "wf", "1", "{}", 3.0 + i, "me")
        if why == "recovery":
            assert store.expired_leases(40.0) == [("early", claimed.token, "w1")]
            released = store.release(
                [("early", claimed.token)], "w2", "lease expired", 40.0, max_recoveries=5
            )
        else:
            released = store.release([("early", claimed.token)], "w1", "shut down", 40.0)
        assert released == 1
        assert store.get_run("early").available_at == 1.0  # its original due time
        (first,) = store.claim("w2", [("wf", "1")], 1, 41.0, 30.0)
        assert first.id == "early"
    finally:
        store.close()
