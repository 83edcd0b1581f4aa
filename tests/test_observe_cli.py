"""`surestep metrics` scraped over real HTTP from a real process, the API's /metrics
behind a token, and `surestep top --once` / `surestep stats --json`, on both databases."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_api import serving
from test_cli import invoke
from test_cluster_figures import workload

from surestep import App, FakeClock


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def metrics_process(url: str, port: int, log: Path) -> Iterator[str]:
    executable = Path(sys.executable).parent / "surestep"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(executable), "metrics", "--port", str(port), "--since", "1d", "--db", url],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield f"http://127.0.0.1:{port}/metrics"
        finally:
            process.terminate()
            process.wait(10)


def scrape(address: str, log: Path, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(address, timeout=5)
            response.raise_for_status()
            return response.text
        except httpx.TransportError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.slow
def test_surestep_metrics_serves_the_gauges_over_http(
    app: App, clock: FakeClock, db_url: str, tmp_path: Path
) -> None:
    workload(app, clock)
    with metrics_process(db_url, free_port(), tmp_path / "metrics.log") as address:
        text = scrape(address, tmp_path / "metrics.log")
    found = samples(text)
    assert found[("surestep_dead_letter_runs", (("workflow", "parked"),))] == 1
    assert found[("surestep_runs", (("state", "needs_review"), ("workflow", "invoice")))] == 2
    assert found[("surestep_runs", (("state", "pending"), ("workflow", "etl")))] == 1
    assert found[("surestep_review_open", (("kind", "approve_invoice"),))] == 2
    assert ("surestep_oldest_due_seconds", (("workflow", "etl"),)) in found
    assert found[("surestep_window_seconds", ())] == 86400
    # The real clock is far past the FakeClock's: every review is overdue by now.
    assert found[("surestep_review_overdue", (("kind", "approve_invoice"),))] == 2


def test_the_apis_metrics_need_an_operator_token(app: App, clock: FakeClock) -> None:
    workload(app, clock)
    operator = app.users.add("olga", "operator")
    reviewer = app.users.add("rita", "reviewer", ["finance"])
    with serving(app) as base:
        assert httpx.get(f"{base}/metrics").status_code == 401
        bad = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401
        low = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {reviewer}"})
        assert low.status_code == 403
        ok = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {operator}"})
    assert ok.status_code == 200 and ok.headers["content-type"].startswith("text/plain")
    found = samples(ok.text)
    assert found[("surestep_review_overdue", (("kind", "approve_invoice"),))] == 1
    # The decision was over an hour ago, outside the default window: no ratio to show.
    assert ("surestep_review_override_ratio", (("kind", "approve_invoice"),)) not in found
    assert found[("surestep_window_seconds", ())] == 3600


def test_stats_json_and_top_once(app: App, clock: FakeClock, db_url: str) -> None:
    workload(app, clock)
    app.close()  # the CLI reads with the real clock: a wide window keeps the workload in
    result = invoke("stats", "--since", "10000d", "--json", "--db", db_url)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["workflows"]["etl"]["runs"]["pending"] == 1
    assert data["workflows"]["etl"]["finished"] == 3
    assert data["dead_letter"] == {"doomed": 0, "etl": 0, "invoice": 0, "parked": 1}
    assert data["review_open"] == {"approve_invoice": 2}
    assert (data["failed_attempts"], data["recovered_attempts"]) == (6, 3)
    flaky = next(s for s in data["steps"] if s["step"].endswith("flaky"))
    assert (flaky["attempts"], flaky["retries"], flaky["failed"]) == (6, 3, 3)

    result = invoke("top", "--once", "--since", "10000d", "--db", db_url)
    assert result.exit_code == 0, result.output
    for text in ("etl", "parked", "invoice", "approve_invoice", "auto-recovery 0.50"):
        assert text in result.output


def test_stats_and_top_show_model_calls_cost_and_drift(app: App, db_url: str) -> None:
    from test_llm_quality import BIG, drifting, three_runs

    from surestep.testing import FakeLLM

    three_runs(app, FakeLLM())
    app.close()
    live = App(db_url)  # the CLI judges drift by the real clock: answers of the last hour
    try:
        drifting(live, live.clock.now())
    finally:
        live.close()
    result = invoke("stats", "--since", "10000d", "--json", "--db", db_url)
    assert result.exit_code == 0, result.output
    llm = json.loads(result.output)["llm"]
    assert llm["calls"]["invoice"]["fake:big"] == {"invalid": 2, "ok": 1, "review": 1}
    assert llm["cost_usd"]["invoice"] == pytest.approx(4 * BIG)
    assert llm["cost_per_success_usd"] == {"invoice": pytest.approx(3 * BIG / 2)}
    assert llm["confidence"]["extract_invoice"]["fake:big"]["answers"] == 2
    [report] = llm["drift"]
    assert (report["step"], report["model"], report["drifted"]) == ("extract", "fake:big", True)
    assert (report["recent_n"], report["reference_n"]) == (40, 100)
    assert llm["drift_settings"]["threshold"] == 0.2

    result = invoke("top", "--once", "--since", "10000d", "--db", db_url)
    assert result.exit_code == 0, result.output
    for text in ("model calls", "invalid 2", "$0.0300", "extract_invoice", "DRIFTED"):
        assert text in result.output, text
