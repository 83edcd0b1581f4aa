"""The App the LLM process tests run in real worker processes.

``python llm_app.py URL MODEL_URL RPM`` runs a worker on the database ``URL`` until
SIGTERM; its provider ``gw`` is the OpenAI-compatible server at ``MODEL_URL`` (through the
real ``openai`` SDK), and ``gw:m`` is limited to ``RPM`` requests a minute (0: no limit),
shared by every process on the database. The test process imports :func:`build` to
start runs and read the ledger.

Workflow ``label(text)``: one LLM step ``label_text`` (schema :class:`Label`), then a
plain step ``shout`` of its answer.
"""

from __future__ import annotations

import sys

import sideeffects  # tests/integration/sideeffects.py
from pydantic import BaseModel

from surestep import App, Retry

CONCURRENCY = 4


class Label(BaseModel):
    label: str


def build(url: str, model_url: str, rpm: int) -> App:
    app = App(url)
    app.llm_provider("gw", base_url=model_url)
    if rpm:
        app.rate_limit("gw:m", rpm=rpm)
    label_text = app.llm_step(
        name="label_text",
        schema=Label,
        models=["gw:m"],
        prompt=lambda text: f"Label this: {text}",
        timeout=10,
        retry=Retry(max_attempts=50, initial_delay=0.2, max_delay=2.0),
    )

    @app.step(name="shout")
    def shout(label: str) -> str:
        return label.upper()

    @app.workflow(name="label")
    def label(text: str) -> str:
        return shout(label_text(text).label)

    return app


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(f"usage: {argv[0]} URL MODEL_URL RPM", file=sys.stderr)
        return 2
    return sideeffects.serve(build(argv[1], argv[2], int(argv[3])), CONCURRENCY)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
