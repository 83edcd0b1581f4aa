"""The REST API's users: ``surestep users add|list|disable|rotate``.

A token is printed once, alone on stdout (so ``TOKEN=$(surestep users add ...)`` works);
the note that it is shown only once goes to stderr. Only its hash is stored.
"""

from __future__ import annotations

from dataclasses import asdict
from enum import StrEnum
from typing import Annotated

import typer
from rich.table import Table

from surestep.app import DEFAULT_DATABASE_URL
from surestep.auth import User
from surestep.cli.common import AsJson, Db, opened
from surestep.render import echo_json, format_time, new_console, new_table

Name = Annotated[str, typer.Argument(help="The user's name.", show_default=False)]


class Role(StrEnum):
    reviewer = "reviewer"
    operator = "operator"
    admin = "admin"


def register(app: typer.Typer) -> None:
    """Add the ``users`` group to the ``surestep`` command."""
    users = typer.Typer(
        help="Users of the REST API (surestep serve): roles, groups, tokens.",
        no_args_is_help=True,
    )
    users.command()(add)
    users.command("list")(list_users)
    users.command()(disable)
    users.command()(rotate)
    app.add_typer(users, name="users")


def add(
    name: Name,
    role: Annotated[Role, typer.Option(help="What the user may do.", show_default=False)],
    group: Annotated[
        list[str] | None,
        typer.Option("--group", "-g", help="A review group of theirs (repeat for more)."),
    ] = None,
    db: Db = DEFAULT_DATABASE_URL,
) -> None:
    """Create a user and print their token (shown only once)."""
    with opened(db) as surestep_app:
        token = surestep_app.users.add(name, role.value, group or [])
    _show_token(f"created {role.value} {name!r}", token, name)


def list_users(as_json: AsJson = False, db: Db = DEFAULT_DATABASE_URL) -> None:
    """List the users, their roles and groups (never a token or its hash)."""
    with opened(db) as surestep_app:
        found = surestep_app.users.list()
    if as_json:
        echo_json([asdict(user) for user in found])
    elif not found:
        typer.echo("no users; `surestep users add NAME --role reviewer` creates one")
    else:
        new_console().print(_table(found))


def disable(name: Name, db: Db = DEFAULT_DATABASE_URL) -> None:
    """Refuse a user's token from now on."""
    with opened(db) as surestep_app:
        user = surestep_app.users.disable(name)
    typer.echo(
        f"disabled {user.name!r} (since {format_time(user.disabled_at)}); their token is refused"
    )


def rotate(name: Name, db: Db = DEFAULT_DATABASE_URL) -> None:
    """Give a user a new token (printed once); the old one stops working at once."""
    with opened(db) as surestep_app:
        token = surestep_app.users.rotate(name)
        user = surestep_app.users.get(name)
    note = "" if user.active else " (the user is still disabled)"
    _show_token(f"new token for {name!r}{note}; the old one no longer works", token, name)


def _show_token(what: str, token: str, name: str) -> None:
    typer.echo(
        f"{what}. Their token follows; it is shown only once and cannot be recovered "
        f"(`surestep users rotate {name}` makes a new one):",
        err=True,
    )
    typer.echo(token)


def _table(found: list[User]) -> Table:
    table = new_table("name", "role", "groups", "created", "state", "token rotated")
    for user in found:
        table.add_row(
            user.name,
            user.role,
            ", ".join(user.groups),
            format_time(user.created_at),
            "active" if user.active else f"disabled {format_time(user.disabled_at)}",
            format_time(user.rotated_at),
        )
    return table
