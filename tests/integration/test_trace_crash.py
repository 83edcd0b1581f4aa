"""Traces across a crash: a real worker process is SIGKILLed mid-run and another
resumes the run; every span of the run, from all three processes, is in one trace."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import processes  # siblings in tests/integration
import pytest
import trace_app

from surestep import State

TRACE_APP = Path(__file__).with_name("trace_app.py")


def worker(tmp_path: Path, name: str) -> processes.WorkerProcess:
    argv = [sys.executable, str(TRACE_APP), str(tmp_path / "runs.db"), str(tmp_path / "logs")]
    return processes.WorkerProcess(argv, tmp_path / "logs", tmp_path / f"{name}.err")


@pytest.mark.slow
def test_a_run_resumed_after_a_sigkill_is_one_trace(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    app = trace_app.build(tmp_path / "runs.db", logs)
    try:
        handle = app.start("slow_steps", run_id="traced-1")
        first = worker(tmp_path, "first")
        try:
            # Killed once two steps' spans are out, so every checkpointed step has its
            # span: one checkpointed but killed before its span was exported (a window
            # of microseconds) would be replayed by the second worker, with no span.
            spans_file = logs / f"spans-{first.pid}.jsonl"
            first.wait_until(
                lambda: spans_file.exists() and spans_file.read_text().count("\n") >= 2,
                "two steps' spans exported",
            )
        finally:
            first.kill()
        assert handle.state != State.SUCCESS, "the kill landed after the run finished"
        second = worker(tmp_path, "second")
        assert handle.result(timeout=60) == sum(range(trace_app.STEPS))
        assert second.stop() == 0, second.stderr()
    finally:
        app.close()

    (start,) = trace_app.spans(logs, os.getpid())
    assert start["name"] == "surestep.start slow_steps"
    killed, resumed = trace_app.spans(logs, first.pid), trace_app.spans(logs, second.pid)
    # The killed worker's slice span was still open: only its ended attempts survive.
    assert killed and all(s["name"] == "surestep.step slow" for s in killed)
    everything = [start, *killed, *resumed]
    assert {s["trace_id"] for s in everything} == {start["trace_id"]}
    (slice_,) = [s for s in resumed if s["name"] == "surestep.run slow_steps"]
    assert slice_["parent_id"] == start["span_id"]
    done = {
        s["attributes"]["surestep.step.position"]  # type: ignore[index]
        for s in everything
        if s["name"] == "surestep.step slow"
        and s["attributes"]["surestep.step.outcome"] == "success"  # type: ignore[index]
    }
    assert done == set(range(trace_app.STEPS))
