"""What a decision does to its run: per kind of task, inside the decision's transaction.

- a task opened by ``request_review``: the step at its position succeeds with the
  decision as its output, and the run resumes there;
- ``step_exhausted``: the step gets another attempt (with edited arguments, if given),
  or the reviewer's output, or the run goes to the dead-letter queue or is cancelled;
- ``run_deadline``: the run resumes, fails or is cancelled.
"""

from __future__ import annotations

import json
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from surestep.errors import ReviewConflictError, ReviewValidationError
from surestep.review.records import RUN_DEADLINE, STEP_EXHAUSTED
from surestep.states import State, check_run_transition, check_step_transition
from surestep.storage import Store
from surestep.storage.base import EVENT_INSERT
from surestep.storage.rows import Cursor


def validate(task: dict[str, Any], outcome: str, data: Any) -> None:
    """Refuse data that the task's form (or the exhausted step's annotations) rejects;
    name every failing field."""
    schema: dict[str, Any] | None = None
    if task["kind"] == STEP_EXHAUSTED:
        context = task["context"] or {}
        if outcome == "output":
            schema = context.get("output_schema")
        elif outcome == "retry" and data is not None:
            if not isinstance(data, dict) or set(data) - {"inputs"}:
                _refuse(task, [{"path": "", "message": 'retry takes {"inputs": {...}} or nothing'}])
            schema = context.get("inputs_schema")
            data = data.get("inputs")
    elif task["kind"] == RUN_DEADLINE:
        if data is not None:
            _refuse(task, [{"path": "", "message": f"{outcome} takes no data"}])
    elif outcome == "edit" and data is None:
        _refuse(task, [{"path": "", "message": "an edit needs the edited data"}])
    elif outcome == "reject" and data is not None:
        _refuse(task, [{"path": "", "message": "a rejection takes no data (use edit)"}])
    else:  # approve or edit, with data: it must fit the form like any edit
        schema = task["form"]
    if schema is None or (data is None and outcome != "output"):
        return
    validator = Draft202012Validator(schema, format_checker=FormatChecker())
    hidden = set(task.get("sensitive") or ())
    errors = []
    for error in validator.iter_errors(data):
        path = [str(p) for p in error.absolute_path]
        # jsonschema's message quotes the value: not for a field marked sensitive.
        secret = bool(hidden & set(path)) or ".".join(path) in hidden
        message = f"fails the form's {error.validator!r} rule" if secret else _said(error)
        errors.append({"path": ".".join(path), "message": message})
    if errors:
        _refuse(task, errors)


def _said(error: Any) -> str:
    """jsonschema's message, in a reviewer's words where it is cryptic: a decimal field
    (a number, or a string of one) says what a number looks like, not "is not valid
    under any of the given schemas"."""
    if error.validator == "anyOf" and isinstance(error.validator_value, list):
        kinds = {
            str(option.get("type")) for option in error.validator_value if isinstance(option, dict)
        }
        if kinds & {"number", "integer"}:
            return f"{error.instance!r} is not a number: write it like 12.50"
    return str(error.message)


def _refuse(task: dict[str, Any], fields: list[dict[str, str]]) -> None:
    listed = "; ".join(f"{f['path'] or '(top)'}: {f['message']}" for f in fields)
    raise ReviewValidationError(
        f"review task {task['id']}: the data does not fit the form: {listed}. Nothing was "
        f"stored; correct these fields and decide again",
        fields=fields,
    )


