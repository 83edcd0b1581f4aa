"""Fan-out's storage: a map's row, its children created at once, and their ends counted.

A map (``surestep.map``) is child runs plus one durable wait of the parent, standing on
the run store: its children are ordinary runs (``parent_id`` set, id
``"<parent>:<position>:<index>"``, the index zero-padded so ids sort in input order),
all created in the transaction that records the parent's wait. A child beyond the map's
``concurrency`` is *held*: pending, but due at :data:`HELD`, so no worker claims it. The
transaction that ends a child (whoever ends it: a worker, an operator's cancel, a review)
counts it, lets the next held child run, and wakes the parent when the last child has
finished (or the first failed, with ``fail_fast``). So at most ``concurrency`` children of
a map are ever claimable or running, across every worker, even through crashes; and the
parent, holding no slot, wakes once, not once per child.

Ends are counted in :data:`SHARDS` shard rows (child index modulo :data:`SHARDS`), not in
the map's row: on PostgreSQL a row an end updates stays locked until its commit, so one
counter would make the children of a map end one commit after another. The end that
completes a shard counts it in the map's row; the one that completes the last shard wakes
the parent (the counts are exact: each is an update under its row's lock, in the
transaction that ends the child, so a crash loses none). The map's row is locked by an
end only when it completes a shard, fails a fail-fast map, or frees a place in a map
with held children (whose ``released`` pointer it moves). Lock order, everywhere: the
parent's row (a child's end takes a key-share lock on it: ends of one map do not block
each other, a cancel of the parent waits for them), the child's, its shard's, the map's,
the next held child's.

On PostgreSQL both of a map's busiest writes are one statement each
(:mod:`surestep.flow.map_statements`): the children and their events are created from
arrays, and a child's end that only counts (it completes no shard, the map holds no
child back, it is no failure of a fail-fast map, the child is in no queue) is written
like a plain run's end, in one round trip. The other ends take the path above.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import surestep.flow.map_statements as statements
from surestep.states import State
from surestep.storage.base import EVENT_INSERT
from surestep.storage.coordination import CoordinationStore
from surestep.storage.rows import Cursor, Placement, placement_columns
from surestep.storage.transient import retry_transient

#: The due time of a held child: never reached (as the review store's NO_DUE).
HELD = 1e18
#: How many rows a map's finished children are counted in (see the module's docstring):
#: more than a worker's or a few workers' slots, so ends rarely meet on one row.
SHARDS = 64
_ENDED = (State.SUCCESS, State.FAILED, State.CANCELLED)
_CHILD = re.compile(r"^(?P<parent>.+):(?P<position>\d+):(?P<index>\d+)$")
#: When ``_on_run_end`` may have work: an id of a child's shape (two colons at least).
_END_PROBE = "ending.state IN ('success', 'failed', 'cancelled') AND ending.run_id LIKE '%:%:%'"


def child_id(parent_id: str, position: int, index: int, width: int) -> str:
    return f"{parent_id}:{position}:{index:0{width}d}"


@dataclass(frozen=True)
class MapProgress:
    """Where one map of a parent run stands."""

    position: int
    workflow: str
    total: int
    done: int  # children that finished (succeeded, failed or were cancelled)
    failed: int  # of those, children that failed or were cancelled
    released: int  # children let run (the rest are held back by the concurrency)
    concurrency: int

    @property
    def held(self) -> int:
        return self.total - self.released

    @property
    def running(self) -> int:
        """Children let run that have not finished (running, due, waiting, in review or
        in the dead-letter queue)."""
        return self.released - self.done


@dataclass(frozen=True)
class _Children:
    """The children a map creates: their workflow, inputs and placements in a queue;
    the first ``released`` are due at once, ids padded to ``width`` digits."""

    workflow: tuple[str, str]
    inputs: Sequence[str]
    placements: Sequence[Placement | None]
    released: int
    width: int


@dataclass(frozen=True)
class _End:
    """A child of a map that ended: which, and whether it failed (or was cancelled)."""

    parent: str
    position: int
    index: int
    failed: bool
    fail_fast: bool


@dataclass(frozen=True)
class ChildOutcome:
    state: State
    output: str | None
    error: str | None


class MapStore:
    """The ``surestep_maps`` table, over the run store's transactions."""

    def __init__(self, store: CoordinationStore) -> None:
        self.store = store
        self.reconnect_timeout = store.reconnect_timeout

    @classmethod
    def attach(cls, store: CoordinationStore) -> MapStore:
        """Make every end of a child run count in its map (see the module's docstring)."""
        maps = cls(store)
        store.end_listeners = (*store.end_listeners, maps._on_run_end)
        store.end_probes = {**store.end_probes, maps._on_run_end: _END_PROBE}
        store.ready_checks = {**store.ready_checks, "map": maps._ready}
        store.end_statements = {**store.end_statements, maps._on_run_end: maps._end_statement}
        return maps

    @retry_transient
    def start(
        self,
        run_id: str,
        token: int,
        worker: str,
        position: int,
        name: str,
        workflow: tuple[str, str],
        inputs: Sequence[str],
        concurrency: int,
        fail_fast: bool,
        now: float,
        placements: Sequence[Placement | None] = (),
    ) -> None:
        """Create the map (once): its row, every child, and the parent's waiting step.
        ``placements``: each child's queue, priority and key (its workflow's queue)."""
        store, total = self.store, len(inputs)
        width = len(str(max(total - 1, 0)))
        released = min(total, concurrency)
        with store.transaction() as cur:
            store._fence(cur, run_id, token)
            cur.execute(
                "INSERT INTO surestep_maps (parent_id, position, workflow, total, concurrency,"
                " released, fail_fast, width, created_at, shards)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (parent_id, position) DO NOTHING",
                (
                    run_id,
                    position,
                    workflow[0],
                    total,
                    concurrency,
                    released,
                    fail_fast,
                    width,
                    now,
                    min(total, SHARDS),
                ),
            )
            if cur.rowcount == 1:
                cur.executemany(
                    "INSERT INTO surestep_map_shards (parent_id, position, shard, total)"
                    " VALUES (?, ?, ?, ?)",
                    [
                        (run_id, position, shard, (total - shard + SHARDS - 1) // SHARDS)
                        for shard in range(min(total, SHARDS))
                    ],
                )
                children = _Children(workflow, inputs, placements, released, width)
                self._children(cur, run_id, position, children, now)
            store._begin_wait(
                cur, run_id, worker, position, name, now, None, f"waiting for {total} child runs"
            )
            store._notify(cur)

    def _children(
        self, cur: Cursor, run_id: str, position: int, children: _Children, now: float
    ) -> None:
        inputs, released = children.inputs, children.released
        ids = [child_id(run_id, position, i, children.width) for i in range(len(inputs))]
        placements = list(children.placements) or [None] * len(inputs)
        reason = f"started by run {run_id}"
        if self.store.lateral_joins:  # PostgreSQL: one statement, from arrays
            values = (run_id, *children.workflow, now, released, HELD, reason)
            cur.execute(
                statements.CREATE_CHILDREN,
                statements.create_params(values, ids, inputs, placements),
            )
            return
        cur.execute("SELECT trace_context FROM surestep_runs WHERE id = ?", (run_id,))
        trace = cur.fetchone()[0]
        cur.executemany(
            "INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs,"
            " created_at, updated_at, available_at, parent_id, trace_context, queue,"
            " priority, concurrency_key) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    ids[i],
                    *children.workflow,
                    text,
                    now,
                    now,
                    now if i < released else HELD,
                    run_id,
                    trace,
                    *placement_columns(placements[i]),
                )
                for i, text in enumerate(inputs)
            ],
        )
        cur.executemany(
            EVENT_INSERT,
            [
                (child, None, None, None, State.PENDING, now, "surestep", reason, None)
                for child in ids
            ],
        )

    # -- a child ends ------------------------------------------------------------------

    def _end_statement(
        self, run_id: str, parent_id: str, probes: tuple[str, ...]
    ) -> tuple[str, dict[str, Any]] | None:
        """A child's end in one statement, on PostgreSQL (see ``map_statements``)."""
        params = statements.child_end_params(run_id, parent_id, SHARDS)
        return None if params is None else (statements.child_end_sql(probes), params)

    def _on_run_end(
        self,
        cur: Cursor,
        run_id: str,
        to_state: State,
        final: State,
        actor: str,
        reason: str,
        now: float,
    ) -> None:
        if to_state not in _ENDED:
            return
        found = _CHILD.match(run_id)
        if found is None:
            return
        parent, position, index = found["parent"], int(found["position"]), found["index"]
        cur.execute(
            "SELECT total, concurrency, fail_fast, width, shards FROM surestep_maps"
            " WHERE parent_id = ? AND position = ?",
            (parent, position),
        )
        row = cur.fetchone()
        # Only the map's own child matches: its index has the map's width and is below
        # its total, and run ids are unique, so no other run can carry this id.
        if row is None or row[3] != len(index) or row[0] <= int(index):
            return  # a plain child run (run_child), or an id of that shape
        total, concurrency, fail_fast, _, shards = row
        end = _End(parent, position, int(index), to_state != State.SUCCESS, bool(fail_fast))
        if not shards:  # a map created before schema 19: counted in its own row
            self._count_in_map(cur, end, now)
            return
        cur.execute(
            "UPDATE surestep_map_shards SET done = done + 1, failed = failed + ?"
            " WHERE parent_id = ? AND position = ? AND shard = ? RETURNING done >= total",
            (int(end.failed), parent, position, end.index % SHARDS),
        )
        shard_done = bool(cur.fetchone()[0])
        over = end.failed and end.fail_fast and self._fail(cur, end)
        if concurrency < total:
            self._free(cur, end, now)
        if shard_done:
            cur.execute(
                "UPDATE surestep_maps SET shards_done = shards_done + 1"
                " WHERE parent_id = ? AND position = ? RETURNING shards_done >= shards",
                (parent, position),
            )
            over = over or bool(cur.fetchone()[0])
        if over:
            self._wake(cur, parent, position, now)

    def _fail(self, cur: Cursor, end: _End) -> bool:
        """Count a failure of a fail-fast map; whether it is the first (the map is over)."""
        cur.execute(
            "UPDATE surestep_maps SET failed = failed + 1 WHERE parent_id = ? AND position = ?"
            " RETURNING failed",
            (end.parent, end.position),
        )
        return bool(cur.fetchone()[0] == 1)

    def _free(self, cur: Cursor, end: _End, now: float) -> None:
        """The place of a child that held one goes to the next held child (a held child
        that ends never ran: it frees none). Once a fail-fast map has failed, nothing
        more starts."""
        cur.execute(
            "SELECT total, released, failed, width FROM surestep_maps"
            f" WHERE parent_id = ? AND position = ? {self.store.lock_for_update}",
            (end.parent, end.position),
        )
        total, released, failures, width = cur.fetchone()
        if end.index < released < total and not (end.fail_fast and failures):
            self._release(cur, end.parent, end.position, (released, total, width), now)

    def _count_in_map(self, cur: Cursor, end: _End, now: float) -> None:
        """A child's end in a map counted in its own row (created before schema 19)."""
        cur.execute(
            "UPDATE surestep_maps SET done = done + 1, failed = failed + ?"
            " WHERE parent_id = ? AND position = ?"
            " RETURNING total, released, done, failed, width",
            (int(end.failed), end.parent, end.position),
        )
        total, released, done, failures, width = cur.fetchone()
        frees = end.index < released
        if frees and released < total and not (end.fail_fast and failures):
            self._release(cur, end.parent, end.position, (released, total, width), now)
        if done >= total or (end.fail_fast and failures):
            self._wake(cur, end.parent, end.position, now)

    def _wake(self, cur: Cursor, parent: str, position: int, now: float) -> None:
        """Wake the parent (once the map is over). Its row is locked only against its own
        update (a concurrent park, which then sees the map over): the key-share locks of
        other ends of the map stay compatible, so two last ends cannot deadlock."""
        store = self.store
        if store.lock_for_update:
            cur.execute("SELECT 1 FROM surestep_runs WHERE id = ? FOR NO KEY UPDATE", (parent,))
        store._wake(cur, parent, f"map:{position}", now, locked=True)

    def _release(
        self, cur: Cursor, parent: str, position: int, counts: tuple[int, int, int], now: float
    ) -> None:
        """Let the next held child run, passing over held children that already ended
        (cancelled before their turn)."""
        index, total, width = counts
        while index < total:
            cur.execute(
                "UPDATE surestep_runs SET available_at = ? WHERE id = ? AND state = 'pending'"
                " AND available_at >= ?",
                (now, child_id(parent, position, index, width), HELD),
            )
            index += 1
            if cur.rowcount == 1:
                self.store._notify(cur)
                break
        cur.execute(
            "UPDATE surestep_maps SET released = ? WHERE parent_id = ? AND position = ?",
            (index, parent, position),
        )

    def _ready(self, cur: Cursor, run_id: str, key: str) -> bool:
        cur.execute(
            "SELECT CASE WHEN shards > 0 THEN shards_done >= shards ELSE done >= total END,"
            " fail_fast AND failed > 0 FROM surestep_maps WHERE parent_id = ? AND position = ?",
            (run_id, int(key)),
        )
        row = cur.fetchone()
        return row is not None and bool(row[0] or row[1])

    # -- the parent collects -----------------------------------------------------------

    @retry_transient
    def outcomes(self, run_id: str, position: int) -> list[ChildOutcome] | None:
        """Every child's outcome in input order once the map is over (all finished, or
        one failed with ``fail_fast``: the rest are then reported as they stand)."""
        with self.store.reading() as cur:
            if not self._ready(cur, run_id, str(position)):
                return None
            prefix = f"{run_id}:{position}:"
            cur.execute(
                "SELECT id, state, output, error FROM surestep_runs WHERE parent_id = ?"
                " AND substr(id, 1, ?) = ?",
                (run_id, len(prefix), prefix),
            )
            rows = sorted(cur.fetchall())
        return [ChildOutcome(State(state), output, error) for _, state, output, error in rows]

    @retry_transient
    def cancel_rest(self, run_id: str, position: int, actor: str, now: float) -> int:
        """Cancel the map's children that have not finished (after a fail-fast failure)."""
        reason = "another child of its map failed (fail_fast)"
        with self.store.transaction() as cur:
            # The parent's row first, as a cancel of the parent: ends of the map's
            # children (which key-share lock it) wait, rather than meet this
            # transaction's locks on shard and map rows in the other order.
            self.store._lock_run(cur, run_id)
            return self.store._cancel_children(
                cur, run_id, actor, reason, now, prefix=f"{run_id}:{position}:"
            )

    @retry_transient
    def progress(self, run_id: str) -> list[MapProgress]:
        """The maps a run started, in position order (``surestep show``)."""
        with self.store.reading() as cur:
            cur.execute(
                "SELECT m.position, m.workflow, m.total,"
                " CASE WHEN m.shards > 0 THEN SUM(s.done) ELSE m.done END,"
                " CASE WHEN m.shards > 0 THEN SUM(s.failed) ELSE m.failed END,"
                " m.released, m.concurrency FROM surestep_maps m"
                " LEFT JOIN surestep_map_shards s"
                " ON s.parent_id = m.parent_id AND s.position = m.position"
                " WHERE m.parent_id = ?"
                " GROUP BY m.position, m.workflow, m.total, m.done, m.failed, m.released,"
                " m.concurrency, m.shards ORDER BY m.position",
                (run_id,),
            )
            return [MapProgress(*row) for row in cur.fetchall()]
