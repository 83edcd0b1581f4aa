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


#: A table, index, trigger or constraint that each migration creates: by them a schema
#: that lost its version record is recognised.
_MARKERS: dict[str, dict[int, str]] = {
    dialect: {
        1: "surestep_runs",
        2: "surestep_runs_finished",
        3: "surestep_runs_by_created",
        4: "surestep_messages",
        5: "surestep_runs_claimable_by_workflow",
        6: marker_6,
        7: "surestep_workers",
        8: "surestep_review_tasks",
        9: "surestep_users",
        10: "surestep_run_traces",
        11: "surestep_attempts_by_finished",
        12: "surestep_llm_calls",
        13: "surestep_llm_rate_reservations",
        14: "surestep_maps",
        15: "surestep_llm_drift",
        16: "surestep_schedules",
        17: "surestep_queues",
        18: "surestep_console_sessions",
        19: "surestep_map_shards",
        20: "surestep_messages_by_run",
        21: marker_21,
    }
    # SQLite's schema 21 creates nothing: a schema 20 that lost its record is taken for
    # 21, which is the same schema there.
    for dialect, marker_6, marker_21 in (
        ("sqlite", "surestep_runs_state_insert", "surestep_messages_by_run"),
        ("postgresql", "surestep_runs_state", "surestep_state_check"),
    )
}

_RESTORE = {
    "sqlite": "CREATE TABLE IF NOT EXISTS surestep_migrations (version INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL, applied_at REAL NOT NULL);",
    "postgresql": "CREATE TABLE IF NOT EXISTS surestep_migrations (version INTEGER PRIMARY"
    " KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL);",
}


def check_recorded(dialect: str, current: int, names: set[str], where: str) -> None:
    """Refuse a database whose surestep tables exist while no migration is recorded
    (``surestep_migrations`` was dropped or emptied): applying migration 1 again would
    fail with "table surestep_runs already exists", and guessing could damage it.
    ``names`` are the schema's tables, indexes, triggers and constraints."""
    markers = _MARKERS[dialect]
    if current or markers[1] not in names:
        return
    looks_like = 0
    while looks_like + 1 in markers and markers[looks_like + 1] in names:
        looks_like += 1
    raise SchemaVersionError(
        f"the database {where} has surestep's tables but no record of its schema version "
        f"(the table surestep_migrations was dropped or emptied), so surestep cannot tell "
        f"which migrations it still needs. Its schema looks like version {looks_like}. If "
        f"that is right, record it with this SQL and try again: {_RESTORE[dialect]} "
        f"INSERT INTO surestep_migrations VALUES ({looks_like}, 'restored', 0);"
    )
