"""``surestep chaos-llm``: a local OpenAI-compatible model server that fails on purpose.

Point a workflow's provider at the URL it prints to prove the workflow survives
timeouts, 5xx, 429, broken JSON, schema drift and unsure answers
(:mod:`surestep.llm.chaos`).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Annotated, Any

import typer

from surestep.cli.common import fail
from surestep.errors import ConfigurationError
from surestep.llm.chaos import ChaosConfig, ChaosServer, summary


def register(app: typer.Typer) -> None:
    """Add this group's commands to the ``surestep`` command."""
    app.command("chaos-llm")(chaos_llm)


def _rate(help_text: str) -> Any:
    """The option of one fault's rate: a probability, so typer refuses one outside 0..1."""
    return typer.Option(min=0.0, max=1.0, help=f"Share of requests that {help_text} (0 to 1).")


def chaos_llm(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port; 0 picks a free one.")] = 8089,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    seed: Annotated[int, typer.Option(help="Same seed, same requests: same faults.")] = 0,
    timeout_rate: Annotated[float, _rate("hang without an answer")] = 0.0,
    error_rate: Annotated[float, _rate("get a 500, 502 or 503")] = 0.0,
    rate_limit_rate: Annotated[float, _rate("get a 429 with Retry-After")] = 0.0,
    bad_json_rate: Annotated[float, _rate("get JSON that does not parse")] = 0.0,
    schema_drift_rate: Annotated[float, _rate("get JSON that breaks the schema")] = 0.0,
    low_confidence_rate: Annotated[float, _rate("get an unsure answer")] = 0.0,
    latency_ms: Annotated[float, typer.Option(min=0, help="Delay of every answer.")] = 0.0,
    timeout_seconds: Annotated[
        float, typer.Option(min=0, help="How long a timed-out request is held (then a 504).")
    ] = 30.0,
    retry_after: Annotated[
        float, typer.Option(min=0, help="The Retry-After of a 429, in seconds.")
    ] = 1.0,
    quiet: Annotated[bool, typer.Option("--quiet", help="Do not print each fault.")] = False,
) -> None:
    """Serve a chaos model (OpenAI chat completions) that injects faults at the given
    rates, printing each one, until Ctrl-C or SIGTERM; then print a summary."""
    try:
        config = ChaosConfig(
            seed=seed,
            timeout_rate=timeout_rate,
            error_rate=error_rate,
            rate_limit_rate=rate_limit_rate,
            bad_json_rate=bad_json_rate,
            schema_drift_rate=schema_drift_rate,
            low_confidence_rate=low_confidence_rate,
            latency_ms=latency_ms,
            timeout_seconds=timeout_seconds,
            retry_after=retry_after,
        )
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    printing = threading.Lock()  # fault lines come from many handler threads

    def echo(line: str) -> None:
        with printing:
            typer.echo(line)

    server = ChaosServer(config, host=host, port=port, echo=None if quiet else echo)
    try:
        server.start()
    except OSError as exc:
        fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port")
    # SIGTERM (a process manager, a test) stops it like Ctrl-C: with the summary.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        echo(f"surestep chaos-llm on {server.url} (seed {seed}); Ctrl-C stops it")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
    echo(summary(server.stats()))
