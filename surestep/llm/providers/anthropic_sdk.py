"""Anthropic's Messages API, through the official ``anthropic`` SDK.

The SDK's own retries are off (``max_retries=0``) for the reason the OpenAI adapter
gives. Its own OpenTelemetry spans are off too: surestep traces each step attempt
itself, and a second span per call from inside the SDK would be a layer nobody asked
for in the run's trace.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from surestep.errors import MissingDependencyError
from surestep.llm.faults import (
    ModelConnectionError,
    ModelError,
    ModelRequestError,
    ModelServerError,
    ModelTimeoutError,
)
from surestep.llm.providers.shared import (
    LazyClient,
    OneCall,
    read_api_key,
    redact,
    safe_url,
    status_fault,
)
from surestep.llm.types import ChatRequest, ChatResponse, Usage

if TYPE_CHECKING:
    import anthropic
    from anthropic.types import Message as AnthropicMessage

INSTALL = "pip install 'surestep[anthropic]'"

#: Anthropic requires max_tokens on every call; this is used when the request sets none.
DEFAULT_MAX_TOKENS = 1024

#: The Messages API has no JSON-schema reply format: the schema is asked for in words,
#: and the reply is parsed and validated (and repaired) by the caller like any other.
SCHEMA_INSTRUCTIONS = "Reply with only a JSON object that satisfies this JSON Schema:"


def _require_sdk() -> None:
    try:
        import anthropic  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"Anthropic models need the anthropic SDK: {INSTALL}"
        ) from None


class AnthropicProvider(OneCall["anthropic.Anthropic"]):
    """Claude models behind the Messages API.

    System messages become ``system=``; a schema is appended to it as instructions;
    ``max_tokens`` defaults to :data:`DEFAULT_MAX_TOKENS`. The key is read from
    ``api_key_env`` at the first call.

    Example::

        claude = AnthropicProvider("anthropic")
        claude.complete(ChatRequest(model="claude-3-5-haiku-latest", messages=[...]))
    """

    kind = "anthropic"

    def __init__(
        self,
        name: str,
        *,
        base_url: str | None = None,
        api_key_env: str | None = "ANTHROPIC_API_KEY",
        pricing_id: str | None = "anthropic",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        _require_sdk()
        self.name = name
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.pricing_id = pricing_id
        self._headers = dict(headers or {})
        self._client: LazyClient[anthropic.Anthropic] = LazyClient(self._build, _close)

    def _build(self) -> anthropic.Anthropic:
        import anthropic

        options: dict[str, Any] = {}
        if "open_telemetry" in inspect.signature(anthropic.Anthropic).parameters:
            options["open_telemetry"] = False  # an option of recent SDKs only
        return anthropic.Anthropic(
            api_key=read_api_key(self.name, self.api_key_env),
            base_url=self.base_url,
            max_retries=0,
            default_headers=self._headers or None,
            **options,
        )

    def _call(
        self, client: anthropic.Anthropic, request: ChatRequest
    ) -> AnthropicMessage | ModelError:
        import anthropic

        secret = client.api_key
        try:
            message: AnthropicMessage = client.messages.create(**self._arguments(request))
            return message
        except anthropic.APITimeoutError:
            return ModelTimeoutError(
                f"{self.name} did not answer within {request.timeout:g}s "
                f"(model {request.model!r}); raise the step's timeout if the model is slow.",
                model=request.model,
            )
        except anthropic.APIConnectionError as exc:
            return ModelConnectionError(
                f"cannot reach {self.name} at {safe_url(str(client.base_url))} "
                f"(model {request.model!r}): {redact(str(exc.__cause__ or exc), secret)}",
                model=request.model,
            )
        except anthropic.APIStatusError as exc:
            return status_fault(
                provider=self.name,
                model=request.model,
                status=exc.status_code,
                headers=exc.response.headers,
                body=exc.body,
                secret=secret,
            )
        except anthropic.APIResponseValidationError:
            return ModelServerError(
                f"{self.name} sent a reply the anthropic SDK cannot read (model {request.model!r})",
                model=request.model,
            )
        except anthropic.AnthropicError as exc:
            return ModelRequestError(
                f"the anthropic SDK refused the call to {self.name} (model "
                f"{request.model!r}): {type(exc).__name__}: {redact(str(exc), secret)}",
                model=request.model,
            )

    def _arguments(self, request: ChatRequest) -> dict[str, Any]:
        system = [_text(m.get("content")) for m in request.messages if m.get("role") == "system"]
        if request.schema is not None:
            system.append(f"{SCHEMA_INSTRUCTIONS}\n{json.dumps(request.schema, sort_keys=True)}")
        arguments: dict[str, Any] = {
            "model": request.model,
            "messages": [m for m in request.messages if m.get("role") != "system"],
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "timeout": request.timeout,
        }
        if system:
            arguments["system"] = "\n\n".join(s for s in system if s)
        # This SDK's create() has no temperature argument; the API still takes one in
        # the body. params go the same way, known to the SDK or not.
        body: dict[str, Any] = {}
        if request.temperature is not None:
            body["temperature"] = request.temperature
        body.update(request.params)
        if body:
            arguments["extra_body"] = body
        return arguments

    def _response(self, request: ChatRequest, message: AnthropicMessage) -> ChatResponse:
        text = "".join(block.text for block in message.content if block.type == "text")
        return ChatResponse(
            text=text,
            usage=Usage(
                input_tokens=message.usage.input_tokens,
                output_tokens=message.usage.output_tokens,
            ),
            finish_reason=message.stop_reason,
            model=message.model or request.model,
        )

    def close(self) -> None:
        """Close the SDK client's connections (a later call opens new ones)."""
        self._client.close()

    def __enter__(self) -> AnthropicProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f", base_url={safe_url(self.base_url)!r}" if self.base_url else ""
        return f"AnthropicProvider({self.name!r}{where})"


def _text(content: object) -> str:
    """A system message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _close(client: anthropic.Anthropic) -> None:
    client.close()
