"""``app.llm_step``: a durable step whose attempt walks a chain of models.

An LLM step stands on the engine's primitives, not inside it. It is an ordinary step
(named after the LLM step) whose function runs :func:`~surestep.llm.chain.run_chain` and
returns a :class:`ModelAnswer`, so it is checkpointed, retried with durable backoff,
replayed without calling any model, and dead-lettered like any step. An answer below
``min_confidence`` (or no answer at all, with ``on_exhausted="review"``) becomes a
review task at the next position, whose decision becomes the step's output.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from surestep.engine.context import ActiveRun, current_step, workflow_run
from surestep.errors import SerializationError, StepError, SurestepError
from surestep.llm.chain import Plan, Site, run_chain
from surestep.llm.kit import LLMKit
from surestep.llm.types import Message
from surestep.registry import StepDef
from surestep.review.records import Decision
from surestep.review.request import review_at


class ModelAnswer(BaseModel):
    """What an LLM step's attempt records: the output in JSON form, whose it is, and
    whether a person must look at it before the workflow goes on."""

    output: Any
    model: str
    confidence: float | None = None
    prompt_hash: str
    review: bool = False


class AnswerRejectedError(SurestepError):
    """A reviewer rejected an LLM step's answer (or had none to approve)."""

    code = "answer_rejected"


class LLMStep:
    """What ``app.llm_step`` returns: call it inside a workflow like a step."""

    def __init__(
        self,
        kit: LLMKit,
        step: StepDef,
        plan: Plan,
        prompt: Callable[..., Any],
        review: dict[str, Any],
        on_exhausted: str,
        schema: Any,
    ) -> None:
        self.kit, self.step, self.plan, self.prompt = kit, step, plan, prompt
        self.schema = None if plan.adapter is None else schema
        self.review, self.on_exhausted = review, on_exhausted
        self.name = step.name
        self.prompt_version = _prompt_version(prompt, plan.schema)

    def __repr__(self) -> str:
        return f"<llm_step {self.name!r} models={list(self.plan.models)}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        run = workflow_run()
        if run is None:  # outside a workflow (or inside a step): a plain call
            answer = run_chain(self.kit, self.plan, Site(), self._messages(args, kwargs))
            return self._typed(answer.output)
        # Two positions, taken now in the workflow's call order: the step's, and the one
        # its review takes if it needs one. Gathered steps finish in any order; their
        # reviews must still land where a replay will look for them.
        positions = (run.next_position(), run.next_position())
        if run.loop is not None and _on_loop(run.loop):
            return self._async(run, positions, args, kwargs)
        return self._finish(run, positions, args, kwargs)

    async def _async(
        self, run: ActiveRun, positions: tuple[int, int], args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        # The calls block: run them in a thread so other gathered steps go on meanwhile.
        return await asyncio.to_thread(self._finish, run, positions, args, kwargs)

    def _finish(
        self, run: ActiveRun, positions: tuple[int, int], args: tuple[Any, ...], kwargs: Any
    ) -> Any:
        position, review_position = positions
        try:
            answer = ModelAnswer.model_validate(run.run_step_at(self.step, position, args, kwargs))
        except StepError as exc:
            if self.on_exhausted != "review":
                raise
            failure = f"{exc.error_type}: {exc.message}"
            return self._ask(run, review_position, (args, kwargs), None, failure)
        if answer.review:
            return self._ask(run, review_position, (args, kwargs), answer, None)
        return self._typed(answer.output)

    # -- the attempt -------------------------------------------------------------------

    def attempt(self, *args: Any, **kwargs: Any) -> ModelAnswer:
        """The step's function: one pass through the chain."""
        step = current_step()
        site = Site(step.run_id, step.position, step.attempt, step.workflow, step.name)
        answer = run_chain(self.kit, self.plan, site, self._messages(args, kwargs))
        return ModelAnswer(
            output=answer.output,
            model=answer.model,
            confidence=answer.confidence,
            prompt_hash=answer.prompt_hash,
            review=answer.route == "review",
        )

    def _messages(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Message]:
        return messages_of(self.prompt(*args, **kwargs), f"llm_step {self.name!r}: prompt")

    # -- review ------------------------------------------------------------------------

    def _ask(
        self,
        run: ActiveRun,
        position: int,
        call: tuple[tuple[Any, ...], dict[str, Any]],
        answer: ModelAnswer | None,
        failure: str | None,
    ) -> Any:
        """Open (or replay) the review of this step's answer; its decision is the output."""
        settings = dict(self.review)
        if answer is None:
            settings.setdefault("instructions", _NO_ANSWER.format(step=self.name, why=failure))
        context = {
            "llm_step": self.name,
            "model": None if answer is None else answer.model,
            "prompt_hash": None if answer is None else answer.prompt_hash,
            "prompt_version": self.prompt_version,
            "confidence": None if answer is None else answer.confidence,
            "reason": "low_confidence" if answer is not None else "exhausted",
            "failure": failure,
        }
        decision = review_at(
            run,
            position,
            self._payload(*call),
            kind=self.name,
            settings=settings,
            form=self.schema,
            proposal=None if answer is None else answer.output,
            confidence=None if answer is None else answer.confidence,
            context=context,
        )
        return self._decided(decision, answer)

    def _decided(self, decision: Decision[Any], answer: ModelAnswer | None) -> Any:
        where = f"review task {decision.task_id} of llm_step {self.name!r}"
        if decision.outcome == "edit" or (decision.outcome == "approve" and decision.data):
            data = decision.data
            if isinstance(data, BaseModel):
                data = data.model_dump(mode="json")
            return self._typed(data)
        if decision.outcome == "approve" and answer is not None:
            return self._typed(answer.output)
        if decision.outcome == "approve":
            raise AnswerRejectedError(
                f"{where} was approved with no answer to approve; edit it with the answer"
            )
        comment = f": {decision.comment}" if decision.comment else ""
        raise AnswerRejectedError(f"{where} was rejected by {decision.reviewer}{comment}")

    def _payload(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        try:
            return json.loads(self.step.codec.encode_args(args, kwargs, f"step {self.name!r}"))
        except SerializationError:
            return {"inputs": "(not representable as JSON)"}

    def _typed(self, output: Any) -> Any:
        return output if self.plan.adapter is None else self.plan.adapter.validate_python(output)


_NO_ANSWER = (
    "No model gave step `{step}` a usable answer ({why}). Fill in the answer and choose "
    "Edit, or Reject it."
)


def messages_of(prompt: Any, where: str) -> list[Message]:
    """A prompt function's result as chat messages: a string is one user message."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, Sequence) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in prompt
    ):
        return [dict(m) for m in prompt]
    raise TypeError(
        f"{where} returned {type(prompt).__name__}; return a string or a list of messages "
        f'like [{{"role": "user", "content": "..."}}]'
    )


def _prompt_version(prompt: Callable[..., Any], schema: dict[str, Any] | None) -> str:
    """A hash of the prompt function's code and the schema: it changes when either does,
    so review outcomes can be compared across prompt versions."""
    code = getattr(prompt, "__code__", None)
    try:
        source = inspect.getsource(prompt)
    except (OSError, TypeError):
        source = repr(None if code is None else (code.co_code, code.co_consts))
    text = json.dumps([source, schema], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
