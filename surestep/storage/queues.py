"""Queues' storage: a queue's row, and the claim that holds its limits.

A queue (``app.queue``) is a row of ``surestep_queues`` plus the runs whose ``queue``
column names it. Its claim runs in one transaction that first locks the queue's row
(PostgreSQL ``FOR UPDATE``; SQLite's single writer serialises it anyway), so the claims
of one queue happen one at a time across every worker. Under that lock it counts the
queue's runs in state running, and leases at most ``concurrency`` minus that many due
runs, by priority then due time, skipping keys that already run ``per_key_concurrency``.

Only a claim moves a run into running, so the count cannot be raced: never more than
``concurrency`` of a queue's runs are running, whatever the number of workers. A run
counts while it is *in state running*, lease lapsed or not: a worker whose lease lapsed
(frozen, partitioned) may still be executing it, so its slot returns when the run is
recovered (by any worker's heartbeat once the lease lapses; at once when its process is
seen dead on the same host), not at the instant of the lapse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from surestep.registry import QueueDef
from surestep.storage.base import CLAIM_COLUMNS
from surestep.storage.coordination import CoordinationStore
from surestep.storage.rows import ClaimedRun, Cursor
from surestep.storage.transient import retry_transient

#: A candidate run: what a claim reads (``CLAIM_COLUMNS``), then its key and priority.
_CANDIDATE = f"{CLAIM_COLUMNS}, concurrency_key, priority"
_KEY, _PRIORITY, _DUE = 10, 11, 9
#: The head of a queue: its due runs (of the workflows served) in claim order.
HEAD_SQL = (
    f"SELECT {_CANDIDATE} FROM surestep_runs WHERE queue = ?"
    " AND state IN ('pending', 'waiting') AND available_at <= ?"
    " AND {served} ORDER BY priority DESC, available_at LIMIT ?"
)
#: The keys with claimable runs in a queue, one index seek each (a skip scan).
KEYS_SQL = (
    "WITH RECURSIVE keys (k) AS (SELECT MIN(concurrency_key) FROM surestep_runs"
    " WHERE queue = ? AND state IN ('pending', 'waiting') AND concurrency_key IS NOT NULL"
    " UNION ALL SELECT (SELECT MIN(concurrency_key) FROM surestep_runs"
    " WHERE queue = ? AND state IN ('pending', 'waiting') AND concurrency_key > keys.k)"
    " FROM keys WHERE keys.k IS NOT NULL) SELECT k FROM keys WHERE k IS NOT NULL"
)
#: The head of one key of a queue (``{key}``: ``concurrency_key = ?`` or ``IS NULL``).
#: Ordered by the key first (one value here, so the same order) so that the head of the
#: runs without a key, too, is read from the key index: in the queue's own index, those
#: runs may lie past a whole backlog of keyed ones.
KEY_HEAD_SQL = (
    f"SELECT * FROM (SELECT {_CANDIDATE} FROM surestep_runs WHERE queue = ?"
    " AND {key} AND state IN ('pending', 'waiting') AND available_at <= ?"
    " AND {served} ORDER BY concurrency_key, priority DESC, available_at LIMIT ?) AS due"
)
#: Every key's head in one statement of fixed text, whatever the number of keys (a
#: lateral join over the keys and how many runs each may start), so that it is planned
#: once: a UNION ALL of one head per key took 7 ms to plan at 20 keys (PostgreSQL).
KEY_HEADS_LATERAL_SQL = (
    "SELECT due.* FROM unnest(?::text[], ?::int[]) AS wanted (k, n) CROSS JOIN LATERAL"
    f" (SELECT {_CANDIDATE} FROM surestep_runs WHERE queue = ? AND concurrency_key = wanted.k"
    " AND state IN ('pending', 'waiting') AND available_at <= ?"
    " AND {served} ORDER BY concurrency_key, priority DESC, available_at LIMIT wanted.n) AS due"
)
#: A queue's running runs, per key.
RUNNING_SQL = (
    "SELECT concurrency_key, COUNT(*) FROM surestep_runs WHERE queue = ?"
    " AND state = 'running' GROUP BY concurrency_key"
)
#: Keys per statement when a claim reads each key's head (a UNION ALL of that many).
_KEYS_PER_STATEMENT = 100


@dataclass(frozen=True)
class QueueClaim:
    """What one claim of a queue leased, and whether a limit held due runs back."""

    runs: list[ClaimedRun]
    blocked: bool  # the concurrency, a key's cap or the rate held runs back
    retry_at: float | None = None  # the rate limit: when the next start is allowed


@dataclass(frozen=True)
class QueueFigures:
    """Where one queue stands (``surestep queues``)."""

    name: str
    concurrency: int
    per_key_concurrency: int | None
    rate_per_second: float | None
    running: int
    due: int  # pending or waiting runs due now: the backlog
    oldest_due_at: float | None  # when the longest-waiting due run became due
    updated_at: float  # when a worker last declared the queue


def pick(
    rows: Sequence[Sequence[Any]], free: int, cap: int | None, running: dict[str | None, int]
) -> tuple[list[Sequence[Any]], bool]:
    """The first ``free`` of ``rows`` (in claim order) whose key is under ``cap``,
    counting each key's ``running`` runs and the rows taken before it; and whether any
    row was skipped for its key. Rows without a key are never capped."""
    taken: list[Sequence[Any]] = []
    counts = dict(running)
    skipped = False
    for row in rows:
        if len(taken) >= free:
            break
        key = row[_KEY]
        if cap is not None and key is not None:
            if counts.get(key, 0) >= cap:
                skipped = True
                continue
            counts[key] = counts.get(key, 0) + 1
        taken.append(row)
    return taken, skipped


class QueueStore:
    """The ``surestep_queues`` table and the queued claim, over the run store."""

    def __init__(self, store: CoordinationStore) -> None:
        self.store = store
        self.reconnect_timeout = store.reconnect_timeout

    @retry_transient
    def declare(self, queues: Sequence[QueueDef], now: float) -> None:
        """Write the queues as this worker's code declares them (the last one wins)."""
        if not queues:
            return
        with self.store.transaction() as cur:
            cur.executemany(
                "INSERT INTO surestep_queues (name, concurrency, per_key_concurrency,"
                " rate_per_second, tokens, refilled_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " concurrency = excluded.concurrency,"
                " per_key_concurrency = excluded.per_key_concurrency,"
                " rate_per_second = excluded.rate_per_second, updated_at = excluded.updated_at",
                [
                    (
                        q.name,
                        q.concurrency,
                        q.per_key_concurrency,
                        q.rate_per_second,
                        _burst(q.rate_per_second),
                        now,
                        now,
                    )
                    for q in queues
                ],
            )

    def claim(
        self,
        queue: str,
        worker: str,
        workflows: Sequence[tuple[str, str]],
        limit: int,
        clock: Callable[[], float],
        lease_seconds: float,
    ) -> QueueClaim:
        """Lease up to ``limit`` due runs of ``queue`` (of these workflows) within its
        limits. Not retried on a transient error, like ``SQLStore.claim``.

        The time is read from ``clock`` once the queue's row is locked: a claim that
        waited for the lock while a run of the queue ended is then recorded after that
        end, so the event log shows the limit held as it was.
        """
        if limit <= 0 or not workflows:
            return QueueClaim([], False)
        store = self.store
        with store.unsynced() as cur:  # a claim: see SQLStore.unsynced
            cur.execute(
                "SELECT concurrency, per_key_concurrency, rate_per_second, tokens, refilled_at"
                f" FROM surestep_queues WHERE name = ? {store.lock_for_update}",
                (queue,),
            )
            row = cur.fetchone()
            now = clock()
            if row is None:
                return QueueClaim([], True)  # declared by no worker yet: nothing may run
            concurrency, cap, rate, tokens, refilled_at = row
            running = _running_by_key(cur, queue)
            free = min(limit, concurrency - sum(running.values()))
            bucket = None if rate is None else _Bucket(rate, tokens, refilled_at, now)
            if bucket is not None and bucket.allows() < free:
                free = bucket.allows()
                if free <= 0:
                    return QueueClaim([], True, bucket.next_start(0))
            if free <= 0:
                return QueueClaim([], True)
            rows, skipped = self._candidates(cur, queue, workflows, free, cap, running, now)
            rows = self._confirm(cur, rows, now)
            if bucket is not None:
                cur.execute(
                    "UPDATE surestep_queues SET tokens = ?, refilled_at = ? WHERE name = ?",
                    (bucket.tokens - len(rows), bucket.at, queue),
                )
            runs = store._lease(cur, rows, worker, now, lease_seconds)
        blocked = skipped or (len(rows) == free and free < limit)
        # Held back by the rate: when the next start is allowed, so an idle worker wakes
        # for it (a run ending wakes it anyway; a poll may be a second away).
        retry_at = None
        if bucket is not None and free == bucket.allows() and len(rows) == free:
            retry_at = bucket.next_start(len(rows))
        return QueueClaim(runs, blocked, retry_at)

    def _candidates(
        self,
        cur: Cursor,
        queue: str,
        workflows: Sequence[tuple[str, str]],
        free: int,
        cap: int | None,
        running: dict[str | None, int],
        now: float,
    ) -> tuple[list[Sequence[Any]], bool]:
        """The due runs to lease, and whether a key's cap skipped any.

        First the head of the queue, a little more than ``free`` runs: enough unless
        keys at their cap fill the head (one tenant's deep backlog). Then, instead of
        reading past that backlog, each key's own head (one index range per key).
        """
        served, params = served_condition(workflows)
        scan = free if cap is None else free * (cap + 1) + 16
        cur.execute(HEAD_SQL.format(served=served), (queue, now, *params, scan))
        head = cur.fetchall()
        taken, skipped = pick(head, free, cap, running)
        if len(taken) == free or len(head) < scan or cap is None:
            return taken, skipped
        rows = self._by_key(cur, queue, served, params, free, cap, running, now)
        taken, _ = pick(rows, free, cap, running)
        return taken, True

    def _by_key(
        self,
        cur: Cursor,
        queue: str,
        served: str,
        params: list[str],
        free: int,
        cap: int,
        running: dict[str | None, int],
        now: float,
    ) -> list[Sequence[Any]]:
        """Every key's first runs it may still start, and the first runs without a key,
        in claim order."""
        # The keys with claimable runs, one index seek each (a skip scan).
        cur.execute(KEYS_SQL, (queue, queue))
        room = {k: cap - running.get(k, 0) for (k,) in cur.fetchall()}
        wanted: list[tuple[str | None, int]] = [(k, n) for k, n in room.items() if n > 0]
        rows: list[Sequence[Any]] = []
        if self.store.lateral_joins:
            keys, counts = [k for k, _ in wanted], [n for _, n in wanted]
            cur.execute(
                KEY_HEADS_LATERAL_SQL.format(served=served), (keys, counts, queue, now, *params)
            )
            rows += cur.fetchall()
            wanted = []  # only the runs without a key are left to read
        wanted.append((None, free))
        for start in range(0, len(wanted), _KEYS_PER_STATEMENT):
            chunk = wanted[start : start + _KEYS_PER_STATEMENT]
            parts, args = [], []
            for key, n in chunk:
                is_key = "concurrency_key IS NULL" if key is None else "concurrency_key = ?"
                parts.append(KEY_HEAD_SQL.format(key=is_key, served=served))
                args += [queue, *([] if key is None else [key]), now, *params, n]
            cur.execute(" UNION ALL ".join(parts), args)
            rows += cur.fetchall()
        rows.sort(key=lambda r: (-r[_PRIORITY], r[_DUE]))
        return rows

    def _confirm(self, cur: Cursor, rows: list[Sequence[Any]], now: float) -> list[Sequence[Any]]:
        """Lock the runs picked, keeping those still due: candidates were read without
        locks, and a cancel may have taken one meanwhile (PostgreSQL)."""
        if not rows or not self.store.lock_rows:
            return rows
        marks = ", ".join("?" for _ in rows)
        cur.execute(
            f"SELECT id FROM surestep_runs WHERE id IN ({marks})"
            f" AND state IN ('pending', 'waiting') AND available_at <= ? {self.store.lock_rows}",
            (*(r[0] for r in rows), now),
        )
        still = {r[0] for r in cur.fetchall()}
        return [r for r in rows if r[0] in still]

    @retry_transient
    def figures(self, now: float) -> list[QueueFigures]:
        """Every declared queue: its limits, what runs, and its due backlog."""
        with self.store.reading() as cur:
            cur.execute(
                "SELECT name, concurrency, per_key_concurrency, rate_per_second, updated_at"
                " FROM surestep_queues ORDER BY name"
            )
            queues = cur.fetchall()
            found = []
            for name, concurrency, cap, rate, updated_at in queues:
                running = sum(_running_by_key(cur, name).values())
                cur.execute(
                    "SELECT COUNT(*), MIN(available_at) FROM surestep_runs WHERE queue = ?"
                    " AND state IN ('pending', 'waiting') AND available_at <= ?",
                    (name, now),
                )
                due, oldest = cur.fetchone()
                found.append(
                    QueueFigures(
                        name, concurrency, cap, rate, running, int(due), oldest, updated_at
                    )
                )
        return found


