"""Numbered SQL migrations, one folder per dialect: the single source of the schema."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from surestep.errors import SchemaVersionError

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load(dialect: str) -> list[Migration]:
    """The migrations of ``dialect`` in order; their numbers must run 1, 2, 3, ..."""
    folder = resources.files(__package__).joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"surestep {dialect} migrations are not numbered 1..N: {found}")
    return found


def pending(
    dialect: str, current: int, where: str, upgrade_to: int | None = None
) -> list[Migration]:
    """The migrations a database at schema ``current`` still needs (up to ``upgrade_to``,
    by default all of them). A schema newer than this code is refused: running old code
    on it could misread or damage what newer code wrote."""
    migrations = load(dialect)
    latest = migrations[-1].version
    if current > latest:
        raise SchemaVersionError(
            f"the database {where} has schema version {current}, newer than this surestep "
            f"understands (up to {latest}). Upgrade surestep (pip install -U surestep) "
            f"before using this database"
        )
    return migrations[current : latest if upgrade_to is None else upgrade_to]
