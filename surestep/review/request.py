"""``request_review``: a workflow asks a person, and waits durably for the answer.

A review request takes the next position of the run, like a step or a wait, so it
replays, survives any restart and is caught by the non-determinism check. The first
time the run reaches it, a task is opened (in the transaction that records the
position) and the run parks in ``needs_review``, holding no worker, thread or memory.
When the task is decided, the run resumes; the request returns the recorded decision,
and nothing before it runs again.

>>> decision = surestep.request_review(                          # doctest: +SKIP
...     invoice, kind="approve_invoice", groups=["finance"], sla=timedelta(hours=2),
...     escalate_to=["group:managers"], on_expiry="reject", form=Invoice)
>>> if decision.approved: book(decision.data)                    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, NoReturn

from pydantic import TypeAdapter, ValidationError

from surestep.engine.context import ActiveRun, workflow_run
from surestep.engine.halts import Verdict
from surestep.errors import ConfigurationError, SerializationError, SurestepError
from surestep.hooks import Hooks
from surestep.names import check_name
from surestep.registry import StepDef
from surestep.review.policy import ON_EXPIRY, principal
from surestep.review.queries import ReviewQueries
from surestep.review.records import STEP_EXHAUSTED, Decision
from surestep.review.rows import TaskSpec
from surestep.review.store import ReviewStore
from surestep.serialization import dumps, json_schema
from surestep.states import State

#: Who is asked about a step that exhausted its retries (``on_exhausted="review"``).
STEP_REVIEWERS = ("operators",)


def request_review(
    payload: Any,
    *,
    kind: str,
    assignee: str | None = None,
    groups: Sequence[str] = (),
    priority: int = 50,
    sla: timedelta | None = None,
    escalate_to: Sequence[str] = (),
    on_expiry: str = "keep",
    form: Any = None,
    proposal: Any = None,
    confidence: float | None = None,
    instructions: str | None = None,
    redact: Sequence[str] = (),
) -> Decision[Any]:
    """Ask a person to review ``payload``; wait durably for the decision and return it.

    ``assignee`` (a user) and/or ``groups`` say who sees the task (neither: any
    reviewer). ``priority`` is 0..100, higher first. ``sla`` sets the due time; when it
    passes the task escalates to the next entry of ``escalate_to`` (a user, or
    ``"group:NAME"``) with a fresh SLA, and past the last one ``on_expiry`` applies:
    ``"approve"``, ``"reject"``, ``"dead_letter"`` or ``"keep"`` (stays open, overdue).
    ``form`` (a pydantic model or any type) is what an edit must satisfy; ``proposal``
    and ``confidence`` are a pre-filled answer (a model's, say), shown and kept for
    audit. ``redact`` names payload fields hidden from listings and exports.
    """
    spec, adapter = _spec(
        payload,
        kind,
        assignee,
        groups,
        priority,
        sla,
        escalate_to,
        on_expiry,
        form,
        proposal,
        confidence,
        instructions,
        redact,
    )
    run = _inside()
    return _review_at(run, run.next_position(), spec, adapter)


def request_review_async(
    payload: Any,
    *,
    kind: str,
    assignee: str | None = None,
    groups: Sequence[str] = (),
    priority: int = 50,
    sla: timedelta | None = None,
    escalate_to: Sequence[str] = (),
    on_expiry: str = "keep",
    form: Any = None,
    proposal: Any = None,
    confidence: float | None = None,
    instructions: str | None = None,
    redact: Sequence[str] = (),
) -> Awaitable[Decision[Any]]:
    """:func:`request_review` for ``async def`` workflows (``await`` it)."""
    spec, adapter = _spec(
        payload,
        kind,
        assignee,
        groups,
        priority,
        sla,
        escalate_to,
        on_expiry,
        form,
        proposal,
        confidence,
        instructions,
        redact,
    )
    run = _inside()
    position = run.next_position()  # taken at the call, so gather order holds

    async def review() -> Decision[Any]:
        return _review_at(run, position, spec, adapter)

    return review()


def review_at(
    run: ActiveRun,
    position: int,
    payload: Any,
    *,
    kind: str,
    settings: dict[str, Any],
    form: Any = None,
    proposal: Any = None,
    confidence: float | None = None,
    context: dict[str, Any] | None = None,
) -> Decision[Any]:
    """A review at ``position`` taken earlier, for features built on review (an LLM
    step's low-confidence answer): ``settings`` are :func:`request_review`'s keywords
    (assignee, groups, priority, sla, escalate_to, on_expiry, instructions, redact);
    ``context`` is kept with the task for audit and export."""
    spec, adapter = review_spec(payload, kind, settings, form, proposal, confidence)
    if context is not None:
        spec = replace(spec, context=json.dumps(context, default=str))
    return _review_at(run, position, spec, adapter)


def review_spec(
    payload: Any,
    kind: str,
    settings: dict[str, Any],
    form: Any = None,
    proposal: Any = None,
    confidence: float | None = None,
) -> tuple[TaskSpec, TypeAdapter[Any] | None]:
    """Check review ``settings`` (request_review's keywords) and build the task."""
    allowed = {"assignee", "groups", "priority", "sla", "escalate_to", "on_expiry"}
    allowed |= {"instructions", "redact"}
    unknown = set(settings) - allowed
    if unknown:
        raise ConfigurationError(
            f"review settings {sorted(unknown)} are unknown; use {', '.join(sorted(allowed))}"
        )
    return _spec(
        payload,
        kind,
        settings.get("assignee"),
        settings.get("groups", ()),
        settings.get("priority", 50),
        settings.get("sla"),
        settings.get("escalate_to", ()),
        settings.get("on_expiry", "keep"),
        form,
        proposal,
        confidence,
        settings.get("instructions"),
        settings.get("redact", ()),
    )


def _inside() -> ActiveRun:
    run = workflow_run()
    if run is None:
        raise SurestepError(
            "request_review() waits for a person's decision, so it works only inside a "
            "workflow that a worker executes (in tests: surestep.testing.run_workflow)"
        )
    return run


def _review_at(
    run: ActiveRun, position: int, spec: TaskSpec, adapter: TypeAdapter[Any] | None
) -> Decision[Any]:
    name = f"review:{spec.kind}"
    recorded = run.expect(position, name, joinable=True)
    if recorded is not None and recorded.state == State.SUCCESS:
        return _decision(recorded.output, adapter)
    if recorded is not None and recorded.state == State.DEAD_LETTER:
        run.halt(Verdict(State.DEAD_LETTER, f"review {spec.kind!r} expired unanswered"))
    spec = replace(spec, workflow=run.workflow.name)
    task_id = _open(run, position, name, spec)
    run.halt(
        Verdict(
            State.NEEDS_REVIEW,
            f"waiting for review task {task_id} ({spec.kind})",
            waiting_for=(f"review:{task_id}",),
        )
    )


def _open(run: ActiveRun, position: int, name: str, spec: TaskSpec) -> int:
    """Open the task at ``position`` (once); tell ``on_review`` hooks of a new one."""
    with run.guarded():
        task_id, created = ReviewStore(run.store).open_at(
            run.run_id, run.token, run.worker, position, name, spec, run.clock.now()
        )
    if task_id is None:
        # Decided while this execution ran on the history read at its claim: run again
        # from the top on the fresh history, which holds the decision.
        run.halt(Verdict(State.PENDING, "review decided meanwhile", run.clock.now()))
    if created and run.hooks.on_review:
        task = ReviewQueries(run.store).get(task_id)
        Hooks.emit(run.hooks.on_review, "created", task)
    return task_id


def _decision(output: str | None, adapter: TypeAdapter[Any] | None) -> Decision[Any]:
    stored = json.loads(output or "{}")
    data = stored.get("data")
    if adapter is not None and data is not None and stored["outcome"] in ("approve", "edit"):
        # An approved payload that is not of the form's type stays as it was shown.
        with contextlib.suppress(ValidationError):
            data = adapter.validate_python(data)
    return Decision(
        task_id=int(stored["task_id"]),
        outcome=stored["outcome"],
        data=data,
        reviewer=stored["reviewer"],
        comment=stored.get("comment"),
        decided_at=float(stored["decided_at"]),
    )


def _spec(
    payload: Any,
    kind: str,
    assignee: str | None,
    groups: Sequence[str],
    priority: int,
    sla: timedelta | None,
    escalate_to: Sequence[str],
    on_expiry: str,
    form: Any,
    proposal: Any,
    confidence: float | None,
    instructions: str | None,
    redact: Sequence[str],
) -> tuple[TaskSpec, TypeAdapter[Any] | None]:
    """Check a request's settings where the user made them; encode what is stored."""
    check_name("review kind", kind)
    if isinstance(groups, str) or isinstance(escalate_to, str) or isinstance(redact, str):
        raise ConfigurationError("groups, escalate_to and redact take lists, not a string")
    if assignee is not None and assignee.startswith("group:"):
        raise ConfigurationError(
            f"assignee={assignee!r} names a group; give groups=[{assignee[6:]!r}] instead "
            f"(the assignee is one user)"
        )
    for entry in (*([] if assignee is None else [assignee]), *escalate_to):
        principal(entry)
    for group in groups:
        principal(group if group.startswith("group:") else f"group:{group}")
    if not isinstance(priority, int) or not 0 <= priority <= 100:
        raise ConfigurationError(f"review priority must be an int from 0 to 100, got {priority!r}")
    if sla is not None and (not isinstance(sla, timedelta) or sla.total_seconds() <= 0):
        raise ConfigurationError(f"sla must be a positive timedelta, got {sla!r}")
    if on_expiry not in ON_EXPIRY:
        raise ConfigurationError(f"on_expiry={on_expiry!r}; use one of {', '.join(ON_EXPIRY)}")
    if sla is None and (escalate_to or on_expiry != "keep"):
        raise ConfigurationError(
            "escalate_to and on_expiry act when the SLA runs out: give sla=timedelta(...)"
        )
    if confidence is not None and not (
        isinstance(confidence, int | float) and math.isfinite(confidence) and 0 <= confidence <= 1
    ):
        raise ConfigurationError(f"confidence must be a number from 0 to 1, got {confidence!r}")
    adapter = None if form is None else _form_adapter(form, kind)
    spec = TaskSpec(
        kind=kind,
        workflow="",
        payload=dumps(payload, f"payload of review {kind!r}"),
        sensitive=[check_name("redacted field", f) for f in redact],
        proposal=None if proposal is None else dumps(proposal, f"proposal of review {kind!r}"),
        confidence=None if confidence is None else float(confidence),
        form=None if adapter is None else json.dumps(json_schema(adapter)),
        instructions=instructions,
        assignee=None if assignee is None else principal(assignee).split(":", 1)[1],
        groups=[g.removeprefix("group:") for g in groups],
        escalate_to=list(escalate_to),
        priority=priority,
        sla=None if sla is None else sla.total_seconds(),
        on_expiry=on_expiry,
    )
    return spec, adapter


def _form_adapter(form: Any, kind: str) -> TypeAdapter[Any]:
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(form)
        json_schema(adapter)
    except Exception as exc:
        raise ConfigurationError(
            f"review {kind!r}: form={form!r} has no JSON Schema ({exc}); use a pydantic "
            f"model, a dataclass or JSON types"
        ) from None
    return adapter


# -- a step that exhausted its retries ---------------------------------------------------


def open_step_review(
    run: ActiveRun, step: StepDef, position: int, call: tuple[tuple[Any, ...], dict[str, Any]]
) -> NoReturn:
    """``on_exhausted="review"``: open a ``step_exhausted`` task for the step at
    ``position`` (once) and park the run until an operator answers it."""
    args, kwargs = call
    try:
        inputs = json.loads(step.codec.encode_args(args, kwargs, f"step {step.name!r}"))
    except SerializationError:
        inputs = None
    context = {
        "step": step.name,
        "inputs": inputs,
        "output_schema": step.codec.result_schema(),
        "inputs_schema": step.codec.args_schema(),
    }
    spec = TaskSpec(
        kind=STEP_EXHAUSTED,
        workflow=run.workflow.name,
        payload=json.dumps({"step": step.name, "inputs": inputs}),
        context=json.dumps(context),
        groups=STEP_REVIEWERS,
        priority=60,
        instructions=(
            f"Step `{step.name}` exhausted its retries. Retry it (optionally with edited "
            f"arguments), supply its output by hand, send the run to the dead-letter queue, "
            f"or cancel the run."
        ),
    )
    task_id = _open(run, position, step.name, spec)
    run.halt(
        Verdict(
            State.NEEDS_REVIEW,
            f"step {step.name!r} exhausted its retries; waiting for review task {task_id}",
            waiting_for=(f"review:{task_id}",),
        )
    )
