"""``surestep users`` against both databases: a printed token authenticates, listings
never show a token or its hash."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from surestep import App
from surestep.cli import app as cli


def invoke(*args: str) -> Result:
    environment: dict[str, str | None] = {"COLUMNS": "200", "SURESTEP_DATABASE_URL": None}
    return CliRunner().invoke(cli, list(args), env=environment)


def hashes(app: App) -> list[str]:
    with app.store.reading() as cur:
        cur.execute("SELECT token_hash FROM surestep_users")
        return [row[0] for row in cur.fetchall()]


def test_users_add_prints_a_token_once_that_authenticates(app: App, db_url: str) -> None:
    app.store  # noqa: B018 -- the database exists, as after `surestep migrate`
    result = invoke(
        "users",
        "add",
        "alice",
        "--role",
        "reviewer",
        "-g",
        "finance",
        "--group",
        "legal",
        "--db",
        db_url,
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("sst_") and "\n" not in token  # alone on stdout
    assert "shown only once" in result.stderr
    user = app.users.authenticate(token)
    assert user is not None
    assert (user.name, user.role, user.groups) == ("alice", "reviewer", ("finance", "legal"))


def test_users_list_never_shows_a_token_or_its_hash(app: App, db_url: str) -> None:
    token = app.users.add("alice", "reviewer", ["finance"])
    app.users.add("olga", "operator")
    app.users.disable("olga")
    [digest, other] = hashes(app)
    table = invoke("users", "list", "--db", db_url)
    listed = invoke("users", "list", "--json", "--db", db_url)
    assert table.exit_code == 0 and listed.exit_code == 0, table.output + listed.output
    for secret in (token, digest, other):
        assert secret not in table.output and secret not in listed.output
    assert "alice" in table.stdout and "finance" in table.stdout and "disabled" in table.stdout
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["role"], r["groups"]) for r in rows] == [
        ("alice", "reviewer", ["finance"]),
        ("olga", "operator", []),
    ]
    assert rows[1]["disabled_at"] is not None
    assert all(
        set(r) == {"name", "role", "groups", "created_at", "disabled_at", "rotated_at"}
        for r in rows
    )


def test_users_disable_and_rotate(app: App, db_url: str) -> None:
    old = app.users.add("bob", "admin")
    rotated = invoke("users", "rotate", "bob", "--db", db_url)
    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip()
    assert new != old and "shown only once" in rotated.stderr
    assert app.users.authenticate(old) is None and app.users.authenticate(new) is not None

    disabled = invoke("users", "disable", "bob", "--db", db_url)
    assert disabled.exit_code == 0 and "disabled 'bob'" in disabled.stdout
    assert app.users.authenticate(new) is None


def test_users_errors_are_clean(app: App, db_url: str, tmp_path: Path) -> None:
    app.users.add("bob", "admin")
    for args, code, fragment in [
        (("users", "add", "bob", "--role", "admin"), 1, "surestep users rotate bob"),
        (("users", "add", "carol", "--role", "root"), 2, "root"),
        (("users", "disable", "nobody"), 1, "no user named 'nobody'"),
        (("users", "rotate", "nobody"), 1, "no user named 'nobody'"),
    ]:
        result = invoke(*args, "--db", db_url)
        assert result.exit_code == code, result.output
        assert fragment in result.stderr and result.stdout == ""
        assert "Traceback" not in result.output
    missing = invoke("users", "list", "--db", f"sqlite:///{tmp_path / 'none.db'}")
    assert missing.exit_code == 1 and "surestep migrate" in missing.stderr