class _Bucket:
    """A rate-limited queue's token bucket as of ``now``: refilled at ``rate`` tokens a
    second since ``refilled_at``, up to a second's worth (:func:`_burst`); a start
    spends one. So in any interval of T seconds at most ``burst + rate * T`` runs of the
    queue start, whatever the number of workers (claims of a queue are serialised)."""

    def __init__(self, rate: float, tokens: float, refilled_at: float, now: float) -> None:
        self.rate = rate
        # Workers' clocks differ a little (each is corrected to the database's with an
        # error of half a round trip): a claim stamped before the last one refills
        # nothing, and does not move the refill time back (which would count that
        # interval twice).
        self.at = max(now, refilled_at)
        self.tokens = min(_burst(rate), tokens + (self.at - refilled_at) * rate)

    def allows(self) -> int:
        """How many runs may start now."""
        return max(0, int(self.tokens))

    def next_start(self, spent: int) -> float:
        """When the next start is allowed, after ``spent`` starts now."""
        return self.at + max(0.0, 1 - (self.tokens - spent)) / self.rate


def _running_by_key(cur: Cursor, queue: str) -> dict[str | None, int]:
    cur.execute(RUNNING_SQL, (queue,))
    return {key: int(n) for key, n in cur.fetchall()}


def served_condition(workflows: Sequence[tuple[str, str]]) -> tuple[str, list[str]]:
    """The SQL condition 'of one of these (workflow, version) pairs', and its params.

    ``workflow || ''`` keeps the planner off the plain claim's (workflow, version, due)
    index: SQLite, with no statistics, rates two equalities above the queue's index,
    then sorts a whole backlog by priority; the queue's index reads it in order.
    """
    pairs = " OR ".join("(workflow || '' = ? AND workflow_version = ?)" for _ in workflows)
    return f"({pairs})", [part for pair in workflows for part in pair]


def _burst(rate: float | None) -> float:
    """How many starts a rate-limited queue may make at once: a second's worth (>= 1)."""
    return 0.0 if rate is None else max(1.0, rate)
