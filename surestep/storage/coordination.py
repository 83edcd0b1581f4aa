"""How runs end, and how they wait for time, events and each other.

Kept apart from the per-step path in ``base.py``: finishing a run, cancelling it (with
its children), durable waits, events sent to runs, child runs, deadlines, and handing a
failed or cancelled run over to its compensations.

Wake-ups are race-free by lock order: whoever makes a run ready (an event sent, a child
finished) locks the waiting run's row first, and a run that goes to ``waiting`` checks
what it waits for only after updating (locking) its own row. Whichever commits second
sees the other.

A child's end locks its parent's row before its own, as a cancel of the parent does
(parent, then children). A map's child takes only a key-share lock there: ends of one
map's children do not wait for each other's commits, and a cancel of the parent (a
``FOR UPDATE``) still waits for them, and they for it (see surestep.flow.store).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from surestep.errors import (
    CorruptRecordError,
    InvalidOperationError,
    LeaseLostError,
    RunNotFoundError,
)
from surestep.states import TERMINAL, State, check_run_transition, check_step_transition
from surestep.storage.base import EVENT_INSERT, SQLStore
from surestep.storage.decode import Where, json_value
from surestep.storage.rows import DEADLINE_STATES, Cursor, Placement, placement_columns
from surestep.storage.transient import retry_transient

_COMPENSABLE = (
    "SELECT COUNT(*) FROM surestep_steps WHERE run_id = ? AND position >= 0"
    " AND state = 'success' AND compensation IS NOT NULL"
)


#: Called inside the transaction that ends or parks a run (a cancel, a deadline, or a
#: worker finishing it): (cursor, run_id, to_state, final, actor, reason, now). Stores
#: composed beside the run store (review tasks) keep their rows in step through it.
EndListener = Callable[[Cursor, str, State, State, str, str, float], None]
#: What tells whether an end listener has work to do at a run's end, in SQL over
#: ``ending.run_id`` and ``ending.state``: true when it may have. A store that ends a run
#: in one statement (PostgreSQL) does so only while every listener has one and none is
#: true; otherwise it calls the listeners as usual.
EndProbe = str
#: The end of a map's child's id after its parent's (``:<position>:<index>``). Such a
#: child wakes its parent through its map's counts (surestep.flow.store), once, after the
#: last child: its own end does not look at its parent's waits. (``finish`` still locks
#: the parent's row first, keeping the parent-then-child lock order cancels rely on, but
#: in key-share mode.)
_MAP_CHILD = re.compile(r"^:\d+:\d+$")
#: Whether what a run waits for (``"<kind>:<key>"``, given the run id and the key) has
#: happened, for kinds of wait that features add (a map's children all finished).
ReadyCheck = Callable[[Cursor, str, str], bool]
#: An end listener's own one-statement end of a child run, with its work in it (a map's
#: child counting itself), for a store that ends runs in one statement (PostgreSQL):
#: given the run's and its parent's ids and the other listeners' probes, the statement's
#: SQL (the columns of ``postgres_ends.finish_sql``) and its parameters beyond the
#: finish's; None when it has none for this run.
EndStatement = Callable[[str, str, tuple[str, ...]], tuple[str, dict[str, Any]] | None]


class CoordinationStore(SQLStore):
    """The full storage contract: ``SQLStore`` plus ends, waits, events and children."""

    end_listeners: tuple[EndListener, ...] = ()
    end_probes: dict[EndListener, EndProbe] = {}  # noqa: RUF012 - replaced, never mutated
    ready_checks: dict[str, ReadyCheck] = {}  # noqa: RUF012 - replaced, never mutated
    end_statements: dict[EndListener, EndStatement] = {}  # noqa: RUF012 - as end_probes

    @retry_transient
    def finish(
        self,
        run_id: str,
        token: int,
        worker: str,
        to_state: State,
        now: float,
        *,
        output: str | None = None,
        error: str | None = None,
        available_at: float | None = None,
        reason: str | None = None,
        waiting_for: Sequence[str] = (),
        parent_id: str | None = None,
    ) -> None:
        """Move a run this worker holds out of running, and give up its lease."""
        check_run_transition(State.RUNNING, to_state)
        with self.unsynced() as cur:
            map_child = parent_id is not None and bool(_MAP_CHILD.match(run_id[len(parent_id) :]))
            if parent_id is not None and to_state in TERMINAL:
                self._lock_run(cur, parent_id, share=map_child)  # see the module's note
            cur.execute(
                "UPDATE surestep_runs SET state = ?, output = ?, error = ?, available_at = ?,"
                " lease_owner = NULL, lease_expires_at = NULL, updated_at = ?,"
                " waiting_for = ?, compensating = CASE WHEN ? THEN NULL ELSE compensating END,"
                " compensating_error = CASE WHEN ? THEN NULL ELSE compensating_error END"
                " WHERE id = ? AND lease_token = ? AND state = 'running' RETURNING queue",
                (
                    to_state,
                    output,
                    error,
                    available_at,
                    now,
                    json.dumps(list(waiting_for)) if waiting_for else None,
                    to_state in TERMINAL,
                    to_state in TERMINAL,
                    run_id,
                    token,
                ),
            )
            held = cur.fetchone()
            if held is None:
                raise LeaseLostError(f"run {run_id!r} is no longer held by {worker}")
            cur.execute(
                EVENT_INSERT,
                (run_id, None, None, State.RUNNING, to_state, now, worker, reason, None),
            )
            if to_state == State.WAITING and waiting_for and self._ready(cur, run_id, waiting_for):
                cur.execute("UPDATE surestep_runs SET available_at = ? WHERE id = ?", (now, run_id))
            if (
                to_state == State.NEEDS_REVIEW
                and waiting_for
                and self._ready(cur, run_id, waiting_for)
            ):
                # Decided while this worker was still parking the run: resume it.
                self._resume(cur, run_id, worker, "review decided", now)
                to_state = State.PENDING
            if to_state in (State.WAITING, State.PENDING):
                self._notify(cur)
            elif held[0] is not None:
                self._notify_queue(cur, held[0], now)
            if to_state in TERMINAL:
                if parent_id is not None and not map_child:
                    self._wake(cur, parent_id, f"child:{run_id}", now)
                if to_state != State.SUCCESS:
                    self._cancel_children(cur, run_id, worker, f"parent run {to_state}", now)
                # A run that ended without reaching a review it opened before (its code
                # changed): nothing will read those tasks' answers.
                for listener in self.end_listeners:
                    listener(cur, run_id, to_state, to_state, worker, reason or "ended", now)

    @retry_transient
    def cancel(self, run_id: str, actor: str, reason: str, now: float) -> State:
        """Cancel a run that has not finished, and its children; return its state before.

        A run with completed steps that have compensations goes to ``pending`` with
        ``compensating = 'cancelled'``: a worker undoes those steps, then cancels it.
        """
        with self.transaction() as cur:
            state = self._state_for_update(cur, run_id)
            if state in TERMINAL:
                raise InvalidOperationError(
                    f"run {run_id!r} already finished in state {state}; only a run that "
                    f"has not finished can be cancelled"
                )
            self._end(cur, run_id, state, State.CANCELLED, actor, reason, now)
        return state

    # -- durable waits ------------------------------------------------------------------

    @retry_transient
    def wait_step(
        self,
        run_id: str,
        token: int,
        worker: str,
        position: int,
        name: str,
        now: float,
        *,
        until: float | None = None,
        events: Sequence[str] = (),
        resolve: str | None = None,
        fail: str | None = None,
        reason: str | None = None,
    ) -> tuple[bool, str | None]:
        """The one write of a durable wait at ``position`` (a sleep, an event, a child).

        Creates the waiting step if it is not there. Then, if an event named in
        ``events`` is buffered, consumes the oldest and settles the step with it;
        otherwise settles it with ``resolve`` (success) or ``fail`` (failed) when one is
        given. Returns (settled, output JSON). Fenced; one transaction.
        """
        with self.transaction() as cur:
            self._fence(cur, run_id, token)
            self._begin_wait(cur, run_id, worker, position, name, now, until, reason)
            output, error = resolve, fail
            if events:
                message = self._take_message(cur, run_id, events, position, now)
                if message is not None:
                    output, error = message, None
            if output is None and error is None:
                return False, None
            to_state = State.SUCCESS if error is None else State.FAILED
            check_step_transition(State.WAITING, to_state)
            cur.execute(
                "UPDATE surestep_steps SET state = ?, output = ?, error = ?, finished_at = ?,"
                " next_attempt_at = NULL WHERE run_id = ? AND position = ?",
                (to_state, output, error, now, run_id, position),
            )
            cur.execute(
                EVENT_INSERT,
                (run_id, position, name, State.WAITING, to_state, now, worker, None, None),
            )
            return True, output

    @retry_transient
    def send_event(self, run_id: str, name: str, payload: str, sender: str, now: float) -> int:
        """Buffer an event for a run, and wake the run if it waits for it; return its id."""
        with self.transaction() as cur:
            cur.execute(
                f"SELECT state, waiting_for FROM surestep_runs WHERE id = ? {self.lock_for_update}",
                (run_id,),
            )
            row = cur.fetchone()
            if row is None:
                raise RunNotFoundError(
                    f"no run with id {run_id!r} to send event {name!r} to; "
                    f"`surestep runs` lists the runs there are"
                )
            if State(row[0]) in TERMINAL:
                raise InvalidOperationError(
                    f"run {run_id!r} already finished in state {row[0]}; no wait will ever "
                    f"receive event {name!r}"
                )
            cur.execute(
                "INSERT INTO surestep_messages (run_id, name, payload, sent_at, sender)"
                " VALUES (?, ?, ?, ?, ?)",
                (run_id, name, payload, now, sender),
            )
            cur.execute(
                "SELECT MAX(id) FROM surestep_messages WHERE run_id = ? AND name = ?",
                (run_id, name),
            )
            message_id = int(cur.fetchone()[0])
            self._wake(cur, run_id, f"event:{name}", now, locked=True)
        return message_id

    @retry_transient
    def start_child(
        self,
        run_id: str,
        token: int,
        worker: str,
        position: int,
        name: str,
        child_id: str,
        workflow: str,
        version: str,
        inputs: str,
        now: float,
        placement: Placement | None = None,
    ) -> None:
        """Create the child run (once) and the parent's step that waits for it."""
        with self.transaction() as cur:
            self._fence(cur, run_id, token)
            # A child run continues its parent's trace (docs/traces.md).
            cur.execute(
                "INSERT INTO surestep_runs (id, workflow, workflow_version, state, inputs,"
                " created_at, updated_at, available_at, parent_id, queue, priority,"
                " concurrency_key, trace_context)"
                " VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?,"
                " (SELECT trace_context FROM surestep_runs WHERE id = ?))"
                " ON CONFLICT (id) DO NOTHING",
                (
                    child_id,
                    workflow,
                    version,
                    inputs,
                    now,
                    now,
                    now,
                    run_id,
                    *placement_columns(placement),
                    run_id,
                ),
            )
            if cur.rowcount == 1:
                cur.execute(
                    EVENT_INSERT,
                    (
                        child_id,
                        None,
                        None,
                        None,
                        State.PENDING,
                        now,
                        worker,
                        f"started by run {run_id}",
                        None,
                    ),
                )
                self._notify(cur)
            self._begin_wait(
                cur,
                run_id,
                worker,
                position,
                name,
                now,
                None,
                f"waiting for child run {child_id}",
            )

    # -- deadlines and compensation -----------------------------------------------------

    @retry_transient
    def enforce_deadlines(self, now: float, actor: str, limit: int = 100) -> list[str]:
        """Apply the consequence of every passed deadline; return the runs affected.

        Works whether or not a worker was alive at the moment of the breach: whichever
        worker looks next applies it.
        """
        # Almost always nothing is due: find out with a read, so that the sweep does not
        # take the write lock (SQLite's one writer) every time it looks.
        with self.reading() as cur:
            cur.execute(
                "SELECT 1 FROM surestep_runs WHERE deadline_at <= ?"
                f" AND state IN {DEADLINE_STATES} LIMIT 1",
                (now,),
            )
            if cur.fetchone() is None:
                return []
        with self.transaction() as cur:
            cur.execute(
                "SELECT id, state, on_deadline FROM surestep_runs WHERE deadline_at <= ?"
                f" AND state IN {DEADLINE_STATES}"
                f" ORDER BY deadline_at LIMIT ? {self.lock_rows}",
                (now, limit),
            )
            due = cur.fetchall()
            for run_id, state, on_deadline in due:
                consequence = {"cancel": State.CANCELLED, "review": State.NEEDS_REVIEW}.get(
                    on_deadline, State.FAILED
                )
                cur.execute(
                    "UPDATE surestep_runs SET deadline_breached_at = ?, deadline_at = NULL"
                    " WHERE id = ?",
                    (now, run_id),
                )
                if state == consequence:  # already with a person: the breach is noted
                    cur.execute(
                        EVENT_INSERT,
                        (run_id, None, None, state, state, now, actor, "deadline breached", None),
                    )
                    continue
                self._end(
                    cur,
                    run_id,
                    State(state),
                    consequence,
                    actor,
                    f"deadline breached; on_deadline={on_deadline}",
                    now,
                )
        return [row[0] for row in due]

    @retry_transient
    def begin_compensation(self, run_id: str, token: int, final: State, error: str | None) -> None:
        """Mark a run this worker holds as undoing its steps before it ends in ``final``."""
        with self.transaction() as cur:
            self._fence(cur, run_id, token)
            cur.execute(
                "UPDATE surestep_runs SET compensating = ?, compensating_error = ?, error = ?"
                " WHERE id = ?",
                (final, error, error, run_id),
            )

    @retry_transient
    def count_deadline_breaches(self) -> int:
        with self.reading() as cur:
            cur.execute("SELECT COUNT(*) FROM surestep_runs WHERE deadline_breached_at IS NOT NULL")
            return int(cur.fetchone()[0])

    # -- pieces -------------------------------------------------------------------------

    def _end(
        self,
        cur: Cursor,
        run_id: str,
        state: State,
        final: State,
        actor: str,
        reason: str,
        now: float,
    ) -> None:
        """End an unfinished run in ``final`` (failed, cancelled or needs_review), or hand
        it to a worker to undo its completed steps first."""
        error = json.dumps(
            {
                "type": "Cancelled" if final == State.CANCELLED else "DeadlineExceeded",
                "message": reason,
            }
        )
        cur.execute(_COMPENSABLE, (run_id,))
        compensable = int(cur.fetchone()[0])
        if final != State.NEEDS_REVIEW and compensable:
            to_state, why = State.PENDING, f"{reason}; undoing {compensable} completed step(s)"
            available_at: float | None = now
            compensating: str | None = final
        else:
            to_state, why, available_at, compensating = final, reason, None, None
        if to_state != state:
            check_run_transition(state, to_state)
        cur.execute(
            "UPDATE surestep_runs SET state = ?, lease_owner = NULL, lease_expires_at = NULL,"
            " available_at = ?, updated_at = ?, error = ?, waiting_for = NULL,"
            " compensating = COALESCE(?, compensating),"
            " compensating_error = CASE WHEN CAST(? AS TEXT) IS NULL THEN compensating_error"
            " ELSE ? END"
            " WHERE id = ?",
            (to_state, available_at, now, error, compensating, compensating, error, run_id),
        )
        cur.execute(EVENT_INSERT, (run_id, None, None, state, to_state, now, actor, why, None))
        if to_state == State.PENDING or state == State.RUNNING:  # (a queue's place freed)
            self._notify(cur)
        for listener in self.end_listeners:
            listener(cur, run_id, to_state, final, actor, reason, now)
        if final != State.NEEDS_REVIEW:
            self._cancel_children(cur, run_id, actor, f"parent run {final}", now)

    def _begin_wait(
        self,
        cur: Cursor,
        run_id: str,
        worker: str,
        position: int,
        name: str,
        now: float,
        until: float | None,
        reason: str | None,
    ) -> None:
        """Create the waiting step at ``position`` (pending -> waiting), once."""
        cur.execute(
            "INSERT INTO surestep_steps (run_id, position, name, state, attempts,"
            " started_at, next_attempt_at) VALUES (?, ?, ?, 'waiting', 0, ?, ?)"
            " ON CONFLICT (run_id, position) DO NOTHING",
            (run_id, position, name, now, until),
        )
        if cur.rowcount == 1:
            check_step_transition(State.PENDING, State.WAITING)
            cur.execute(
                EVENT_INSERT,
                (run_id, position, name, State.PENDING, State.WAITING, now, worker, reason, None),
            )

    def _cancel_children(
        self,
        cur: Cursor,
        parent_id: str,
        actor: str,
        reason: str,
        now: float,
        *,
        prefix: str | None = None,
    ) -> int:
        """Cancel a run's unfinished children (those whose id starts with ``prefix``:
        one map's); return how many."""
        narrow = "" if prefix is None else " AND substr(id, 1, ?) = ?"
        args: tuple[object, ...] = (
            (parent_id,) if prefix is None else (parent_id, len(prefix), prefix)
        )
        cur.execute(
            "SELECT id, state FROM surestep_runs WHERE parent_id = ?"
            " AND state IN ('pending', 'running', 'waiting', 'dead_letter', 'needs_review')"
            f"{narrow} {self.lock_for_update}",
            args,
        )
        found = cur.fetchall()
        for child_id, state in found:
            self._end(cur, child_id, State(state), State.CANCELLED, actor, reason, now)
        return len(found)

    def _take_message(
        self, cur: Cursor, run_id: str, names: Sequence[str], position: int, now: float
    ) -> str | None:
        """Consume the oldest buffered event among ``names``; return it as output JSON."""
        marks = ", ".join("?" for _ in names)
        cur.execute(
            "SELECT id, name, payload FROM surestep_messages WHERE run_id = ?"
            f" AND name IN ({marks}) AND consumed_at IS NULL ORDER BY id LIMIT 1",
            (run_id, *names),
        )
        row = cur.fetchone()
        if row is None:
            return None
        where = Where("surestep_messages", run_id, position)
        payload = json_value(row[2], where, f"payload (event {row[1]!r}, message {row[0]})")
        cur.execute(
            "UPDATE surestep_messages SET consumed_at = ?, consumed_position = ? WHERE id = ?",
            (now, position, row[0]),
        )
        return json.dumps({"event": row[1], "payload": payload})

    def _ready(self, cur: Cursor, run_id: str, waiting_for: Sequence[str]) -> bool:
        """Whether anything a run waits for has happened already: a buffered event it
        waits for, or a child run that finished."""
        events = [item.split(":", 1)[1] for item in waiting_for if item.startswith("event:")]
        if events:
            marks = ", ".join("?" for _ in events)
            cur.execute(
                "SELECT 1 FROM surestep_messages WHERE run_id = ?"
                f" AND name IN ({marks}) AND consumed_at IS NULL LIMIT 1",
                (run_id, *events),
            )
            if cur.fetchone() is not None:
                return True
        reviews = [item.split(":", 1)[1] for item in waiting_for if item.startswith("review:")]
        for task_id in reviews:
            cur.execute(
                "SELECT 1 FROM surestep_review_tasks WHERE id = ? AND state <> 'open'",
                (int(task_id),),
            )
            if cur.fetchone() is not None:
                return True
        for item in waiting_for:
            kind, _, key = item.partition(":")
            check = self.ready_checks.get(kind)
            if check is not None and check(cur, run_id, key):
                return True
        children = [item.split(":", 1)[1] for item in waiting_for if item.startswith("child:")]
        for child_id in children:
            cur.execute(
                "SELECT 1 FROM surestep_runs WHERE id = ?"
                " AND state IN ('success', 'failed', 'cancelled')",
                (child_id,),
            )
            if cur.fetchone() is not None:
                return True
        return False

    def _wake(
        self, cur: Cursor, run_id: str, reason: str, now: float, *, locked: bool = False
    ) -> None:
        """Make a waiting run claimable now if it waits for ``reason``."""
        if not locked:
            self._lock_run(cur, run_id)
        cur.execute("SELECT state, waiting_for FROM surestep_runs WHERE id = ?", (run_id,))
        row = cur.fetchone()
        if row is None or row[0] not in (State.WAITING, State.NEEDS_REVIEW) or not row[1]:
            return
        try:
            waits_for = json_value(row[1], Where("surestep_runs", run_id), "waiting_for")
        except CorruptRecordError:
            # Unreadable: wake the run anyway. A run woken early finds nothing at its
            # wait and waits again, with a fresh waiting_for; one never woken is stuck.
            waits_for = [reason]
        if reason not in waits_for:
            return
        if row[0] == State.NEEDS_REVIEW:
            self._resume(cur, run_id, "surestep", reason.replace(":", " ", 1) + " decided", now)
            return
        cur.execute(
            "UPDATE surestep_runs SET available_at = ?, waiting_for = NULL WHERE id = ?",
            (now, run_id),
        )
        self._notify(cur)

    def _resume(self, cur: Cursor, run_id: str, actor: str, reason: str, now: float) -> None:
        """needs_review -> pending: what the run waited for was decided."""
        check_run_transition(State.NEEDS_REVIEW, State.PENDING)
        cur.execute(
            "UPDATE surestep_runs SET state = 'pending', available_at = ?, waiting_for = NULL,"
            " updated_at = ? WHERE id = ?",
            (now, now, run_id),
        )
        cur.execute(
            EVENT_INSERT,
            (run_id, None, None, State.NEEDS_REVIEW, State.PENDING, now, actor, reason, None),
        )
        self._notify(cur)

    def _notify_queue(self, cur: Cursor, queue: str, now: float) -> None:
        """A run of ``queue`` left running, freeing a place: wake idle workers (held back
        by the queue's limit, they would wait for their next poll), if runs of the queue
        are due. Not otherwise: PostgreSQL serialises the commits that NOTIFY."""
        if self.notify_sql is not None:
            cur.execute(
                f"{self.notify_sql} WHERE EXISTS (SELECT 1 FROM surestep_runs WHERE queue = ?"
                " AND state IN ('pending', 'waiting') AND available_at <= ?)",
                (queue, now),
            )

    def _lock_run(self, cur: Cursor, run_id: str, *, share: bool = False) -> None:
        # Key share: blocks only FOR UPDATE (a cancel), not other sharers nor an update
        # of the row's other columns. (A dialect without row locks has neither.)
        lock = (self.lock_for_update and "FOR KEY SHARE") if share else self.lock_for_update
        cur.execute(f"SELECT 1 FROM surestep_runs WHERE id = ? {lock}", (run_id,))
