"""``surestep.llm.complete``: one recorded, costed model call from inside your own step.

For model calls an LLM step does not fit (a tool loop, a free-form conversation). Inside
a step of a run, the call is recorded in the run's ledger and counts against its budget
and the model's shared rate limit, like an LLM step's; a reply that fails ``schema`` is
repaired. Faults are raised as they are (``ModelTimeoutError``, ...), for the step's own
retry policy to handle. Outside a run it is a plain call, recorded nowhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from surestep.engine.context import CURRENT_STEP
from surestep.llm.chain import Plan, Site, run_chain
from surestep.llm.faults import ModelChainError, ModelOutputError
from surestep.llm.kit import LLMKit, find_kit
from surestep.llm.types import Message

if TYPE_CHECKING:
    from surestep.llm.methods import LLMMethods


def complete(
    model: str,
    messages: list[Message] | str,
    schema: Any = None,
    *,
    app: LLMMethods | None = None,
    timeout: float = 60.0,
    max_repairs: int = 2,
    temperature: float | None = None,
    max_tokens: int | None = None,
    params: dict[str, Any] | None = None,
) -> Any:
    """Call ``model`` ("provider:model") once (plus repairs); return the reply's text, or
    with ``schema`` (a pydantic model) the validated value."""
    from surestep.llm.declare import schema_parts
    from surestep.llm.step import messages_of

    kit: LLMKit = find_kit(model) if app is None else app.llm
    kit.resolve(model)
    adapter, json_form = schema_parts(schema, "complete")
    plan = Plan(
        step="complete",
        models=(model,),
        adapter=adapter,
        schema=json_form,
        timeout=float(timeout),
        max_repairs=max_repairs,
        fallback_on_transient=False,
        temperature=temperature,
        max_tokens=max_tokens,
        params=dict(params or {}),
    )
    step = CURRENT_STEP.get()
    site = (
        Site()
        if step is None
        else Site(step.run_id, step.position, step.attempt, step.workflow, step.name)
    )
    try:
        answer = run_chain(kit, plan, site, messages_of(messages, "complete: messages"))
    except ModelChainError as exc:  # one model: say what it was
        raise ModelOutputError(str(exc), model=model) from exc
    return answer.output if adapter is None else adapter.validate_python(answer.output)
