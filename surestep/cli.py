"""The ``surestep`` command: a thin adapter over :class:`surestep.App`.

Each command parses its options, calls the library and renders the answer as a table,
or as JSON with ``--json``. Library errors end the command with ``error: <message>`` on
stderr and exit code 1; usage errors exit with 2. For example::

    surestep worker myproject.jobs:app --concurrency 32
    surestep dlq
    surestep retry 6f1c0b2e...
"""

from __future__ import annotations

import getpass
import importlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from types import ModuleType
from typing import Annotated, Final, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from surestep.app import DEFAULT_DATABASE_URL, App
from surestep.cli_versions import print_versions
from surestep.errors import SurestepError
from surestep.render import (
    dead_letter_summary,
    dead_letter_table,
    echo_json,
    events_table,
    new_console,
    print_tracebacks,
    run_header,
    run_summary,
    runs_table,
    steps_table,
)
from surestep.states import State
from surestep.storage import redact

app = typer.Typer(
    name="surestep",
    help="Run and inspect surestep workflows.",
    no_args_is_help=True,
    add_completion=False,
    # Locals may hold a database URL with its password.
    pretty_exceptions_show_locals=False,
)

# How long the worker command waits, after the worker has stopped, for its pool threads
# to exit. Idle threads exit within milliseconds; a thread still alive after this is a
# sync workflow stuck past the grace period.
_THREAD_EXIT_WAIT: Final = 1.0

