"""What every command group shares: the common options and the adapter boundary."""

from __future__ import annotations

import getpass
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from surestep.app import App
from surestep.errors import SurestepError
from surestep.storage import redact

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


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with ``error: <message>`` on stderr (the URL's password redacted)."""
    Console(stderr=True, highlight=False, soft_wrap=True).print(
        Text(f"error: {redact(message)}", style="red")
    )
    raise typer.Exit(code)


@contextmanager
def library_errors() -> Iterator[None]:
    """Turn the library's own errors into ``error: ...`` and exit code 1."""
    try:
        yield
    except SurestepError as exc:
        fail(str(exc))


@contextmanager
def opened(db: str, *, must_exist: bool = True) -> Iterator[App]:
    """A bare App on ``db``: enough to read and operate on runs of any workflow.

    Only ``surestep migrate`` (and the worker) create a database: a command that reads
    or operates on runs, pointed at a SQLite file that does not exist, says so rather
    than creating the file and its directories (a typo in ``--db`` creates nothing).
    """
    with library_errors():
        surestep_app = App(db, actor=f"cli:{os_user()}", must_exist=must_exist)
        try:
            yield surestep_app
        finally:
            surestep_app.close()


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError, ImportError):  # no login name in this environment
        return "unknown"


def parse_age(text: str, option: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``45s``, ``2w`` as a timedelta; a usage error otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match is None:
        fail(f"{option} {text!r}: give a number and a unit: s, m, h, d or w (e.g. 30d)", 2)
    unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    try:
        return timedelta(**{unit[match[2]]: float(match[1])})
    except OverflowError:  # past timedelta's 999,999,999 days
        fail(f"{option} {text!r} is longer than any date reaches; give a shorter age", 2)


def since_time(text: str) -> datetime:
    """``--since``: an age back from now, or a date/time in local time."""
    if text.strip()[-1:].isalpha():
        try:
            return datetime.now() - parse_age(text, "--since")
        except OverflowError:  # 99999999999d: before the year 1
            fail(f"--since {text!r} reaches back past the year 1; give a shorter age", 2)
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"--since {text!r}: give an age (2h, 7d) or a date/time (2024-05-01T09:30)", 2)
