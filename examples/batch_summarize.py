"""Batch summarization against a model that fails on purpose, offline.

    python examples/batch_summarize.py [--docs 30] [--model-url http://127.0.0.1:8089/v1]

Without --model-url it starts ``surestep chaos-llm`` itself (in this process, on a free
port of 127.0.0.1) with 25 % of requests failing: timeouts, 5xx, 429s, bad JSON, schema
drift and low confidence. Point --model-url at a real OpenAI-compatible server (vLLM,
Ollama, llama.cpp) and name its models with --model and --fallback to summarize with a
real model.

Each document is one run of ``summarize_document``: an LLM step that returns a
structured summary (validated, repaired, retried, sent to review when unsure), then a
plain step that stores it. A worker runs in this process until every run has settled;
then the script prints what happened to each document and what the model calls cost,
as ``surestep show``, ``surestep calls`` and ``surestep costs`` would.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel, Field

from surestep import App, Retry, State
from surestep.llm.chaos import ChaosConfig, ChaosServer
from surestep.testing import drive


class Summary(BaseModel):
    headline: str = Field(description="one line")
    key_points: list[str] = Field(description="two or three short points")
    confidence: float = Field(ge=0, le=1, description="how sure you are, 0 to 1")


DOCUMENTS = [
    "Quarterly report: revenue grew 12 % on strong cloud demand; margins held at 31 %.",
    "Incident 4411: the payment API returned 502s for 14 minutes after a bad deploy.",
    "Customer letter: the invoice was charged twice and the refund has not arrived.",
    "Research note: retrieval-augmented answers cut hallucinations by a third in tests.",
    "Meeting minutes: the team agreed to move the launch by two weeks for a security review.",
]


def build(app: App, models: list[str]) -> None:
    summarize = app.llm_step(
        name="summarize",
        schema=Summary,
        models=models,
        prompt=lambda text: [
            {"role": "system", "content": "You summarize documents for busy people."},
            {"role": "user", "content": f"Summarize:\n\n{text}"},
        ],
        timeout=2.0,
        max_repairs=2,
        retry=Retry(max_attempts=6, initial_delay=0.2, max_delay=2.0),
        confidence="confidence",
        min_confidence=0.7,
        review={"groups": ["editors"], "sla": timedelta(hours=4)},
    )

    @app.step(name="store_summary")
    def store_summary(doc_id: str, headline: str) -> str:
        return f"{doc_id}: {headline}"

    @app.workflow(name="summarize_document")
    def summarize_document(doc_id: str, text: str) -> str:
        summary = summarize(text)
        return store_summary(doc_id, summary.headline)


@contextlib.contextmanager
def model_server(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    faults = ChaosConfig(
        seed=7,
        timeout_rate=0.04,
        error_rate=0.05,
        rate_limit_rate=0.04,
        bad_json_rate=0.04,
        schema_drift_rate=0.04,
        low_confidence_rate=0.04,
        timeout_seconds=3.0,
        retry_after=0.5,
    )
    with ChaosServer(faults) as server:
        print(f"chaos model server at {server.url} (25 % of requests fail)")
        yield server.url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=30)
    parser.add_argument("--model-url", default=None)
    parser.add_argument("--model", default="summarizer")
    parser.add_argument("--fallback", default="summarizer-small")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, model_server(args.model_url) as url:
        app = App(f"sqlite:///{Path(tmp) / 'batch.db'}")
        app.llm_provider("local", base_url=url)
        models = [f"local:{args.model}", f"local:{args.fallback}"]
        if args.model_url is None:  # the chaos server, priced like a small hosted model
            for model in models:
                app.llm_price(model, input_per_mtok=0.15, output_per_mtok=0.60)
        build(app, models)
        runs = [
            app.start("summarize_document", f"doc-{n}", DOCUMENTS[n % len(DOCUMENTS)])
            for n in range(args.docs)
        ]
        settled = (State.SUCCESS, State.NEEDS_REVIEW, State.DEAD_LETTER, State.FAILED)
        drive(app, until=lambda: all(run.state in settled for run in runs), timeout=300)
        report(app, runs)
        app.close()


def report(app: App, runs: list[object]) -> None:
    states = Counter(run.state.value for run in runs)  # type: ignore[attr-defined]
    print(f"{len(runs)} documents: {dict(states)}")
    calls = [c for run in runs for c in app.llm.ledger.calls(run.id)]  # type: ignore[attr-defined]
    print(f"{len(calls)} model calls; outcomes {dict(Counter(c.outcome for c in calls))}")
    for task in app.reviews.list():
        print(f"  in review: task {task.id} ({task.kind}), confidence {task.confidence:.2f}")
    [line] = app.llm.ledger.costs(0)
    per = line.per_success_usd
    print(
        f"cost ${line.cost_usd:.6f} for {line.calls} calls, ${line.wasted_usd:.6f} on replies "
        f"not used; per summarized document {'-' if per is None else f'${per:.6f}'}"
    )
    done = next(run for run in runs if run.state == State.SUCCESS)  # type: ignore[attr-defined]
    print(f"first result: {done.result()}")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
