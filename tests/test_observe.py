"""Per-process metrics and event logs: in process against a fresh registry, and from a
real ``surestep worker`` process scraped over HTTP, on both databases."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from surestep import App, Retry, State
from surestep.observe.logs import EventLog, JsonFormatter
from surestep.observe.metrics import WorkerMetrics
from surestep.testing import drive, run_workflow

# -- in process ----------------------------------------------------------------------------


def test_worker_metrics_count_attempts_retries_claims_and_finished_runs(app: App) -> None:
    metrics = WorkerMetrics()
    unsubscribe = app.hooks.subscribe(metrics)
    calls = {"n": 0}

    @app.step(retry=Retry(max_attempts=3, initial_delay=1, jitter=False))
    def flaky() -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("down")
        return 1

    @app.step(retry=Retry(max_attempts=2, initial_delay=1, jitter=False))
    def doomed() -> None:
        raise ValueError("never")

    @app.workflow()
    def ok() -> int:
        return flaky()

    @app.workflow()
    def bad() -> None:
        doomed()

    assert run_workflow(app, ok).result() == 1
    assert run_workflow(app, bad).state == State.DEAD_LETTER
    unsubscribe()
    run_workflow(app, ok)  # unsubscribed: counts nothing more

    value = metrics.registry.get_sample_value
    assert (
        value("surestep_step_attempts_total", dict(workflow="ok", step="flaky", outcome="waiting"))
        == 1
    )
    assert (
        value("surestep_step_attempts_total", dict(workflow="ok", step="flaky", outcome="success"))
        == 1
    )
    assert (
        value(
            "surestep_step_attempts_total",
            dict(workflow="bad", step="doomed", outcome="dead_letter"),
        )
        == 1
    )
    assert (
        value(
            "surestep_step_duration_seconds_count",
            dict(workflow="ok", step="flaky", outcome="success"),
        )
        == 1
    )
    assert (
        value("surestep_retries_total", dict(workflow="ok", step="flaky", error="ConnectionError"))
        == 1
    )
    assert (
        value("surestep_retries_total", dict(workflow="bad", step="doomed", error="ValueError"))
        == 1
    )
    assert value("surestep_runs_finished_total", dict(workflow="ok", state="success")) == 1
    assert value("surestep_runs_finished_total", dict(workflow="bad", state="dead_letter")) == 1
    # Claimed when started, and again when each retry came due: 2 + 2.
    assert value("surestep_claim_lag_seconds_count", dict(workflow="ok")) == 2
    assert value("surestep_claim_lag_seconds_count", dict(workflow="bad")) == 2
    # Nothing in the process-wide default registry.
    from prometheus_client import REGISTRY

    assert (
        REGISTRY.get_sample_value(
            "surestep_runs_finished_total", dict(workflow="ok", state="success")
        )
        is None
    )


def test_error_names_are_bounded_per_step(app: App) -> None:
    metrics = WorkerMetrics()
    app.hooks.subscribe(metrics)
    kinds = [type(f"Error{i}", (Exception,), {}) for i in range(25)]

    # Each attempt raises the next error type.
    counter = {"i": 0}

    @app.step(retry=Retry(max_attempts=26, initial_delay=0.001, jitter=False))
    def rotating() -> None:
        counter["i"] += 1
        raise kinds[(counter["i"] - 1) % 25]("x")

    @app.workflow()
    def spin() -> None:
        rotating()

    handle = run_workflow(app, spin)
    assert handle.state == State.DEAD_LETTER
    names = {
        sample.labels["error"]
        for family in metrics.registry.collect()
        if family.name == "surestep_retries"
        for sample in family.samples
        if sample.name == "surestep_retries_total"
    }
    assert len(names) == 21 and "other" in names


def test_slot_gauge_reads_busy_at_scrape() -> None:
    metrics = WorkerMetrics()
    busy = {"n": 3}
    metrics.track_slots(lambda: busy["n"], 8)
    assert metrics.registry.get_sample_value("surestep_worker_slots", {"state": "busy"}) == 3
    busy["n"] = 5
    assert metrics.registry.get_sample_value("surestep_worker_slots", {"state": "free"}) == 3


def test_event_log_lines_carry_ids_and_no_error_messages(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    @app.step(retry=Retry(max_attempts=2, initial_delay=1, jitter=False))
    def doomed(secret: str) -> None:
        raise ValueError(f"card {secret} declined")

    @app.workflow()
    def pay() -> None:
        doomed("4111-1111")

    with caplog.at_level(logging.INFO, logger="surestep.events"):
        handle = run_workflow(app, pay, run_id="pay-1")
    assert handle.state == State.DEAD_LETTER
    events = [r for r in caplog.records if r.name == "surestep.events"]
    retry = next(r for r in events if "attempt 2 in" in r.getMessage())
    assert (retry.run_id, retry.workflow, retry.step, retry.attempt) == (
        "pay-1",
        "pay",
        "doomed",
        1,
    )  # type: ignore[attr-defined]
    dead = next(r for r in events if "dead-lettered" in r.getMessage())
    assert (dead.run_id, dead.workflow, dead.state) == ("pay-1", "pay", "dead_letter")  # type: ignore[attr-defined]
    assert "4111" not in caplog.text
    line = json.loads(JsonFormatter().format(retry))
    assert line["run_id"] == "pay-1" and line["level"] == "INFO" and line["step"] == "doomed"
    assert line["logger"] == "surestep.events" and line["ts"].endswith("Z")


def test_one_event_log_per_app_however_many_workers(app: App) -> None:
    @app.workflow()
    def wf() -> int:
        return 1

    run_workflow(app, wf)
    drive(app, until=lambda: True)
    assert not any(isinstance(getattr(h, "__self__", None), EventLog) for h in app.hooks.on_retry)


# -- a real worker process -----------------------------------------------------------------

MODULE = """
from pathlib import Path

