"""The traced App of the crash test of traces, run in real worker processes.

``python trace_app.py DB_PATH LOG_DIR`` runs a traced worker on the SQLite file
``DB_PATH`` until SIGTERM. Every span a process ends is appended at once (one write) as
a JSON line to ``LOG_DIR/spans-<pid>.jsonl``, so a SIGKILL loses only the spans still
open; each step attempt also notes ``"<idempotency_key> done"`` in ``LOG_DIR/<pid>.log``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import sideeffects  # tests/integration/sideeffects.py
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from surestep import App, current_step

STEPS = 6


class FileExporter(SpanExporter):
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        for span in spans:
            assert span.context is not None
            line = {
                "name": span.name,
                "trace_id": f"{span.context.trace_id:032x}",
                "span_id": f"{span.context.span_id:016x}",
                "parent_id": None if span.parent is None else f"{span.parent.span_id:016x}",
                "attributes": dict(span.attributes or {}),
            }
            sideeffects.append(self.log_dir / f"spans-{os.getpid()}.jsonl", json.dumps(line))
        return SpanExportResult.SUCCESS


def build(db_path: str | Path, log_dir: str | Path) -> App:
    """A traced App with the workflow ``slow_steps`` on the SQLite file ``db_path``."""
    log_dir = Path(log_dir)
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(log_dir)))
    app = App(f"sqlite:///{db_path}", tracing=provider)

    @app.step(name="slow")
    def slow(i: int) -> int:
        time.sleep(0.1)  # long enough for a kill to land between two steps' ends
        sideeffects.note(log_dir, f"{current_step().idempotency_key} done")
        return i

    @app.workflow(name="slow_steps")
    def slow_steps() -> int:
        return sum(slow(i) for i in range(STEPS))

    return app


def spans(log_dir: Path, pid: int) -> list[dict[str, object]]:
    """The spans process ``pid`` ended, in order."""
    path = log_dir / f"spans-{pid}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"usage: {argv[0]} DB_PATH LOG_DIR", file=sys.stderr)
        return 2
    return sideeffects.serve(build(argv[1], argv[2]), 4)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
