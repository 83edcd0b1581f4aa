"""``surestep metrics``, ``stats`` and ``top``: the cluster-wide figures of a database.

``metrics`` serves them to Prometheus; ``stats`` prints them once as a report (or JSON);
``top`` redraws them every second. All three read the same :class:`ClusterFigures`.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.live import Live

from surestep.app import DEFAULT_DATABASE_URL, App
from surestep.cli.common import AsJson, Db, library_errors, opened, parse_age
from surestep.cli.observe_render import frame
from surestep.observe.cluster import UNFINISHED, ClusterFigures, Figures
from surestep.observe.timings import StepTimings
from surestep.render import echo_json, new_console

Since = Annotated[
    str, typer.Option("--since", help="The window of rates and timings: 30m, 1h, 1d, ...")
]


def register(app: typer.Typer) -> None:
    """Add this group's commands to the ``surestep`` command."""
    app.command()(metrics)
    app.command()(stats)
    app.command()(top)


def metrics(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 9465,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 for every interface.")
    ] = "127.0.0.1",
    since: Since = "1h",
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Serve the cluster-wide gauges (runs by state, queue lag, dead letters, reviews) at
    http://HOST:PORT/metrics for Prometheus, until Ctrl-C."""
    window = parse_age(since, "--since").total_seconds()
    with library_errors():
        from surestep.observe.collector import serve_cluster_metrics

    with opened(db) as surestep_app:
        with library_errors():
            serve_cluster_metrics(surestep_app, port, host, window)
        typer.echo(f"surestep metrics on http://{host}:{port}/metrics; Ctrl-C stops it")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def stats(since: Since = "1h", as_json: AsJson = False, db: Db = DEFAULT_DATABASE_URL) -> None:
    """A report of the cluster-wide figures over a window: runs by state, throughput,
    queue lag, step p50/p95, retries, dead letters, reviews, model calls and cost per
    successful run, confidence of the answers used and its drift."""
    window = parse_age(since, "--since").total_seconds()
    with opened(db) as surestep_app, library_errors():
        data = report(surestep_app, window)
    if as_json:
        echo_json(data)
    else:
        new_console().print(frame(data))


def top(
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    since: Since = "1h",
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """A live view of the cluster-wide figures per workflow, redrawn every second
    (Ctrl-C stops it)."""
    window = parse_age(since, "--since").total_seconds()
    console = new_console()
    with opened(db) as surestep_app, library_errors():
        if once:
            console.print(frame(report(surestep_app, window)))
            return
        with Live(console=console, refresh_per_second=4, screen=False) as live:
            try:
                while True:
                    live.update(frame(report(surestep_app, window)))
                    time.sleep(1.0)
            except KeyboardInterrupt:
                pass


def report(app: App, window: float) -> dict[str, Any]:
    """The figures and step timings as one JSON-ready dict, per workflow."""
    figures = ClusterFigures(app.store, app.clock, window).read()
    timings = StepTimings(app.store).since(figures.at - window)
    data = figures.as_dict()
    data["workflows"] = {w: _workflow(figures, w) for w in figures.workflows}
    data["steps"] = [
        {
            "workflow": t.workflow,
            "step": t.step,
            "attempts": t.attempts,
            "retries": t.retries,
            "failed": t.failed,
            "p50_seconds": t.p50_seconds,
            "p95_seconds": t.p95_seconds,
        }
        for t in timings
    ]
    return data


def _workflow(f: Figures, workflow: str) -> dict[str, Any]:
    finished = sum(n for (w, _), n in f.finished.items() if w == workflow)
    return {
        "runs": {s: f.runs.get((workflow, s), 0) for s in UNFINISHED},
        "finished": finished,
        "throughput_per_minute": finished / (f.window / 60) if f.window else None,
        "oldest_due_seconds": f.oldest_due.get(workflow, 0.0),
        "dead_letter": f.dead_letters(workflow),
        "review_needed": f.review_needed.get(workflow),
    }
