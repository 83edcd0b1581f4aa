"""A map's two busiest writes on PostgreSQL, each in one statement (one round trip):
creating its children, and a child's end counted in its shard.

The portable code (:mod:`surestep.flow.store`) sends one row at a time: 20,000 rows for
a map of 10,000 children, and five statements for a child's end. These statements do the
same work, under the same locks in the same order, from arrays and data-modifying CTEs
(which share one snapshot; a later one reads what an earlier one returned).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from surestep.storage.postgres_ends import ENDED_BY, UNSYNCED
from surestep.storage.rows import Placement

#: Every child of a map and its "pending" event, from arrays in input order (ids,
#: inputs and placements; the placements' arrays are empty for a workflow in no queue),
#: after the map's values: ``create_params``.
CREATE_CHILDREN = """
WITH map (parent, workflow, version, now, released, held, reason) AS (
    VALUES (?::text, ?::text, ?::text, ?::float8, ?::integer, ?::float8, ?::text)
), made AS (
    INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs, created_at,
        updated_at, available_at, parent_id, trace_context, queue, priority, concurrency_key)
    SELECT c.id, map.workflow, map.version, 'pending', c.inputs, map.now, map.now,
        CASE WHEN c.n <= map.released THEN map.now ELSE map.held END, map.parent,
        (SELECT trace_context FROM surestep_runs WHERE id = map.parent), c.queue,
        COALESCE(c.priority, 0), c.concurrency_key
    FROM map, unnest(?::text[], ?::text[], ?::text[], ?::integer[], ?::text[])
        WITH ORDINALITY AS c (id, inputs, queue, priority, concurrency_key, n)
    ORDER BY c.n
    RETURNING id
)
INSERT INTO surestep_events (run_id, position, step, from_state, to_state, at, actor, reason,
    attempt)
SELECT made.id, NULL, NULL, NULL, 'pending', map.now, 'surestep', map.reason, NULL
FROM made, map
"""


def create_params(
    map_values: tuple[str, str, str, float, int, float, str],
    ids: Sequence[str],
    inputs: Sequence[str],
    placements: Sequence[Placement | None],
) -> list[Any]:
    """``CREATE_CHILDREN``'s parameters: the map's (parent, workflow, version, now,
    released, held, reason), then the children's arrays."""
    placed = any(p is not None for p in placements)
    return [
        *map_values,
        list(ids),
        list(inputs),
        [p.queue if p else None for p in placements] if placed else [],
        [p.priority if p else 0 for p in placements] if placed else [],
        [p.concurrency_key if p else None for p in placements] if placed else [],
    ]


# A child's end, when it only counts: its shard does not become complete by it (so the
# map's row is not touched and the parent not woken), the map has no held children left
# to release, it is not a failure of a fail-fast map, the child is in no queue (whose
# freed place the general path NOTIFYs about), and no other end listener has work (the
# probes). Otherwise nothing is written and the caller takes the general path, which
# does the rest; so does a map created before schema 19, counted in its own row.
#
# The locks are those of the general path, in its order: the parent's row (key share),
# the child's, its shard's. The shard's row is locked before deciding: a locking read
# returns the row's latest version, so ``done + 1 < total`` is exact even when other
# ends of the shard committed since this statement's snapshot.
_CHILD_END = """
WITH ending (run_id, state) AS MATERIALIZED (
    VALUES (%(run)s::text, %(state)s::text)
), parent AS MATERIALIZED (
    SELECT 1 FROM surestep_runs WHERE id = %(parent)s FOR KEY SHARE
), held AS MATERIALIZED (
    SELECT queue FROM surestep_runs
    WHERE id = %(run)s AND lease_token = %(token)s AND state = 'running'
        AND EXISTS (SELECT 1 FROM parent)
    FOR NO KEY UPDATE
), shard AS MATERIALIZED (
    SELECT s.done + 1 < s.total AND m.released >= m.total
        AND (ending.state = 'success' OR NOT m.fail_fast) AS counts_only
    FROM surestep_map_shards AS s JOIN surestep_maps AS m USING (parent_id, position), ending
    WHERE s.parent_id = %(parent)s AND s.position = %(position)s AND s.shard = %(shard)s
        AND m.width = %(width)s AND m.total > %(index)s AND m.shards > 0
        AND EXISTS (SELECT 1 FROM held WHERE queue IS NULL)
    FOR NO KEY UPDATE OF s
), quiet AS (
    SELECT COALESCE((SELECT counts_only FROM shard), FALSE) AND NOT ({busy}) AS yes
    FROM ending
), ended AS (
    UPDATE surestep_runs SET state = %(state)s, output = %(output)s, error = %(error)s,
        available_at = %(available_at)s, lease_owner = NULL, lease_expires_at = NULL,
        updated_at = %(now)s, waiting_for = NULL, compensating = NULL,
        compensating_error = NULL
    WHERE id = %(run)s AND lease_token = %(token)s AND state = 'running'
        AND (SELECT yes FROM quiet)
    RETURNING 1
), logged AS (
    INSERT INTO surestep_events
        (run_id, position, step, from_state, to_state, at, actor, reason, attempt)
    SELECT %(run)s, NULL, NULL, 'running', %(state)s, %(now)s, %(worker)s, %(reason)s, NULL
    FROM ended
), counted AS (
    UPDATE surestep_map_shards SET done = done + 1,
        failed = failed + CASE WHEN %(state)s::text = 'success' THEN 0 ELSE 1 END
    WHERE parent_id = %(parent)s AND position = %(position)s AND shard = %(shard)s
        AND EXISTS (SELECT 1 FROM ended)
    RETURNING 1
)
SELECT (SELECT yes FROM quiet), EXISTS (SELECT 1 FROM ended), EXISTS ({ended_by}),
    (SELECT COUNT(*) FROM counted), {unsynced}
"""


@functools.lru_cache(maxsize=16)
def child_end_sql(probes: tuple[str, ...]) -> str:
    """A map's child's end in one statement (see above), unless one of ``probes`` (SQL
    over ``ending.run_id`` and ``ending.state``) says another end listener has work.
    Its columns are those of ``postgres_ends.finish_sql``."""
    busy = " OR ".join(f"({probe})" for probe in probes) or "FALSE"
    return _CHILD_END.format(busy=busy.replace("%", "%%"), ended_by=ENDED_BY, unsynced=UNSYNCED)


#: ``:<position>:<index>`` after the parent's id: a map's child's id (``child_id``).
_MAP_CHILD = re.compile(r"^:(?P<position>\d+):(?P<index>\d+)$")


def child_end_params(run_id: str, parent_id: str, shards: int) -> dict[str, Any] | None:
    """The parameters ``child_end_sql`` takes beyond a finish's, or None for a run whose
    id is not that of a map's child."""
    found = _MAP_CHILD.match(run_id[len(parent_id) :]) if run_id.startswith(parent_id) else None
    if found is None:
        return None
    index = int(found["index"])
    return {
        "parent": parent_id,
        "position": int(found["position"]),
        "index": index,
        "width": len(found["index"]),
        "shard": index % shards,
    }