def apply(
    store: Store,
    cur: Cursor,
    task: dict[str, Any],
    run_state: State,
    decision: dict[str, Any],
    now: float,
) -> None:
    outcome, actor = decision["outcome"], decision["reviewer"]
    reason = f"review task {task['id']}: {outcome}"
    if outcome == "cancel" or (task["kind"] == RUN_DEADLINE and outcome == "fail"):
        final = State.CANCELLED if outcome == "cancel" else State.FAILED
        store._end(cur, task["run_id"], run_state, final, actor, reason, now)
        return
    if outcome == "dead_letter":
        dead_letter(store, cur, task, run_state, actor, reason, now)
        return
    if task["kind"] == RUN_DEADLINE:  # resume
        _resume(store, cur, task["run_id"], run_state, actor, reason, now)
        return
    if task["kind"] == STEP_EXHAUSTED and outcome == "retry":
        inputs = (decision["data"] or {}).get("inputs")
        _step(
            store,
            cur,
            task,
            State.PENDING,
            actor,
            reason,
            now,
            review_inputs=None if inputs is None else json.dumps(inputs),
        )
    else:
        output = decision["data"] if task["kind"] == STEP_EXHAUSTED else decision
        _step(store, cur, task, State.SUCCESS, actor, reason, now, output=json.dumps(output))
    store._wake(cur, task["run_id"], f"review:{task['id']}", now, locked=True)


def dead_letter(
    store: Store,
    cur: Cursor,
    task: dict[str, Any],
    run_state: State,
    actor: str,
    reason: str,
    now: float,
) -> None:
    """Send the run to the dead-letter queue (its step too), for an operator to redrive."""
    if task["position"] is not None:
        _step(store, cur, task, State.DEAD_LETTER, actor, reason, now)
    if run_state != State.NEEDS_REVIEW:
        return  # still running: its finish sees the task closed and it resumes, then halts
    check_run_transition(run_state, State.DEAD_LETTER)
    error = json.dumps({"type": "ReviewDeadLettered", "message": reason})
    cur.execute(
        "UPDATE surestep_runs SET state = 'dead_letter', error = ?, waiting_for = NULL,"
        " available_at = NULL, updated_at = ? WHERE id = ?",
        (error, now, task["run_id"]),
    )
    cur.execute(
        EVENT_INSERT,
        (task["run_id"], None, None, run_state, State.DEAD_LETTER, now, actor, reason, None),
    )


def _resume(
    store: Store, cur: Cursor, run_id: str, run_state: State, actor: str, reason: str, now: float
) -> None:
    check_run_transition(run_state, State.PENDING)
    cur.execute(
        "UPDATE surestep_runs SET state = 'pending', available_at = ?, waiting_for = NULL,"
        " updated_at = ? WHERE id = ?",
        (now, now, run_id),
    )
    cur.execute(
        EVENT_INSERT, (run_id, None, None, run_state, State.PENDING, now, actor, reason, None)
    )
    store._notify(cur)


def _step(
    store: Store,
    cur: Cursor,
    task: dict[str, Any],
    to_state: State,
    actor: str,
    reason: str,
    now: float,
    *,
    output: str | None = None,
    review_inputs: str | None = None,
) -> None:
    check_step_transition(State.NEEDS_REVIEW, to_state)
    cur.execute(
        "UPDATE surestep_steps SET state = ?, output = COALESCE(?, output),"
        " finished_at = CASE WHEN ? THEN ? ELSE finished_at END,"
        " retry_base = CASE WHEN ? THEN attempts ELSE retry_base END,"
        " review_inputs = COALESCE(?, review_inputs), next_attempt_at = NULL"
        " WHERE run_id = ? AND position = ? AND state = 'needs_review'",
        (
            to_state,
            output,
            to_state == State.SUCCESS,
            now,
            to_state == State.PENDING,
            review_inputs,
            task["run_id"],
            task["position"],
        ),
    )
    if cur.rowcount != 1:
        raise ReviewConflictError(
            f"the step at position {task['position']} of run {task['run_id']!r} no longer "
            f"waits for review task {task['id']}; nothing was changed",
            reason="step_moved_on",
        )
    cur.execute(
        "SELECT name FROM surestep_steps WHERE run_id = ? AND position = ?",
        (task["run_id"], task["position"]),
    )
    name = cur.fetchone()[0]
    cur.execute(
        EVENT_INSERT,
        (
            task["run_id"],
            task["position"],
            name,
            State.NEEDS_REVIEW,
            to_state,
            now,
            actor,
            reason,
            None,
        ),
    )