from surestep import App, Retry, request_review

app = App({url!r})
FAST = Retry(max_attempts=2, initial_delay=0.05, jitter=False)


@app.step(retry=FAST)
def fetch() -> str:
    marker = Path(__file__).with_name("failed-once")
    if not marker.exists():
        marker.touch()
        raise ConnectionError("first attempt fails")
    return "fetched"


@app.step(retry=FAST, on_exhausted="dead_letter")
def charge() -> None:
    raise ValueError("card declined")


@app.workflow()
def recovers() -> str:
    return fetch()


@app.workflow()
def doomed() -> None:
    charge()


@app.workflow()
def reviewed() -> str:
    return str(request_review({{"amount": 12}}, kind="refund").value)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def worker_project(tmp_path: Path, db_url: str) -> Iterator[tuple[App, Path]]:
    (tmp_path / "jobs.py").write_text(textwrap.dedent(MODULE.format(url=db_url)))
    client = App(db_url)
    for name in ("recovers", "doomed", "reviewed"):
        client.workflow(name=name)(_not_here)
    yield client, tmp_path
    client.close()


def _not_here() -> None:
    raise AssertionError("the worker executes this, not the test")


@contextmanager
def worker_process(cwd: Path, *options: str) -> Iterator[subprocess.Popen[bytes]]:
    executable = Path(sys.executable).parent / "surestep"
    with (cwd / "worker.log").open("wb") as log:
        process = subprocess.Popen(
            [str(executable), "worker", "jobs:app", "--poll", "0.05", *options],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not true within {timeout}s"
        time.sleep(0.05)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _workload(client: App) -> tuple[str, str, str]:
    ok = client.start("recovers", run_id="ok-1").id
    bad = client.start("doomed", run_id="bad-1").id
    review = client.start("reviewed", run_id="rev-1").id
    return ok, bad, review


def _settled(client: App, ok: str, bad: str, review: str) -> bool:
    return (
        client.get_run(ok).state == State.SUCCESS
        and client.get_run(bad).state == State.DEAD_LETTER
        and client.get_run(review).state == State.NEEDS_REVIEW
    )


@pytest.mark.slow
def test_a_worker_process_serves_its_metrics(worker_project: tuple[App, Path]) -> None:
    client, cwd = worker_project
    ok, bad, review = _workload(client)
    port = free_port()
    with worker_process(cwd, "--metrics-port", str(port), "--concurrency", "4") as process:
        wait_for(lambda: _settled(client, ok, bad, review))
        wait_for(
            lambda: (
                (
                    "surestep_runs_finished_total",
                    frozenset({("workflow", "doomed"), ("state", "dead_letter")}),
                )
                in scrape(port)
            )
        )
        samples = scrape(port)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset(labels.items())))

    attempts = "surestep_step_attempts_total"
    assert value(attempts, workflow="recovers", step="fetch", outcome="waiting") == 1
    assert value(attempts, workflow="recovers", step="fetch", outcome="success") == 1
    assert value(attempts, workflow="doomed", step="charge", outcome="waiting") == 1
    assert value(attempts, workflow="doomed", step="charge", outcome="dead_letter") == 1
    retries = "surestep_retries_total"
    assert value(retries, workflow="recovers", step="fetch", error="ConnectionError") == 1
    assert value(retries, workflow="doomed", step="charge", error="ValueError") == 1
    finished = "surestep_runs_finished_total"
    assert value(finished, workflow="recovers", state="success") == 1
    assert value(finished, workflow="doomed", state="dead_letter") == 1
    assert value(finished, workflow="reviewed", state="needs_review") is None  # parked, not settled
    assert value("surestep_claim_lag_seconds_count", workflow="recovers") == 2
    assert value("surestep_claim_lag_seconds_count", workflow="reviewed") == 1
    duration = value(
        "surestep_step_duration_seconds_count", workflow="recovers", step="fetch", outcome="success"
    )
    assert duration == 1
    busy = value("surestep_worker_slots", state="busy")
    free = value("surestep_worker_slots", state="free")
    assert busy is not None and free is not None and busy + free == 4
    assert not any("run_id" in dict(labels) for _, labels in samples)


@pytest.mark.slow
def test_a_worker_process_logs_json_lines_with_the_ids(worker_project: tuple[App, Path]) -> None:
    client, cwd = worker_project
    ok, bad, review = _workload(client)
    with worker_process(cwd, "--log-format", "json") as process:
        wait_for(lambda: _settled(client, ok, bad, review))
        time.sleep(0.2)  # the hooks run just after the commit the client saw
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0

    lines = [json.loads(line) for line in (cwd / "worker.log").read_text().splitlines()]
    assert all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    events = [line for line in lines if line["logger"] == "surestep.events"]
    retry = next(e for e in events if e.get("run_id") == ok and "attempt 2" in e["message"])
    assert retry["step"] == "fetch" and retry["workflow"] == "recovers" and retry["attempt"] == 1
    assert retry["level"] == "INFO" and retry["worker"].count(":") >= 2
    dead = next(e for e in events if e.get("run_id") == bad and "dead-lettered" in e["message"])
    assert dead["workflow"] == "doomed" and dead["state"] == "dead_letter"
    opened = next(e for e in events if e.get("run_id") == review and "opened" in e["message"])
    assert opened["workflow"] == "reviewed"
    assert "card declined" not in (cwd / "worker.log").read_text()