Db = Annotated[
    str,
    typer.Option(
        "--db",
        envvar="SURESTEP_DATABASE_URL",
        show_envvar=True,
        help="Database URL.",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")]
WorkflowFilter = Annotated[
    str | None, typer.Option("--workflow", "-w", help="Only runs of this workflow.")
]
Limit = Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many runs.")]
RunId = Annotated[str, typer.Argument(help="The run's id.", show_default=False)]


def _positive(value: float | None) -> float | None:
    """Validate ``--lease`` and ``--poll``."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"must be greater than 0, got {value}")
    return value


# -- commands ---------------------------------------------------------------------------


@app.command()
def worker(
    target: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:APP",
            help="Where your App is, e.g. myproject.jobs:app.",
            show_default=False,
        ),
    ],
    concurrency: Annotated[int, typer.Option(min=1, help="Runs executed at once.")] = 16,
    lease: Annotated[
        float,
        typer.Option(callback=_positive, help="Lease length, seconds."),
    ] = 30.0,
    poll: Annotated[
        float | None,
        typer.Option(
            callback=_positive,
            help="Longest pause between looks for due runs, seconds "
            "[default: 0.1 on SQLite; 1 on PostgreSQL, which also wakes workers by NOTIFY]",
            show_default=False,
        ),
    ] = None,
    grace: Annotated[
        float,
        typer.Option(min=0.0, help="On SIGTERM, wait this long for runs in flight, seconds."),
    ] = 30.0,
) -> None:
    """Execute runs of the App's workflows until SIGTERM or SIGINT.

    The worker uses the App's own database.
    """
    with _library_errors():
        surestep_app = _load_app(target)
        _configure_logging()
        surestep_app.worker(
            concurrency=concurrency,
            lease_seconds=lease,
            poll_interval=poll,
            grace_period=grace,
        ).run()
    _exit_if_threads_stuck()
    surestep_app.close()


@app.command()
def runs(
    state: Annotated[State | None, typer.Option(help="Only runs in this state.")] = None,
    workflow: WorkflowFilter = None,
    limit: Limit = 50,
    as_json: AsJson = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """List runs, newest first."""
    with _opened(db) as surestep_app:
        found = surestep_app.list_runs(state, workflow, limit)
    if as_json:
        echo_json([run_summary(run) for run in found])
    elif not found:
        typer.echo("no runs")
    else:
        console = new_console()
        console.print(runs_table(found))
        if len(found) == limit:
            console.print(Text(f"the {limit} newest; --limit shows more", style="dim"))


@app.command()
def show(
    run_id: RunId,
    tracebacks: Annotated[
        bool, typer.Option("--tracebacks", help="Print the traceback of every failed attempt.")
    ] = False,
    as_json: AsJson = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Show a run: its inputs and outcome, its steps and attempts, and its event log."""
    with _opened(db) as surestep_app:
        run = surestep_app.get_run(run_id)
    if as_json:
        echo_json(asdict(run))
        return
    console = new_console()
    console.print(run_header(run))
    console.print(steps_table(run.steps) if run.steps else Text("no steps yet", style="dim"))
    print_tracebacks(console, run.steps, tracebacks)
    console.print(events_table(run.events))


@app.command()
def retry(run_id: RunId, db: Db = DEFAULT_DATABASE_URL) -> None:
    """Redrive a dead-lettered run from its failed step; completed steps are not re-run."""
    with _opened(db) as surestep_app:
        steps = surestep_app.retry(run_id)
    redriven = ", ".join(steps) if steps else "none"
    typer.echo(f"run {run_id} is pending again; redriven step(s): {redriven}")


@app.command()
def cancel(
    run_id: RunId,
    reason: Annotated[
        str, typer.Option(help="Why; recorded in the run's event log.")
    ] = "cancelled from the command line",
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Cancel a run that has not finished.

    A running run stops at its next step boundary.
    """
    with _opened(db) as surestep_app:
        was = surestep_app.cancel(run_id, reason)
    note = ""
    if was == State.RUNNING:
        note = "; its worker stops at the next step boundary (the step in flight is discarded)"
    typer.echo(f"run {run_id} cancelled (was {was}){note}")


@app.command()
def dlq(
    workflow: WorkflowFilter = None,
    limit: Limit = 50,
    as_json: AsJson = False,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """List dead-lettered runs with the step that failed and its last error."""
    with _opened(db) as surestep_app:
        parked = surestep_app.list_runs(State.DEAD_LETTER, workflow, limit)
        found = [surestep_app.get_run(run.id) for run in parked]
    if as_json:
        echo_json([dead_letter_summary(run) for run in found])
    elif not found:
        typer.echo("no dead-lettered runs")
    else:
        console = new_console()
        console.print(dead_letter_table(found))
        console.print(
            Text("fix the cause, then `surestep retry RUN_ID` redrives a run", style="dim")
        )


@app.command()
def send(
    run_id: RunId,
    name: Annotated[str, typer.Argument(help="The event's name.", show_default=False)],
    data: Annotated[str, typer.Option("--data", help="The event's payload, as JSON.")] = "null",
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Send an event to a run; a `wait_for_event(NAME)` receives its payload."""
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        _fail(f"--data is not valid JSON ({exc}); quote it, e.g. --data '{{\"ok\": true}}'", 2)
    with _opened(db) as surestep_app:
        surestep_app.send_event(run_id, name, payload)
    typer.echo(f"sent {name!r} to run {run_id}")


@app.command()
def prune(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="Age of the finished runs to delete, e.g. 30d, 12h, 90m.",
            show_default=False,
        ),
    ],
    batch: Annotated[int, typer.Option(min=1, help="Runs deleted per transaction.")] = 1000,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Delete finished runs (success, failed, cancelled) with their steps and events.

    Dead-lettered and unfinished runs are kept, whatever their age.
    """
    age = _parse_age(older_than)
    with _opened(db) as surestep_app:
        deleted = surestep_app.prune(older_than=age, batch=batch)
    typer.echo(f"deleted {deleted} finished run(s) older than {older_than}")


@app.command()
def migrate(db: Db = DEFAULT_DATABASE_URL) -> None:
    """Create or upgrade the database schema, then print its version."""
    with _opened(db) as surestep_app:
        store = surestep_app.store  # opening the store applies the migrations
        version = store.schema_version()
    typer.echo(f"{redact(store.description)}: schema version {version}")


# -- versions (its rendering is in surestep/cli_versions.py) ----------------------------


@app.command()
def versions(as_json: AsJson = False, db: Db = DEFAULT_DATABASE_URL) -> None:
    """List, per workflow, the versions with unfinished runs and whether a live worker
    serves each.

    A version with runs and no live worker is stranded: deploy a worker that registers
    it, or use surestep.patched() in the new code.
    """
    with _opened(db) as surestep_app:
        report = surestep_app.versions()
    print_versions(report, as_json)


def main() -> None:
    """Entry point of the ``surestep`` console script."""
    app()


# -- the adapter boundary ---------------------------------------------------------------


def _parse_age(text: str) -> timedelta:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        _fail(f"--older-than {text!r}: give a number and a unit: s, m, h, d or w (e.g. 30d)", 2)
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    return timedelta(**{unit[match[2]]: float(match[1])})


def _fail(message: str, code: int = 1) -> NoReturn:
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        Text(f"error: {redact(message)}", style="red")
    )
    raise typer.Exit(code)


@contextmanager
def _library_errors() -> Iterator[None]:
    """Turn the library's own errors into ``error: ...`` and exit code 1."""
    try:
        yield
    except SurestepError as exc:
        _fail(str(exc))


@contextmanager
def _opened(db: str) -> Iterator[App]:
    """A bare App on ``db``: enough to read and operate on runs of any workflow."""
    with _library_errors():
        surestep_app = App(db, actor=f"cli:{_user()}")
        try:
            yield surestep_app
        finally:
            surestep_app.close()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):  # no login name in this environment
        return "unknown"


# -- the worker command ----------------------------------------------------------------


def _load_app(target: str) -> App:
    """Import ``module:attribute`` from the current directory and check it is an App."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        _fail(
            f"{target!r} is not MODULE:APP; name the module and the App in it, "
            f"e.g. `surestep worker myproject.jobs:app`",
            code=2,
        )
    cwd = os.getcwd()
    if cwd not in sys.path:  # as uvicorn does: the project in the cwd is importable
        sys.path.insert(0, cwd)
    found = _attribute(_import(module_name), attribute)
    if not isinstance(found, App):
        _fail(
            f"{target} is of type {type(found).__name__}, not a surestep.App; point at the App "
            f"object, e.g. the `app` in `app = App(...)`",
            code=2,
        )
    return found


def _import(module_name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(f"{missing}."):
            _fail(
                f"cannot import module {module_name!r}: it is neither in {os.getcwd()} nor "
                f"on the Python path; run the worker from your project's directory, or "
                f"install your project (pip install -e .)",
                code=2,
            )
        _fail(
            f"importing {module_name!r} failed: {exc}; install the missing package in "
            f"this environment",
            code=2,
        )
    except ImportError as exc:
        _fail(f"importing {module_name!r} failed: {exc}", code=2)


def _attribute(module: ModuleType, attribute: str) -> object:
    found: object = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            _fail(
                f"module {module.__name__!r} has no attribute {attribute!r}; name the "
                f"variable that holds your App, e.g. {module.__name__}:app",
                code=2,
            )
    return found


def _configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _exit_if_threads_stuck() -> None:
    """Exit at once if a sync workflow outlived the grace period.

    Its pool thread is not a daemon, so the interpreter would wait for it at exit,
    possibly forever. The run itself was released, and another worker resumes it.
    """
    deadline = time.monotonic() + _THREAD_EXIT_WAIT
    stuck = []
    for thread in threading.enumerate():
        if thread.name.startswith("surestep-run") and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                stuck.append(thread.name)
    if stuck:
        logging.getLogger(__name__).warning(
            "%d run thread(s) still busy after the grace period (%s); exiting without "
            "waiting for them",
            len(stuck),
            ", ".join(stuck),
        )
        os._exit(1)


if __name__ == "__main__":
    main()
