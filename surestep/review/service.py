"""``app.reviews``: list, claim, reassign and decide review tasks; figures and export.

The CLI and the REST API call these functions; they check who may do what (the API's
users and roles) before they call.

>>> app.reviews.list(group="finance", kind="approve_invoice")          # doctest: +SKIP
>>> app.reviews.decide(17, "approve", by="alice", comment="totals match") # doctest: +SKIP
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from surestep.clock import Clock
from surestep.errors import ConfigurationError, ReviewNotFoundError, SurestepError
from surestep.hooks import Hooks
from surestep.names import check_name
from surestep.review import audit
from surestep.review.queries import ORDERS, ReviewQueries
from surestep.review.records import Decision, ReviewStats, ReviewTask
from surestep.review.rows import masked
from surestep.review.stats import summarize
from surestep.review.store import ReviewStore
from surestep.serialization import dumps
from surestep.storage import Store


class ReviewHost(Protocol):
    """What ``Reviews`` needs of its App."""

    clock: Clock
    hooks: Hooks
    actor: str

    @property
    def store(self) -> Store: ...

    def wake_workers(self) -> None: ...


class Reviews:
    """The review tasks of one App's database."""

    def __init__(self, host: ReviewHost) -> None:
        self._host = host

    @property
    def _writes(self) -> ReviewStore:
        return ReviewStore(self._host.store)

    @property
    def _reads(self) -> ReviewQueries:
        return ReviewQueries(self._host.store)

    # -- reading ------------------------------------------------------------------------

    def list(
        self,
        *,
        assignee: str | None = None,
        group: str | None = None,
        groups: Sequence[str] = (),
        kind: str | None = None,
        state: str | None = "open",
        overdue: bool | None = None,
        order: str = "priority",
        run_id: str | None = None,
        limit: int = 50,
    ) -> builtins.list[ReviewTask]:
        """Review tasks, highest priority first.

        With ``assignee`` and/or ``group``/``groups``: the open tasks those may take
        (an inbox: index-backed, whatever the number of open tasks). Otherwise every
        task in ``state`` (None: any), optionally of one ``kind`` or ``run_id``.
        ``overdue=True`` keeps only tasks past their due time; False, only the others.
        """
        if order not in ORDERS:
            raise ConfigurationError(f"order={order!r}; use one of {', '.join(ORDERS)}")
        if not 1 <= limit <= 1000:
            raise ConfigurationError(f"limit must be from 1 to 1000, got {limit}")
        for what, value in (("assignee", assignee), ("group", group), ("kind", kind)):
            if value is not None:
                check_name(what, value)  # a NUL or a 10 kB filter: say so, not a DB error
        if run_id is not None:
            check_name("run_id", run_id)
        for each in groups:
            check_name("group", each)
        now = self._host.clock.now()
        everyone = [*groups, *([] if group is None else [group])]
        if assignee is not None or everyone:
            if state not in ("open", None):
                raise ConfigurationError("an inbox (assignee= or group=) lists open tasks only")
            principals = [] if assignee is None else [f"user:{assignee}"]
            principals += [f"group:{g.removeprefix('group:')}" for g in everyone]
            found = self._reads.inbox(
                principals, kind=kind, overdue_at=now if overdue else None, limit=limit
            )
        else:
            found = self._reads.listing(
                state=state,
                kind=kind,
                run_id=run_id,
                order=order,
                limit=limit,
                overdue_at=now if overdue else None,
            )
        if overdue is False:
            found = [task for task in found if not task.overdue(now)]
        return found

    def inbox(
        self,
        user: str,
        groups: Sequence[str] = (),
        *,
        kind: str | None = None,
        overdue: bool | None = None,
        limit: int = 50,
    ) -> builtins.list[ReviewTask]:
        """What ``user`` (a member of ``groups``) may take: theirs, their groups', and
        tasks open to any reviewer."""
        return self.list(assignee=user, groups=groups, kind=kind, overdue=overdue, limit=limit)

    def get(self, task_id: int) -> ReviewTask:
        task = self._reads.get(_task_id(task_id))
        if task is None:
            raise ReviewNotFoundError(
                f"no review task {task_id}; `surestep review list` shows them"
            )
        return task

    def candidates(self, task_id: int) -> builtins.list[str]:
        """Who may take an open task now: ``user:NAME`` / ``group:NAME`` entries."""
        return self._reads.principals_of(_task_id(task_id))

    # -- acting -------------------------------------------------------------------------

    def claim(
        self, task_id: int, *, by: str, as_member_of: Sequence[str] | None = None
    ) -> ReviewTask:
        """Take a task, so that others see it is being handled. ``as_member_of``: see
        :meth:`decide`."""
        self._writes.claim(
            _task_id(task_id), check_name("reviewer", by), self._now(), as_member_of=as_member_of
        )
        return self.get(task_id)

    def release(self, task_id: int, *, by: str, force: bool = False) -> ReviewTask:
        """Give a claimed task back (``force``: an operator releasing someone else's)."""
        self._writes.release(
            _task_id(task_id), check_name("reviewer", by), self._now(), force=force
        )
        return self.get(task_id)

    def snooze(self, task_id: int, *, by: str, until: datetime | timedelta | float) -> ReviewTask:
        """Set a follow-up time on a task you claimed; its due time does not change."""
        now = self._now()
        when = _epoch(until, now)
        if when <= now:
            raise ConfigurationError("a follow-up time must be in the future")
        self._writes.snooze(_task_id(task_id), check_name("reviewer", by), when, now)
        return self.get(task_id)

    def reassign(
        self,
        task_id: int,
        *,
        to: str | Sequence[str],
        by: str,
        reason: str = "reassigned",
    ) -> ReviewTask:
        """Give an open task to a user and/or groups (``"alice"``, ``"group:finance"``)."""
        entries = [to] if isinstance(to, str) else list(to)
        if not entries:
            raise ConfigurationError("reassign to at least one user or group")
        _check_text("reason", reason)
        users = [e.removeprefix("user:") for e in entries if not e.startswith("group:")]
        groups = [e.removeprefix("group:") for e in entries if e.startswith("group:")]
        if len(users) > 1:
            raise ConfigurationError("a task has one assignee; give other people as groups")
        self._writes.reassign(
            _task_id(task_id),
            users[0] if users else None,
            groups,
            check_name("reviewer", by),
            reason,
            self._now(),
        )
        return self.get(task_id)

    def decide(
        self,
        task_id: int,
        outcome: str,
        *,
        by: str,
        data: Any = None,
        comment: str | None = None,
        force: bool = False,
        as_member_of: Sequence[str] | None = None,
    ) -> Decision[Any]:
        """Decide a task; the run resumes (or ends) at once. Exactly one decision wins:
        a task already decided, expired or cancelled, or whose run has finished, raises
        :class:`ReviewConflictError`; data that fails the form raises
        :class:`ReviewValidationError` naming the fields, and nothing is stored.

        ``as_member_of`` (the reviewer's groups) decides as a reviewer who may take only
        tasks offered to them: checked under the task's lock, so a reassignment made in
        the meantime cannot be overtaken (:class:`ReviewNotFoundError` then)."""
        text = None if data is None else dumps(data, f"data of the decision on task {task_id}")
        _check_text("comment", comment)
        stored = self._writes.decide(
            _task_id(task_id),
            outcome,
            check_name("reviewer", by),
            text,
            comment,
            self._now(),
            force=force,
            as_member_of=as_member_of,
        )
        self._host.wake_workers()
        self._tell("decided", int(task_id))
        return Decision(
            task_id=int(task_id),
            outcome=stored["outcome"],
            data=stored["data"],
            reviewer=stored["reviewer"],
            comment=stored["comment"],
            decided_at=stored["decided_at"],
        )

    def decide_many(
        self,
        decisions: Sequence[Mapping[str, Any]],
        *,
        by: str,
        as_member_of: Sequence[str] | None = None,
    ) -> builtins.list[Decision[Any] | SurestepError]:
        """Decide several tasks (each ``{"task_id", "outcome", "data"?, "comment"?}``);
        one that cannot be decided does not stop the others: its error is in its place."""
        results: builtins.list[Decision[Any] | SurestepError] = []
        for item in decisions:
            try:
                results.append(
                    self.decide(
                        item["task_id"],
                        item["outcome"],
                        by=by,
                        data=item.get("data"),
                        comment=item.get("comment"),
                        as_member_of=as_member_of,
                    )
                )
            except SurestepError as exc:
                results.append(exc)
            except (KeyError, TypeError) as exc:
                results.append(ConfigurationError(f"a decision needs task_id and outcome: {exc}"))
        return results

    # -- time -----------------------------------------------------------------------------

    def next_due(self) -> float | None:
        return self._writes.next_due()

    def sweep(
        self, now: float | None = None, actor: str | None = None
    ) -> builtins.list[tuple[int, str]]:
        """Escalate or expire the tasks past their due time (workers do this on their
        own, within ~0.1 s; call it where no worker runs)."""
        done = self._writes.sweep(self._now() if now is None else now, actor or self._host.actor)
        for task_id, what in done:
            self._tell(_event_of(what), task_id)
        if done:
            self._host.wake_workers()
        return done

    # -- figures, export, audit -----------------------------------------------------------

    def stats(
        self, *, kind: str | None = None, since: datetime | float | None = None
    ) -> ReviewStats:
        """Open, overdue, decided; override, escalation and SLA rates; time to decision,
        per kind and per reviewer, over tasks created since ``since`` (default: all)."""
        start = 0.0 if since is None else _epoch(since, self._now())
        return summarize(self._reads.created_since(start, kind), kind, self._now())

    def export(
        self, *, kind: str | None = None, since: datetime | float | None = None
    ) -> Iterator[dict[str, Any]]:
        """One record per decided task: input, proposal, confidence, outcome, data,
        reviewer and timings, for retraining and threshold tuning. Fields marked
        sensitive (``redact=``) are masked."""
        start = 0.0 if since is None else _epoch(since, self._now())
        for task in self._reads.decided_since(start, kind):
            hide = task.sensitive
            yield {
                "task_id": task.id,
                "run_id": task.run_id,
                "kind": task.kind,
                "workflow": task.workflow,
                "input": masked(task.payload, hide),
                "proposal": masked(task.proposal, hide),
                "confidence": task.confidence,
                "outcome": task.outcome,
                "data": masked(task.data, hide),
                "reviewer": task.reviewer,
                "comment": task.comment,
                "state": task.state,
                "escalations": task.level,
                "created_at": task.created_at,
                "decided_at": task.decided_at,
                "seconds_to_decision": (task.decided_at or task.created_at) - task.created_at,
            }

    def verify(self, run_id: str | None = None) -> tuple[int, builtins.list[audit.Problem]]:
        """Check the decision log's hash chains; return (records checked, problems)."""
        return audit.verify(self._host.store, run_id)

    # -- pieces ---------------------------------------------------------------------------

    def _now(self) -> float:
        return self._host.clock.now()

    def _tell(self, event: str, task_id: int) -> None:
        if self._host.hooks.on_review:
            Hooks.emit(self._host.hooks.on_review, event, self.get(task_id))


