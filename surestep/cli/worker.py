"""The worker command: import the user's App and execute its runs until told to stop."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
from enum import StrEnum
from types import ModuleType
from typing import Annotated, Final

import typer

from surestep.app import App
from surestep.cli.common import fail, library_errors
from surestep.observe.logs import JsonFormatter
from surestep.storage import redact

log = logging.getLogger("surestep.cli")

# How long the worker command waits, after the worker has stopped, for its pool threads
# to exit. Idle threads exit within milliseconds; a thread still alive after this is a
# sync workflow stuck past the grace period.
_THREAD_EXIT_WAIT: Final = 1.0


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def register(app: typer.Typer) -> None:
    """Add this group's commands to the ``surestep`` command."""
    app.command()(worker)


def _positive(value: float | None) -> float | None:
    """Validate ``--lease`` and ``--poll``."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"must be greater than 0, got {value}")
    return value


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
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Database URL, instead of the App's own (the URL given to App(...), else "
            "$SURESTEP_DATABASE_URL, else sqlite:///surestep.db).",
            show_default=False,
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Serve this process's Prometheus metrics at http://HOST:PORT/metrics.",
            show_default=False,
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="Address the metrics server listens on.")
    ] = "127.0.0.1",
    log_format: Annotated[
        LogFormat,
        typer.Option(help="text, or json: one JSON object a line with the run's ids."),
    ] = LogFormat.text,
) -> None:
    """Execute runs of the App's workflows until SIGTERM or SIGINT.

    The worker uses the App's own database unless --db names another; it logs which
    database it uses (password redacted) when it starts.
    """
    with library_errors():
        surestep_app = load_app(target)
        _configure_logging(log_format)
        if db is not None:
            surestep_app.close()  # in case importing the module already opened the store
            surestep_app.database_url = db
        source = "--db" if db is not None else f"the App in {target}"
        log.info("database %s (from %s)", redact(surestep_app.database_url), source)
        surestep_app.worker(
            concurrency=concurrency,
            lease_seconds=lease,
            poll_interval=poll,
            grace_period=grace,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
        ).run()
    _exit_if_threads_stuck()
    surestep_app.close()


def load_app(target: str) -> App:
    """Import ``module:attribute`` from the current directory and check it is an App."""
    module_name, _, attribute = target.partition(":")
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        dotted = module_name.removesuffix(".py").replace(os.sep, ".").replace("/", ".")
        fail(
            f"{target!r} names a file; name the module instead: drop `.py` and write "
            f"directories as dots (use `{dotted.strip('.')}:{attribute or 'app'}`)",
            code=2,
        )
    if not module_name or not attribute:
        fail(
            f"{target!r} is not MODULE:APP; name the module and the App in it, "
            f"e.g. `surestep worker myproject.jobs:app`",
            code=2,
        )
    cwd = os.getcwd()
    if cwd not in sys.path:  # as uvicorn does: the project in the cwd is importable
        sys.path.insert(0, cwd)
    found = _attribute(_import(module_name), attribute)
    if not isinstance(found, App):
        fail(
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
            fail(
                f"cannot import module {module_name!r}: it is neither in {os.getcwd()} nor "
                f"on the Python path; run the worker from your project's directory, or "
                f"install your project (pip install -e .)",
                code=2,
            )
        fail(
            f"importing {module_name!r} failed: {exc}; install the missing package in "
            f"this environment",
            code=2,
        )
    except ImportError as exc:
        fail(f"importing {module_name!r} failed: {exc}", code=2)


def _attribute(module: ModuleType, attribute: str) -> object:
    found: object = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            fail(
                f"module {module.__name__!r} has no attribute {attribute!r}; name the "
                f"variable that holds your App, e.g. {module.__name__}:app",
                code=2,
            )
    return found


def _configure_logging(log_format: LogFormat) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format is LogFormat.json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


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
        log.warning(
            "%d run thread(s) still busy after the grace period (%s); exiting without "
            "waiting for them",
            len(stuck),
            ", ".join(stuck),
        )
        os._exit(1)
