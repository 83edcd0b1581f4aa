"""``FakeLLM``: a scripted provider for unit tests of workflows with LLM steps.

No network, no SDK. Script replies and faults in the order calls will be made (for one
model, or any), or give a function that answers every call; every request is kept.

>>> fake = FakeLLM()                                           # doctest: +SKIP
>>> app.llm_provider("fake", provider=fake)                    # doctest: +SKIP
>>> fake.reply({"vendor": "ACME", "total": "12.50", "confidence": 0.95})  # doctest: +SKIP
>>> fake.fault("timeout").reply('{"vendor": "ACME"}', model="small")     # doctest: +SKIP
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

import surestep.llm.faults as faults
from surestep.llm.types import ChatRequest, ChatResponse, Usage

_FAULTS: dict[str, type[faults.ModelError]] = {
    "timeout": faults.ModelTimeoutError,
    "connection": faults.ModelConnectionError,
    "server_error": faults.ModelServerError,
    "rate_limited": faults.ModelRateLimitedError,
    "rejected": faults.ModelRequestError,
}
_STATUS = {"server_error": 500, "rate_limited": 429, "rejected": 400}


class FakeLLM:
    """A provider whose answers are scripted. ``pricing_id`` is None: set prices with
    ``app.llm_price("fake:model", ...)`` to test costs and budgets."""

    kind = "fake"
    pricing_id: str | None = None

    def __init__(
        self,
        name: str = "fake",
        respond: Callable[[ChatRequest], str | dict[str, Any] | BaseModel] | None = None,
    ) -> None:
        self.name = name
        self.respond = respond
        self.requests: list[ChatRequest] = []
        self._script: dict[str | None, deque[ChatResponse | faults.ModelError]] = {}
        self._lock = threading.Lock()

    def reply(
        self,
        content: str | dict[str, Any] | BaseModel,
        *,
        model: str | None = None,
        usage: tuple[int, int] = (10, 5),
        logprobs: list[float] | None = None,
        finish_reason: str = "stop",
    ) -> FakeLLM:
        """Queue a reply (for calls to ``model``, or to any model)."""
        response = ChatResponse(
            _text(content),
            Usage(*usage),
            finish_reason,
            model or "",
            None if logprobs is None else tuple(logprobs),
        )
        return self._queue(model, response)

    def fault(
        self, kind: str, *, model: str | None = None, retry_after: float | None = None
    ) -> FakeLLM:
        """Queue a fault: timeout, connection, server_error, rate_limited or rejected."""
        if kind not in _FAULTS:
            raise ValueError(f"FakeLLM.fault({kind!r}): use one of {', '.join(_FAULTS)}")
        error = _FAULTS[kind](
            f"FakeLLM scripted {kind}",
            model=model or "",
            status=_STATUS.get(kind),
            retry_after=retry_after,
        )
        return self._queue(model, error)

    def _queue(self, model: str | None, item: ChatResponse | faults.ModelError) -> FakeLLM:
        with self._lock:
            self._script.setdefault(model, deque()).append(item)
        return self

    @property
    def pending(self) -> int:
        """Scripted replies and faults not used yet."""
        with self._lock:
            return sum(len(queue) for queue in self._script.values())

    def complete(self, request: ChatRequest) -> ChatResponse:
        with self._lock:
            self.requests.append(request)
            queue = self._script.get(request.model) or self._script.get(None)
            item = queue.popleft() if queue else None
        if item is None and self.respond is not None:
            return ChatResponse(_text(self.respond(request)), Usage(10, 5), "stop", request.model)
        if item is None:
            raise AssertionError(
                f"FakeLLM {self.name!r}: no reply scripted for call {len(self.requests)} "
                f"(model {request.model!r}); script one with .reply() or give respond="
            )
        if isinstance(item, faults.ModelError):
            raise item
        return item


def _text(content: str | dict[str, Any] | BaseModel) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, BaseModel):
        return content.model_dump_json()
    return json.dumps(content)
