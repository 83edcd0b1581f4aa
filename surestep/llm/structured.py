"""Structured output: the schema sent, the reply parsed and validated, the repair asked.

Pure functions, no I/O: the call loop (:mod:`surestep.llm.chain`) decides when to call
them. A reply is accepted only when it parses as JSON and the schema validates it; a
reply that does not is answered with a *repair* message quoting what was wrong, so the
model can correct exactly that (the errors are pydantic's, field by field).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

from surestep.llm.types import Message

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class Invalid(Exception):
    """A reply that is not what the schema asks for; ``errors`` say where and why."""

    errors: tuple[str, ...]

    def __str__(self) -> str:
        return "; ".join(self.errors)


def parse(text: str, adapter: TypeAdapter[Any]) -> Any:
    """The reply as the schema's type, or :class:`Invalid` naming every problem."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:  # models often wrap JSON in a Markdown code fence
        body = fenced.group(1)
    try:
        data = json.loads(body)
    except ValueError as exc:
        problem = f"the reply is not JSON ({exc}); reply with the JSON object only"
        raise Invalid((problem,)) from None
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise Invalid(tuple(_describe(error) for error in exc.errors())) from None


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error.get("loc", ())) or "(top level)"
    return f"{where}: {error.get('msg', 'invalid')}"


def repair(messages: list[Message], reply: str, problem: Invalid) -> list[Message]:
    """The conversation plus the rejected reply and a request to fix exactly these errors."""
    listed = "\n".join(f"- {error}" for error in problem.errors)
    return [
        *messages,
        {"role": "assistant", "content": reply},
        {
            "role": "user",
            "content": (
                "Your reply does not satisfy the required JSON Schema:\n"
                f"{listed}\n"
                "Reply again with only the corrected JSON object."
            ),
        },
    ]


def digest(value: Any) -> str:
    """A short stable hash of JSON-able data (a prompt, a schema): 16 bytes of SHA-256."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]
