"""A run's claim and its finish on PostgreSQL, each in one statement: one round trip and
its commit, like the per-step checkpoint (``postgres.py``).

Data-modifying CTEs share one snapshot, and a later one reads what an earlier one
returned, so each of these statements is as atomic and as fenced as the transaction of
several statements it replaces (``SQLStore.claim``, ``CoordinationStore.finish``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from surestep.states import TERMINAL, State
from surestep.storage.base import CLAIM_COLUMNS
from surestep.storage.reads import RECORDED_COLUMNS

# The claim: lock the earliest due runs of each (workflow, version) pair, as the portable
# claim does (the LATERAL join because FOR UPDATE SKIP LOCKED is not allowed on a UNION),
# lease them, log each claim, and return them with their recorded steps (one row per
# step, or one with NULL step columns for a run with none).
#
# The steps are read in the statement's snapshot, taken before the rows were locked.
# Nothing that commits in between can have changed them: a run's steps are written by
# the worker holding its lease (fenced), by a person's review decision or a redrive
# (which lock the run's row first and make it pending in the same commit: a run not due
# in this snapshot is not claimed), or, for a run that is due, by a review decided while
# it waits with a timer, which a worker also meets while executing: ``open_at`` finds
# the position decided and the run goes round again on a fresh history.
# Written for a generic plan, which PostgreSQL keeps after five executions only if it is
# estimated no dearer than the plans made for the actual values: the due time and the
# limit are read through sub-selects (no plan can use their values), and the runs and
# their steps are looked up by id arrays, so that no estimate of how many runs are leased
# can turn a lookup into a scan. (Planned anew for every claim, this statement took
# longer to plan than to execute.)
# The claimed run's columns, with the state it was claimed from.
_CLAIMED = ", ".join(
    "due.state" if c == "state" else f"leased.{c}" for c in CLAIM_COLUMNS.split(", ")
)
CLAIM = f"""
WITH wanted (workflow, version) AS (
    SELECT * FROM unnest((SELECT %(workflows)s::text[]), (SELECT %(versions)s::text[]))
), due AS (
    SELECT due.id, due.state, due.available_at FROM wanted CROSS JOIN LATERAL (
        SELECT id, state, available_at FROM surestep_runs
        WHERE workflow = wanted.workflow AND workflow_version = wanted.version
        AND state IN ('pending', 'waiting') AND available_at <= (SELECT %(now)s::float8)
        ORDER BY available_at LIMIT (SELECT %(limit)s::integer) FOR UPDATE SKIP LOCKED
    ) AS due
    ORDER BY due.available_at LIMIT (SELECT %(limit)s::integer)
), leased AS (
    UPDATE surestep_runs SET state = 'running', lease_owner = %(worker)s,
        lease_token = lease_token + 1, lease_expires_at = %(expires)s, updated_at = %(now)s
    WHERE id = ANY (ARRAY (SELECT id FROM due))
    RETURNING {CLAIM_COLUMNS}
), logged AS (
    INSERT INTO surestep_events
        (run_id, position, step, from_state, to_state, at, actor, reason, attempt)
    SELECT id, NULL, NULL, due.state, 'running', %(now)s, %(worker)s, 'claimed', NULL
    FROM leased JOIN due USING (id)
), recorded AS (
    SELECT {RECORDED_COLUMNS} FROM surestep_steps
    WHERE run_id = ANY (ARRAY (SELECT id FROM leased))
)
SELECT {_CLAIMED}, {", ".join("s." + c for c in RECORDED_COLUMNS.split(", "))}
FROM leased JOIN due USING (id) LEFT JOIN recorded AS s ON s.run_id = leased.id
ORDER BY leased.available_at, leased.id
"""
#: Where a claimed row's recorded-step columns begin (after ``CLAIM_COLUMNS``).
STEP_COLUMNS = len(CLAIM_COLUMNS.split(", "))


def claim_params(
    worker: str, workflows: Sequence[tuple[str, str]], limit: int, now: float, lease: float
) -> dict[str, Any]:
    pairs = list(dict.fromkeys(workflows))
    return {
        "workflows": [name for name, _ in pairs],
        "versions": [version for _, version in pairs],
        "now": now,
        "limit": limit,
        "worker": worker,
        "expires": now + lease,
    }


def split_claimed(rows: Sequence[Sequence[Any]]) -> tuple[list[Any], list[Any]]:
    """(one row per run, ``CLAIM_COLUMNS``; its steps' rows, ``RECORDED_COLUMNS``)."""
    runs: dict[str, Sequence[Any]] = {}
    steps = []
    for row in rows:
        runs.setdefault(row[0], row[:STEP_COLUMNS])
        if row[STEP_COLUMNS] is not None:  # the step's run_id: NULL when it has none
            steps.append(row[STEP_COLUMNS:])
    return list(runs.values()), steps


# -- finish ---------------------------------------------------------------------------

# NOTIFY channel names stop at 63 bytes (NAMEDATALEN); this one is short and fixed.
CHANNEL = "surestep_ready"
#: The run as a finish leaves it: seen again, it was that finish (its acknowledgement
#: lost), since no other write sets this state and time under this lease token.
ENDED_BY = (
    "SELECT 1 FROM surestep_runs WHERE id = %(run)s AND lease_token = %(token)s"
    " AND state = %(state)s AND updated_at = %(now)s AND lease_owner IS NULL"
)

#: Evaluated once by a statement, commits its transaction without waiting for the WAL
#: flush (``SQLStore.unsynced``): the next synchronous commit, this worker's next claim
#: or checkpoint or anyone's, makes it durable with itself, as the WAL is written in
#: order. For a run's end only: a server that crashes loses what it had not flushed, and
#: an end lost so is redone (the run, still running under a lease nobody renews, is
#: recovered and replayed from its checkpoints to the same end). A claim lost so would
#: hand its lease token out a second time while the worker holding it lives on, so
#: claims commit synchronously.
UNSYNCED = "set_config('synchronous_commit', 'off', true)"

#: Unfinished children of the ending run: cancelled when it ends other than in success.
_CHILDREN = (
    "ending.state IN ('failed', 'cancelled') AND EXISTS (SELECT 1 FROM surestep_runs AS c"
    " WHERE c.parent_id = ending.run_id"
    " AND c.state IN ('pending', 'running', 'waiting', 'dead_letter', 'needs_review'))"
)


@functools.lru_cache(maxsize=16)
def finish_sql(probes: tuple[str, ...]) -> str:
    """The finish of a run, in one statement, unless one of ``probes`` (SQL over
    ``ending.run_id`` and ``ending.state``, see ``CoordinationStore.end_probes``) says
    an end listener has work to do: then nothing is written, and the caller takes the
    general path, which calls the listeners.

    What decides the statement's course is read from a materialized ``ending``, which
    no plan can fold: so the generic plan costs the same as one made for the values,
    and PostgreSQL keeps it rather than planning every finish anew (see ``CLAIM``)."""
    busy = " OR ".join(f"({probe})" for probe in (_CHILDREN, *probes)).replace("%", "%%")
    return f"""
WITH ending (run_id, state, notify) AS MATERIALIZED (
    VALUES (%(run)s::text, %(state)s::text, %(notify)s::boolean)
), quiet AS (
    SELECT NOT (ending.state IN ('success', 'failed', 'cancelled') AND ({busy}))
        -- a queued run's end may free a place to NOTIFY about: the general path
        AND NOT EXISTS (SELECT 1 FROM surestep_runs AS queued
                        WHERE queued.id = ending.run_id AND queued.queue IS NOT NULL) AS yes
    FROM ending
), ended AS (
    UPDATE surestep_runs SET state = %(state)s, output = %(output)s, error = %(error)s,
        available_at = %(available_at)s, lease_owner = NULL, lease_expires_at = NULL,
        updated_at = %(now)s, waiting_for = %(waiting_for)s,
        compensating = CASE WHEN %(terminal)s THEN NULL ELSE compensating END,
        compensating_error = CASE WHEN %(terminal)s THEN NULL ELSE compensating_error END
    WHERE id = %(run)s AND lease_token = %(token)s AND state = 'running'
        AND (SELECT yes FROM quiet)
    RETURNING 1
), logged AS (
    INSERT INTO surestep_events
        (run_id, position, step, from_state, to_state, at, actor, reason, attempt)
    SELECT %(run)s, NULL, NULL, 'running', %(state)s, %(now)s, %(worker)s, %(reason)s, NULL
    FROM ended
), woken AS (
    SELECT pg_notify('{CHANNEL}', '') FROM ended, ending WHERE ending.notify
)
SELECT (SELECT yes FROM quiet), EXISTS (SELECT 1 FROM ended),
    EXISTS ({ENDED_BY}), (SELECT COUNT(*) FROM woken), {UNSYNCED}
"""


def finishes_in_one(to_state: State, waiting_for: Sequence[str], parent_id: str | None) -> bool:
    """Whether ``finish_sql`` can end the run: not a child that ends (its parent is
    locked first and may be woken), nor a wait whose cause may have come already (the
    readiness checks are Python)."""
    if to_state in TERMINAL and parent_id is not None:
        return False
    return not (waiting_for and to_state in (State.WAITING, State.NEEDS_REVIEW))


@dataclass(frozen=True)
class Ending:
    """A finish: who ends which run, under which lease, in what state, when."""

    run_id: str
    token: int
    worker: str
    state: State
    at: float


def finish_params(ending: Ending, fields: Mapping[str, Any]) -> dict[str, Any]:
    waiting_for = fields.get("waiting_for") or ()
    return {
        "run": ending.run_id,
        "token": ending.token,
        "worker": ending.worker,
        "state": str(ending.state),
        "now": ending.at,
        "output": fields.get("output"),
        "error": fields.get("error"),
        "available_at": fields.get("available_at"),
        "reason": fields.get("reason"),
        "waiting_for": json.dumps(list(waiting_for)) if waiting_for else None,
        "terminal": ending.state in TERMINAL,
        "notify": ending.state in (State.WAITING, State.PENDING),
    }