def _event_of(what: str) -> str:
    """The ``on_review`` event for what the sweep did to a task."""
    for prefix, event in (("escalated", "escalated"), ("expired", "expired")):
        if what.startswith(prefix):
            return event
    return "overdue"  # kept open past its last level (on_expiry="keep")


def _check_text(kind: str, text: str | None) -> None:
    if text is not None and "\x00" in text:
        raise ConfigurationError(
            f"the {kind} contains a NUL character, which databases cannot store; remove it"
        )


#: Task ids are 64-bit integers on both databases; a larger number cannot even be asked
#: about (SQLite's driver raises OverflowError, PostgreSQL an out-of-range error).
MAX_TASK_ID = 2**63 - 1


def _task_id(value: Any) -> int:
    try:
        task_id = int(value)
    except (TypeError, ValueError):
        raise ConfigurationError(f"a review task id is a whole number, got {value!r}") from None
    if not 1 <= task_id <= MAX_TASK_ID or str(task_id) != str(value).strip():
        raise ConfigurationError(
            f"a review task id is a whole number from 1 to {MAX_TASK_ID}, got {value!r}"
        )
    return task_id


def _epoch(value: datetime | timedelta | float, now: float) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, timedelta):
        return now + value.total_seconds()
    return float(value)


def public(task: ReviewTask) -> dict[str, Any]:
    """A task as listings show it: sensitive payload fields masked."""
    return {
        **{k: v for k, v in task.__dict__.items() if k not in ("payload", "proposal", "data")},
        "payload": masked(task.payload, task.sensitive),
        "proposal": masked(task.proposal, task.sensitive),
        "data": masked(task.data, task.sensitive),
        "sensitive": list(task.sensitive),
    }


__all__ = ["MAX_TASK_ID", "ReviewHost", "Reviews", "json", "public"]
