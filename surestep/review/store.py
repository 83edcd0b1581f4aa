"""The review store: tasks, their inbox and their decisions, kept in the run store's
database and written in its transactions (composition, not another layer of the run
store's classes).

Lock order, as for events and children: whatever changes a run and a task locks the
run's row first, then the task's. A decision made while the run is still running (the
worker has not yet parked it) is seen by the worker's own finish, which checks what the
run waits for after locking its row.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from surestep.errors import (
    ReviewConflictError,
    ReviewNotFoundError,
    ReviewValidationError,
    SurestepError,
)
from surestep.review import audit, resolve
from surestep.review.policy import Escalate, on_due, principals, visible_to
from surestep.review.records import RUN_DEADLINE, STEP_EXHAUSTED, outcomes_for
from surestep.review.rows import TASK_COLUMNS, TaskSpec, task_fields
from surestep.states import State, check_step_transition
from surestep.storage import Store
from surestep.storage.base import EVENT_INSERT
from surestep.storage.rows import Cursor
from surestep.storage.transient import retry_transient

log = logging.getLogger("surestep.review")

#: The inbox's sort key for a task with no due time: after every real one.
NO_DUE = 1e18

#: Who is asked about a run whose deadline passed with on_deadline="review".
DEADLINE_REVIEWERS = ("group:operators",)
#: When ``_on_run_end`` may have work: a run parked for a person, or one with open tasks.
_END_PROBE = (
    "ending.state = 'needs_review' OR EXISTS (SELECT 1 FROM surestep_review_tasks AS t"
    " WHERE t.run_id = ending.run_id AND t.state = 'open')"
)


class ReviewStore:
    """Review tasks in the database of ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reconnect_timeout = store.reconnect_timeout

    @classmethod
    def attach(cls, store: Store) -> ReviewStore:
        """Make the run store keep review tasks in step with their runs: a run parked
        by its deadline gets a task; a cancelled or failed run's open tasks close."""
        reviews = cls(store)
        store.end_listeners = (*store.end_listeners, reviews._on_run_end)
        store.end_probes = {**store.end_probes, reviews._on_run_end: _END_PROBE}
        return reviews

    # -- opening ------------------------------------------------------------------

    @retry_transient
    def open_at(
        self,
        run_id: str,
        token: int,
        worker: str,
        position: int,
        name: str,
        spec: TaskSpec,
        now: float,
    ) -> tuple[int | None, bool]:
        """Open the task that waits at ``position`` of a run this worker holds; return
        its id and whether it is new (a replay that reaches the position again gets the
        same task). The id is None when the position was decided since the worker read
        the run's history (a decision that landed while the run was executing): the
        caller must not open another task, but run again on the fresh history."""
        with self.store.transaction() as cur:
            self.store._fence(cur, run_id, token)
            cur.execute(
                "SELECT id FROM surestep_review_tasks WHERE run_id = ? AND position = ?"
                " AND state = 'open'",
                (run_id, position),
            )
            row = cur.fetchone()
            if row is not None:
                return int(row[0]), False
            if self._decided_meanwhile(cur, run_id, position, spec.kind):
                return None, False
            self._step_needs_review(cur, run_id, position, name, worker, now)
            if spec.kind == STEP_EXHAUSTED:
                spec = _with_attempts(cur, run_id, position, spec)
            return self._insert(cur, run_id, position, spec, worker, now), True

    def _decided_meanwhile(self, cur: Cursor, run_id: str, position: int, kind: str) -> bool:
        cur.execute(
            "SELECT state FROM surestep_steps WHERE run_id = ? AND position = ?",
            (run_id, position),
        )
        row = cur.fetchone()
        state = None if row is None else row[0]
        # A request's step goes back to pending only by a redrive (reopen then); an
        # exhausted step's, by a reviewer's retry (which must not be reviewed again).
        return state in (State.SUCCESS, State.DEAD_LETTER) or (
            state == State.PENDING and kind == STEP_EXHAUSTED
        )

    def _step_needs_review(
        self, cur: Cursor, run_id: str, position: int, name: str, actor: str, now: float
    ) -> None:
        """The step at ``position`` waits for the review: a new one, one a redrive put
        back to pending, or (already) a step that exhausted its retries."""
        cur.execute(
            "INSERT INTO surestep_steps (run_id, position, name, state, attempts, started_at)"
            " VALUES (?, ?, ?, 'needs_review', 0, ?) ON CONFLICT (run_id, position) DO NOTHING",
            (run_id, position, name, now),
        )
        if cur.rowcount == 0:
            cur.execute(
                "UPDATE surestep_steps SET state = 'needs_review' WHERE run_id = ?"
                " AND position = ? AND state = 'pending'",
                (run_id, position),
            )
        if cur.rowcount == 1:
            check_step_transition(State.PENDING, State.NEEDS_REVIEW)
            cur.execute(
                EVENT_INSERT,
                (run_id, position, name, State.PENDING, State.NEEDS_REVIEW, now, actor, None, None),
            )

    def _insert(
        self,
        cur: Cursor,
        run_id: str,
        position: int | None,
        spec: TaskSpec,
        actor: str,
        now: float,
    ) -> int:
        who = principals(spec.assignee, spec.groups)
        due_at = None if spec.sla is None else now + spec.sla
        cur.execute(
            "INSERT INTO surestep_review_tasks (run_id, position, kind, workflow, state,"
            " payload, sensitive, proposal, confidence, form, instructions, context,"
            " assignee, groups, escalate_to, priority, sla, due_at, on_expiry, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?) RETURNING id",
            (
                run_id,
                position,
                spec.kind,
                spec.workflow,
                spec.payload,
                json.dumps(list(spec.sensitive)),
                spec.proposal,
                spec.confidence,
                spec.form,
                spec.instructions,
                spec.context,
                spec.assignee,
                json.dumps(list(spec.groups)),
                json.dumps(list(spec.escalate_to)),
                spec.priority,
                spec.sla,
                due_at,
                spec.on_expiry,
                now,
                now,
            ),
        )
        task_id = int(cur.fetchone()[0])
        self._set_inbox(cur, task_id, who, spec.priority, due_at, spec.kind)
        self._event(
            cur,
            run_id,
            position,
            spec.kind,
            actor,
            now,
            f"review task {task_id} opened for {', '.join(who)}",
        )
        return task_id

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
        if to_state == State.NEEDS_REVIEW:
            cur.execute("SELECT workflow FROM surestep_runs WHERE id = ?", (run_id,))
            workflow = cur.fetchone()[0]
            payload = {"run_id": run_id, "workflow": workflow, "reason": reason}
            spec = TaskSpec(
                kind=RUN_DEADLINE,
                workflow=workflow,
                payload=json.dumps(payload),
                groups=[g.split(":", 1)[1] for g in DEADLINE_REVIEWERS],
                instructions="The run's deadline passed. Resume it, fail it or cancel it.",
                priority=80,
            )
            self._insert(cur, run_id, None, spec, actor, now)
        elif final != State.NEEDS_REVIEW:
            self.cancel_open(cur, run_id, actor, f"run {final}: {reason}", now)

    def cancel_open(self, cur: Cursor, run_id: str, actor: str, reason: str, now: float) -> None:
        """Close the open tasks of a run that will not resume."""
        cur.execute(
            "SELECT id, position, kind FROM surestep_review_tasks WHERE run_id = ?"
            " AND state = 'open'",
            (run_id,),
        )
        for task_id, position, kind in cur.fetchall():
            task = {"id": task_id, "run_id": run_id, "position": position, "kind": kind}
            self._close(cur, task, "cancelled", actor, now, f"cancelled: {reason}")

    def _close(
        self, cur: Cursor, task: dict[str, Any], state: str, actor: str, now: float, why: str
    ) -> None:
        cur.execute(
            "UPDATE surestep_review_tasks SET state = ?, updated_at = ? WHERE id = ?",
            (state, now, task["id"]),
        )
        cur.execute("DELETE FROM surestep_review_inbox WHERE task_id = ?", (task["id"],))
        self._log(cur, task, actor, now, f"review task {task['id']} {why}")

    # -- reviewer actions ---------------------------------------------------------------

    @retry_transient
    def claim(
        self, task_id: int, by: str, now: float, *, as_member_of: Sequence[str] | None = None
    ) -> None:
        with self.store.transaction() as cur:
            task = self._open_for_update(cur, task_id, offered_to=_offer(by, as_member_of))
            if task["claimed_by"] not in (None, by):
                raise ReviewConflictError(
                    f"review task {task_id} is claimed by {task['claimed_by']}; ask them to "
                    f"release it, or have an operator reassign it",
                    reason="claimed",
                )
            cur.execute(
                "UPDATE surestep_review_tasks SET claimed_by = ?, claimed_at = ?, updated_at = ?"
                " WHERE id = ?",
                (by, now, now, task_id),
            )
            self._log(cur, task, by, now, f"review task {task_id} claimed")

    @retry_transient
    def release(self, task_id: int, by: str, now: float, *, force: bool = False) -> None:
        with self.store.transaction() as cur:
            task = self._open_for_update(cur, task_id)
            if task["claimed_by"] is None:
                return
            if task["claimed_by"] != by and not force:
                raise ReviewConflictError(
                    f"review task {task_id} is claimed by {task['claimed_by']}, not {by}",
                    reason="claimed",
                )
            cur.execute(
                "UPDATE surestep_review_tasks SET claimed_by = NULL, claimed_at = NULL,"
                " follow_up_at = NULL, updated_at = ? WHERE id = ?",
                (now, task_id),
            )
            self._log(cur, task, by, now, f"review task {task_id} released by {task['claimed_by']}")

    @retry_transient
    def snooze(self, task_id: int, by: str, until: float, now: float) -> None:
        with self.store.transaction() as cur:
            task = self._open_for_update(cur, task_id)
            if task["claimed_by"] != by:
                raise ReviewConflictError(
                    f"claim review task {task_id} before setting a follow-up on it",
                    reason="not_claimed",
                )
            cur.execute(
                "UPDATE surestep_review_tasks SET follow_up_at = ?, updated_at = ? WHERE id = ?",
                (until, now, task_id),
            )
            self._log(cur, task, by, now, f"review task {task_id}: follow up at {until:.0f}")

    @retry_transient
    def reassign(
        self,
        task_id: int,
        assignee: str | None,
        groups: Sequence[str],
        by: str,
        reason: str,
        now: float,
    ) -> list[str]:
        """Give an open task to other people; return who sees it now."""
        who = principals(assignee, groups)
        with self.store.transaction() as cur:
            task = self._open_for_update(cur, task_id)
            cur.execute(
                "UPDATE surestep_review_tasks SET assignee = ?, groups = ?, claimed_by = NULL,"
                " claimed_at = NULL, updated_at = ? WHERE id = ?",
                (assignee, json.dumps(list(groups)), now, task_id),
            )
            self._set_inbox(cur, task_id, who, task["priority"], task["due_at"], task["kind"])
            self._log(
                cur,
                task,
                by,
                now,
                f"review task {task_id} reassigned to {', '.join(who)}: {reason}",
            )
        return who

    @retry_transient
    def decide(
        self,
        task_id: int,
        outcome: str,
        by: str,
        data: str | None,
        comment: str | None,
        now: float,
        *,
        force: bool = False,
        as_member_of: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Record a decision and resume (or end) the run; return the decision as stored.

        Exactly one decision wins: the task row is locked and must still be open. With
        ``as_member_of``, ``by`` is a reviewer in those groups, and the task must be
        offered to them as it is now (checked under the lock: a reassignment that lands
        first wins).
        """
        with self.store.transaction() as cur:
            run_id = self._run_of(cur, task_id)
            cur.execute(
                f"SELECT state FROM surestep_runs WHERE id = ? {self.store.lock_for_update}",
                (run_id,),
            )
            run_state = State(cur.fetchone()[0])
            task = self._open_for_update(cur, task_id, offered_to=_offer(by, as_member_of))
            if run_state in (State.SUCCESS, State.FAILED, State.CANCELLED):
                raise ReviewConflictError(
                    f"run {run_id!r} of review task {task_id} is {run_state}; nothing waits "
                    f"for this decision any more",
                    reason=f"run_{run_state}",
                )
            if task["claimed_by"] not in (None, by) and not force:
                raise ReviewConflictError(
                    f"review task {task_id} is claimed by {task['claimed_by']}; ask them to "
                    f"release it, or have an operator reassign it",
                    reason="claimed",
                )
            if outcome not in outcomes_for(task["kind"]):
                raise ReviewValidationError(
                    f"a {task['kind']} task takes {', '.join(outcomes_for(task['kind']))}, "
                    f"not {outcome!r}",
                    fields=[{"path": "outcome", "message": f"unknown outcome {outcome!r}"}],
                )
            return self._settle(cur, task, run_state, outcome, by, data, comment, now)

    def _settle(
        self,
        cur: Cursor,
        task: dict[str, Any],
        run_state: State,
        outcome: str,
        by: str,
        data: str | None,
        comment: str | None,
        now: float,
    ) -> dict[str, Any]:
        resolve.validate(task, outcome, None if data is None else json.loads(data))
        if outcome == "approve" and data is None:
            approved = task["proposal"] if task["proposal"] is not None else task["payload"]
            data = json.dumps(approved)
        cur.execute(
            "UPDATE surestep_review_tasks SET state = 'decided', outcome = ?, data = ?,"
            " reviewer = ?, comment = ?, decided_at = ?, updated_at = ? WHERE id = ?",
            (outcome, data, by, comment, now, now, task["id"]),
        )
        cur.execute("DELETE FROM surestep_review_inbox WHERE task_id = ?", (task["id"],))
        decision = {
            "task_id": task["id"],
            "outcome": outcome,
            "data": None if data is None else json.loads(data),
            "reviewer": by,
            "comment": comment,
            "decided_at": now,
        }
        audit.append(cur, task, decision)
        self._log(
            cur,
            task,
            by,
            now,
            f"review task {task['id']} decided: {outcome}" + (f" ({comment})" if comment else ""),
        )
        resolve.apply(self.store, cur, task, run_state, decision, now)
        return decision

    # -- time: SLAs, escalation, expiry -------------------------------------------------

    @retry_transient
    def next_due(self) -> float | None:
        """When the earliest open task's SLA runs out (an idle worker wakes then)."""
        with self.store.reading() as cur:
            cur.execute(
                "SELECT MIN(due_at) FROM surestep_review_tasks WHERE state = 'open'"
                " AND overdue_since IS NULL"
            )
            row = cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    @retry_transient
    def sweep(self, now: float, actor: str, limit: int = 100) -> list[tuple[int, str]]:
        """Escalate or expire every open task past its due time; return (task, what)."""
        due = self.next_due()
        if due is None or due > now:
            return []  # a read, so the sweep rarely takes the write lock
        done: list[tuple[int, str]] = []
        with self.store.transaction() as cur:
            cur.execute(
                "SELECT id FROM surestep_review_tasks WHERE state = 'open'"
                " AND overdue_since IS NULL AND due_at <= ? ORDER BY due_at LIMIT ?",
                (now, limit),
            )
            for (task_id,) in cur.fetchall():
                what = self._on_due_safely(cur, int(task_id), actor, now)
                if what is not None:
                    done.append((int(task_id), what))
        return done

    def _on_due_safely(self, cur: Cursor, task_id: int, actor: str, now: float) -> str | None:
        """One task's due time; a task that cannot be handled never stops the sweep (nor
        the worker running it), and is not tried again and again."""
        try:
            return self._on_due(cur, task_id, actor, now)
        except (ReviewConflictError, ReviewNotFoundError):
            return None  # decided, or swept by another worker, since we looked
        except SurestepError as exc:
            log.error("review task %s: cannot apply its due time: %s; kept open", task_id, exc)
            cur.execute(
                "UPDATE surestep_review_tasks SET overdue_since = ? WHERE id = ?", (now, task_id)
            )
            return "kept open, overdue (its escalation failed)"

    def _on_due(self, cur: Cursor, task_id: int, actor: str, now: float) -> str | None:
        run_id = self._run_of(cur, task_id)
        cur.execute(
            f"SELECT state FROM surestep_runs WHERE id = ? {self.store.lock_for_update}",
            (run_id,),
        )
        row = cur.fetchone()
        task = self._open_for_update(cur, task_id)
        if task["overdue_since"] is not None or task["due_at"] is None or task["due_at"] > now:
            return None  # another worker applied this due time first
        if row is None:  # its run was deleted behind our back
            self._close(cur, task, "cancelled", actor, now, "cancelled: its run is gone")
            return "cancelled: the run is gone"
        run_state = State(row[0])
        step = on_due(task["escalate_to"], task["level"], task["sla"], task["on_expiry"], now)
        if isinstance(step, Escalate):
            cur.execute(
                "UPDATE surestep_review_tasks SET level = ?, due_at = ?, claimed_by = NULL,"
                " claimed_at = NULL, assignee = ?, groups = ?, updated_at = ? WHERE id = ?",
                (
                    step.level,
                    step.due_at,
                    step.to.split(":", 1)[1] if step.to.startswith("user:") else None,
                    json.dumps([step.to.split(":", 1)[1]] if step.to.startswith("group:") else []),
                    now,
                    task_id,
                ),
            )
            self._set_inbox(cur, task_id, [step.to], task["priority"], step.due_at, task["kind"])
            self._log(
                cur,
                task,
                actor,
                now,
                f"review task {task_id} overdue; escalated to {step.to} (level {step.level})",
            )
            return f"escalated to {step.to}"
        if step.action == "dead_letter":
            resolve.dead_letter(self.store, cur, task, run_state, actor, "review expired", now)
            self._close(cur, task, "expired", actor, now, "expired; run dead-lettered")
            return "expired: dead_letter"
        if step.action in outcomes_for(task["kind"]):
            self._settle(cur, task, run_state, step.action, actor, None, "SLA expired", now)
            cur.execute(
                "UPDATE surestep_review_tasks SET state = 'expired' WHERE id = ?", (task_id,)
            )
            return f"expired: {step.action}"
        cur.execute(
            "UPDATE surestep_review_tasks SET overdue_since = ?, updated_at = ? WHERE id = ?",
            (now, now, task_id),
        )
        self._log(cur, task, actor, now, f"review task {task_id} overdue; kept open")
        return "kept open, overdue"

    # -- pieces -------------------------------------------------------------------------

    def _run_of(self, cur: Cursor, task_id: int) -> str:
        cur.execute("SELECT run_id FROM surestep_review_tasks WHERE id = ?", (task_id,))
        row = cur.fetchone()
        if row is None:
            raise ReviewNotFoundError(
                f"no review task {task_id}; `surestep review list` shows them"
            )
        return str(row[0])

    def _open_for_update(
        self, cur: Cursor, task_id: int, *, offered_to: tuple[str, Sequence[str]] | None = None
    ) -> dict[str, Any]:
        cur.execute(
            f"SELECT {TASK_COLUMNS} FROM surestep_review_tasks WHERE id = ?"
            f" {self.store.lock_for_update}",
            (task_id,),
        )
        row = cur.fetchone()
        if row is None:
            raise ReviewNotFoundError(
                f"no review task {task_id}; `surestep review list` shows them"
            )
        task = task_fields(row)
        if offered_to is not None and not visible_to(
            principals(task["assignee"], task["groups"]), *offered_to
        ):
            raise ReviewNotFoundError(f"no review task {task_id} for {offered_to[0]}")
        if task["state"] != "open":
            raise ReviewConflictError(
                f"review task {task_id} is {task['state']}"
                + (f" (by {task['reviewer']})" if task["reviewer"] else "")
                + "; it takes no more actions",
                reason=str(task["state"]),
            )
        return task

    def _set_inbox(
        self,
        cur: Cursor,
        task_id: int,
        who: Sequence[str],
        priority: int,
        due_at: float | None,
        kind: str,
    ) -> None:
        cur.execute("DELETE FROM surestep_review_inbox WHERE task_id = ?", (task_id,))
        cur.executemany(
            "INSERT INTO surestep_review_inbox (principal, priority, due_at, task_id, kind)"
            " VALUES (?, ?, ?, ?, ?)",
            [(p, priority, NO_DUE if due_at is None else due_at, task_id, kind) for p in who],
        )

    def _log(self, cur: Cursor, task: dict[str, Any], actor: str, now: float, reason: str) -> None:
        self._event(cur, task["run_id"], task["position"], task["kind"], actor, now, reason)

    def _event(
        self,
        cur: Cursor,
        run_id: str,
        position: int | None,
        kind: str,
        actor: str,
        now: float,
        reason: str,
    ) -> None:
        # Review events are changes of the task, not of the run or step's state: they
        # are logged as needs_review -> needs_review with the task change as the reason.
        cur.execute(
            EVENT_INSERT,
            (
                run_id,
                position,
                f"review:{kind}",
                State.NEEDS_REVIEW,
                State.NEEDS_REVIEW,
                now,
                actor,
                reason,
                None,
            ),
        )


def _with_attempts(cur: Cursor, run_id: str, position: int, spec: TaskSpec) -> TaskSpec:
    """A step_exhausted task's context and payload with every attempt and the last error."""
    cur.execute(
        "SELECT attempt, state, started_at, finished_at, worker, error FROM surestep_attempts"
        " WHERE run_id = ? AND position = ? ORDER BY attempt",
        (run_id, position),
    )
    attempts = []
    for attempt, state, started, finished, worker, error in cur.fetchall():
        try:
            info = json.loads(error) if error else None
        except ValueError:
            info = {"type": "unreadable", "message": str(error)[:200]}
        attempts.append(
            {
                "attempt": attempt,
                "state": state,
                "started_at": started,
                "finished_at": finished,
                "worker": worker,
                "error": info,
            }
        )
    last = next((a["error"] for a in reversed(attempts) if a["error"]), None)
    brief = None if last is None else {"type": last.get("type"), "message": last.get("message")}
    context = {**json.loads(spec.context or "{}"), "attempts": attempts, "error": last}
    payload = {**json.loads(spec.payload), "error": brief, "attempts": len(attempts)}
    return replace(spec, context=json.dumps(context), payload=json.dumps(payload))


def _offer(user: str, groups: Sequence[str] | None) -> tuple[str, Sequence[str]] | None:
    return None if groups is None else (user, groups)
