"""A document-summarising workflow, used by the demo (examples/demo.py).

Each step appends a line to $DEMO_LOG when it really executes, so the demo can show
which work ran and which was replayed from a checkpoint.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import surestep
from surestep import App, Retry

app = App()  # SURESTEP_DATABASE_URL, else ./surestep.db


def _log(what: str) -> None:
    with open(os.environ.get("DEMO_LOG", "demo-side-effects.log"), "a") as log:
        log.write(f"{surestep.current_step().idempotency_key} {what}\n")


@app.step(retry=Retry(max_attempts=4, initial_delay=0.2, retry_on=(ConnectionError,)))
def fetch(doc_id: str) -> str:
    _log("fetch")
    time.sleep(0.1)  # the network
    return f"Document {doc_id}: " + "lorem ipsum dolor sit amet " * 20


@app.step(timeout=5.0)
def summarise(text: str) -> str:
    _log("summarise")
    time.sleep(0.3)  # the model
    return text[:48] + "..."


@app.step(
    retry=Retry(max_attempts=3, initial_delay=0.2, backoff=2.0, retry_on=(ConnectionError,)),
    on_exhausted="dead_letter",
)
def publish(doc_id: str, summary: str) -> str:
    _log("publish")
    if Path(os.environ.get("DEMO_OUTAGE", "index-down")).exists() and doc_id == "doc-07":
        raise ConnectionError("search index unavailable for doc-07's shard")
    return f"indexed/{doc_id}"


@app.workflow(name="summarize", version="1")
def summarize(doc_id: str) -> dict[str, str]:
    text = fetch(doc_id)
    summary = summarise(text)
    return {"doc": doc_id, "summary": summary, "url": publish(doc_id, summary)}
