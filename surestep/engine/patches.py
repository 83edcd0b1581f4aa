"""Patching: one workflow function serving both the runs started on old code and the
runs started on new code, across a deploy (as Temporal's ``patched``).

A run replays its workflow from the top, matching each call to the history recorded at
its position. Changing the calls under an in-flight run breaks that match, so a change
is guarded::

    if surestep.patched("send-receipt"):
        send_receipt(order)          # the new code
    else:
        email_customer(order)        # the old code, for runs that already passed here

``patched(id)`` records a marker (a step named ``patch:<id>``) at its position in a run
that reaches it on the new code, and returns True there and on every replay. A run
whose history, recorded by the old code, already covers that position has no marker
there: ``patched`` returns False *without taking a position*, so the positions of the
steps the old code recorded stay where they are. Once no old run is left, replace it by
``deprecate_patch(id)`` (new path always; consumes a recorded marker, records none),
and once no run with a marker is left, remove that too.
"""

from __future__ import annotations

import threading
from weakref import WeakKeyDictionary

from surestep.engine.context import ActiveRun, workflow_run
from surestep.errors import SurestepError
from surestep.states import State
from surestep.storage import StepOutcome

PATCH = "patch:"

# What patched() answered for each change id in each execution: a run asks once and
# keeps the answer, so that one run never takes the old path at one call and the new
# path at a later one. Keyed weakly: an execution's answers go with it.
_answers: WeakKeyDictionary[ActiveRun, dict[str, bool]] = WeakKeyDictionary()
_answers_lock = threading.Lock()


def patched(change_id: str) -> bool:
    """True if this run takes the new code path guarded by ``change_id``.

    Inside a workflow: True for a run that reaches this call on code that has it (a
    marker is recorded, so every replay says True again), False for a run whose history
    was recorded by code without it (it carries on with the old path). Outside a
    workflow (or inside a step): True.

    >>> @app.workflow()                                          # doctest: +SKIP
    ... def order(order_id: str) -> None:
    ...     charge(order_id)
    ...     if surestep.patched("receipt-v2"):
    ...         send_receipt(order_id)
    ...     else:
    ...         email_customer(order_id)
    """
    marker = _marker(change_id, "patched")
    run = workflow_run()
    if run is None:
        return True
    with _answers_lock:
        answers = _answers.setdefault(run, {})
        if change_id in answers:
            return answers[change_id]
    answer = _decide(run, marker)
    with _answers_lock:
        answers[change_id] = answer
    return answer


def deprecate_patch(change_id: str) -> None:
    """Mark the patch ``change_id`` as applied to every run left: take the new path.

    Use it in place of :func:`patched` once every run that took the old path has
    finished. A run that recorded the marker replays past it; a new run records none.
    Remove the call once no run with the marker is left (``surestep versions`` and
    ``surestep runs`` show what is unfinished).
    """
    marker = _marker(change_id, "deprecate_patch")
    run = workflow_run()
    if run is None:
        return
    recorded = run.recorded.get(run.upcoming_position())
    if recorded is not None and recorded.name == marker:
        run.expect(run.next_position(), marker)


def _decide(run: ActiveRun, marker: str) -> bool:
    position = run.upcoming_position()
    recorded = run.recorded.get(position)
    if recorded is not None and recorded.name == marker:
        run.expect(run.next_position(), marker)
        return True
    if recorded is not None or any(p > position for p in run.recorded):
        # The history goes on past this point and has no marker here: it was recorded
        # by code without the patch. Take the old path and leave the position to the
        # old step recorded there. (A later position with a gap at this one is an async
        # branch that was in flight when the run stopped: old code too.)
        return False
    position = run.next_position()
    run.expect(position, marker)
    now = run.clock.now()
    outcome = StepOutcome(
        position,
        marker,
        State.PENDING,
        State.SUCCESS,
        1,
        now,
        now,
        output="true",
        reason="reached on code with this patch: the new code path",
    )
    with run.guarded():
        run.store.record_step(run.run_id, run.token, run.worker, outcome)
    return True


def _marker(change_id: str, what: str) -> str:
    if not isinstance(change_id, str) or not change_id.strip():
        raise SurestepError(
            f"{what}() takes a change id, a non-empty string naming the change "
            f"(e.g. {what}('receipt-v2')), got {change_id!r}"
        )
    return PATCH + change_id
