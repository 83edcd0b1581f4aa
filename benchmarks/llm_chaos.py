"""Documents through LLM steps against a model server that fails on purpose.

    python benchmarks/llm_chaos.py [--docs 500] [--workers 2] [--concurrency 8]
                                   [--fault-rate 0.2] [--seed 7] [--postgres URL]

Each document runs the workflow ``process_document``: ``extract`` (an LLM step with a
schema, a confidence field and a two-model fallback chain), ``validate`` (a plain step),
``summarize`` (a free-text LLM step). The model is ``surestep chaos-llm`` (in this
process, on 127.0.0.1), reached through the real ``openai`` SDK; --fault-rate is split
evenly over its six faults: timeouts, 5xx, 429s, bad JSON, schema drift and low
confidence. --workers real worker processes run the documents on one database (a SQLite
file, or PostgreSQL with --postgres) until every document has settled: succeeded, or
parked in review or the dead-letter queue.

Printed: documents completed, in review and dead-lettered (with the reasons); faults
injected and how many were recovered without a person (a fault is recovered when the
step it hit still produced an accepted answer); cost in total and per completed
document, and what was spent on replies not used (repairs, fallbacks); wall time; and the
engine's own time per model call (step attempt time not spent waiting for the model).
Targets: 0 documents lost, >= 95 % of transient faults recovered automatically.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel

from surestep import App, Retry, State
from surestep.llm.chaos import ChaosConfig, ChaosServer

TRANSIENT = ("timeout", "server_error", "rate_limited")
INVALID = ("invalid",)
SETTLED = (State.SUCCESS, State.FAILED, State.CANCELLED, State.NEEDS_REVIEW, State.DEAD_LETTER)


class Fields(BaseModel):
    title: str
    amount: float
    currency: str
    confidence: float


def build(url: str, model_url: str) -> App:
    """The App the workers run and the benchmark reads."""
    app = App(url)
    app.llm_provider("chaos", base_url=model_url)
    for model in ("large", "small", "writer"):
        app.llm_price(f"chaos:{model}", input_per_mtok=0.15, output_per_mtok=0.60)
    retry = Retry(max_attempts=6, initial_delay=0.2, max_delay=2.0)
    extract = app.llm_step(
        name="extract",
        schema=Fields,
        models=["chaos:large", "chaos:small"],
        prompt=lambda doc: f"Extract title, amount and currency from: {doc}",
        timeout=1.0,
        max_repairs=2,
        retry=retry,
        confidence="confidence",
        min_confidence=0.7,
        review={"groups": ["ops"]},
        on_exhausted="review",
    )
    summarize = app.llm_step(
        name="summarize",
        models=["chaos:writer"],
        prompt=lambda doc, title: f"Summarize '{title}': {doc}",
        timeout=1.0,
        retry=retry,
        max_tokens=60,
    )

    @app.step(name="validate")
    def validate(fields: dict[str, Any]) -> str:
        if not fields["title"]:
            raise ValueError("no title")
        return str(fields["title"])

    @app.workflow(name="process_document")
    def process_document(doc: str) -> str:
        fields = extract(doc)
        title = validate(fields.model_dump())
        return str(summarize(doc, title))

    return app


def serve(url: str, model_url: str, concurrency: int) -> None:
    """A worker process (``--serve``): runs until SIGTERM."""
    app = build(url, model_url)
    try:
        app.worker(concurrency=concurrency, poll_interval=0.02).run()
    finally:
        app.close()


def database(args: argparse.Namespace, workdir: Path) -> tuple[str, str | None]:
    if not args.postgres:
        return f"sqlite:///{workdir / 'chaos.db'}", None
    import psycopg

    schema = f"bench_chaos_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.postgres, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in args.postgres else "?"
    return f"{args.postgres}{separator}options={quote(f'-csearch_path={schema}')}", schema


def drop(args: argparse.Namespace, schema: str | None) -> None:
    if schema is not None:
        import psycopg

        with psycopg.connect(args.postgres, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def run(args: argparse.Namespace) -> dict[str, Any]:
    share = args.fault_rate / 6
    config = ChaosConfig(
        seed=args.seed,
        timeout_rate=share,
        error_rate=share,
        rate_limit_rate=share,
        bad_json_rate=share,
        schema_drift_rate=share,
        low_confidence_rate=share,
        timeout_seconds=3.0,
        retry_after=1.0,
    )
    with tempfile.TemporaryDirectory() as tmp, ChaosServer(config) as server:
        url, schema = database(args, Path(tmp))
        app = build(url, server.url)
        _ = app.store  # migrate before the workers start
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--serve", url, server.url, str(args.concurrency)]
            )
            for _ in range(args.workers)
        ]
        try:
            started = time.perf_counter()
            handles = [app.start("process_document", doc(n)) for n in range(args.docs)]
            settle(app, handles, args.timeout)
            wall = time.perf_counter() - started
            figures = measure(app, handles, server.stats(), wall)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)
            app.close()
            drop(args, schema)
    return figures


def doc(n: int) -> str:
    words = ("invoice", "order", "refund", "contract", "receipt", "claim", "quote", "memo")
    return f"{words[n % len(words)]} {n}: ACME Corp bills {100 + n} EUR for services rendered"


def settle(app: App, handles: list[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = Counter(h.state for h in handles)
        if sum(states[s] for s in SETTLED) == len(handles):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"not settled within {timeout}s: {dict(states)}")
        time.sleep(0.5)


def measure(app: App, handles: list[Any], chaos: dict[str, Any], wall: float) -> dict[str, Any]:
    runs = [app.get_run(h.id) for h in handles]
    calls = [call for h in handles for call in app.llm.ledger.calls(h.id)]
    answered = {(c.run_id, c.position) for c in calls if c.chosen}
    faults = [c for c in calls if c.outcome in TRANSIENT + INVALID]
    recovered = [c for c in faults if (c.run_id, c.position) in answered]
    transient = [c for c in faults if c.outcome in TRANSIENT]
    transient_ok = [c for c in transient if (c.run_id, c.position) in answered]
    states = Counter(run.state for run in runs)
    review_reasons = Counter(
        task.context.get("reason", "?") if task.context else "?" for task in app.reviews.list()
    )
    dead_reasons = Counter(
        (run.error or {}).get("type", "?").rsplit(".", 1)[-1]
        for run in runs
        if run.state == State.DEAD_LETTER
    )
    completed = states[State.SUCCESS]
    cost = sum(c.cost_usd for c in calls)
    attempts = [
        a
        for run in runs
        for step in run.steps
        if step.name in ("extract", "summarize")
        for a in step.attempt_records
    ]
    step_time = sum(a.finished_at - a.started_at for a in attempts if a.finished_at)
    model_time = sum(c.latency for c in calls)
    return {
        "documents": len(handles),
        "completed": completed,
        "in_review": states[State.NEEDS_REVIEW],
        "review_reasons": dict(review_reasons),
        "dead_letter": states[State.DEAD_LETTER],
        "dead_letter_reasons": dict(dead_reasons),
        "failed": states[State.FAILED],
        "lost": len(handles) - sum(states[s] for s in SETTLED),
        "chaos": chaos,
        "calls": len(calls),
        "faults_seen": len(faults),
        "faults_recovered": len(recovered),
        "transient_seen": len(transient),
        "transient_recovered": len(transient_ok),
        "cost_usd": cost,
        "cost_per_completed_usd": cost / completed if completed else None,
        "unused_cost_usd": sum(c.cost_usd for c in calls if not c.chosen),
        "unused_tokens": sum(c.input_tokens + c.output_tokens for c in calls if not c.chosen),
        "wall_seconds": wall,
        "engine_ms_per_call": 1000 * max(0.0, step_time - model_time) / max(1, len(calls)),
        "model_latency_p50_ms": 1000 * statistics.median([c.latency for c in calls]),
    }


def report(f: dict[str, Any]) -> None:
    pct = lambda part, whole: f"{100 * part / whole:.1f} %" if whole else "n/a"  # noqa: E731
    print(
        f"documents: {f['documents']}  completed {f['completed']}  in review "
        f"{f['in_review']} {f['review_reasons']}  dead letter {f['dead_letter']} "
        f"{f['dead_letter_reasons']}  failed {f['failed']}  lost {f['lost']}"
    )
    injected = f["chaos"]["faults"]
    print(f"chaos server: {f['chaos']['requests']} requests, faults injected {injected}")
    print(
        f"model calls recorded: {f['calls']}; faults seen by steps {f['faults_seen']} "
        f"(transient {f['transient_seen']}, invalid replies "
        f"{f['faults_seen'] - f['transient_seen']})"
    )
    print(
        f"recovered without a person: transient {f['transient_recovered']}/"
        f"{f['transient_seen']} = {pct(f['transient_recovered'], f['transient_seen'])}; "
        f"all faults {f['faults_recovered']}/{f['faults_seen']} = "
        f"{pct(f['faults_recovered'], f['faults_seen'])}"
    )
    per = f["cost_per_completed_usd"]
    print(
        f"cost: ${f['cost_usd']:.4f} total, "
        f"{'n/a' if per is None else f'${per:.6f}'} per completed document; "
        f"${f['unused_cost_usd']:.4f} on replies not used ({f['unused_tokens']} tokens)"
    )
    print(
        f"wall: {f['wall_seconds']:.1f} s; model call p50 {f['model_latency_p50_ms']:.1f} ms;"
        f" engine time per call (mean) {f['engine_ms_per_call']:.2f} ms"
    )
    seen = f["transient_seen"]
    target = f["lost"] == 0 and (not seen or f["transient_recovered"] / seen >= 0.95)
    print("targets (0 lost, >= 95 % transient recovered):", "met" if target else "MISSED")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL (default: SQLite)")
    report(run(parser.parse_args()))


if __name__ == "__main__":
    main()
