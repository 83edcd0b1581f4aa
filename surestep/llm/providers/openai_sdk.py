"""OpenAI and every OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio),
through the official ``openai`` SDK's Chat Completions API.

The SDK's own retries are off (``max_retries=0``): a retry is surestep's durable
decision, recorded as an attempt, never a hidden second loop inside one attempt.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from surestep.errors import ConfigurationError, MissingDependencyError
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
    import openai
    from openai.types.chat import ChatCompletion

INSTALL = "pip install 'surestep[llm]'"

OpenAIKind = Literal["openai", "openai-compatible"]


class _Default(enum.Enum):
    PRICING = "by kind"


def _require_sdk() -> None:
    try:
        import openai  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            f"OpenAI and OpenAI-compatible models need the openai SDK: {INSTALL}"
        ) from None


class OpenAIProvider(OneCall["openai.OpenAI"]):
    """Models behind the Chat Completions API.

    ``kind="openai"`` is OpenAI itself, priced under genai-prices' ``"openai"``;
    ``kind="openai-compatible"`` is any server speaking the same API at ``base_url``,
    unpriced unless ``pricing_id`` names a genai-prices provider. ``api_key_env=None``
    sends a placeholder key (local servers ask for none). The key is read from the
    environment at the first call, so a worker needs it, the CLI that only reads runs
    does not.

    Example::

        local = OpenAIProvider("local", kind="openai-compatible",
                               base_url="http://127.0.0.1:8000/v1", api_key_env=None)
        local.complete(ChatRequest(model="llama3.1", messages=[...]))
    """

    def __init__(
        self,
        name: str,
        *,
        kind: OpenAIKind = "openai",
        base_url: str | None = None,
        api_key_env: str | None = "OPENAI_API_KEY",
        pricing_id: str | _Default | None = _Default.PRICING,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        _require_sdk()
        if kind not in ("openai", "openai-compatible"):
            raise ConfigurationError(
                f"LLM provider {name!r}: kind {kind!r} is not one the OpenAI adapter "
                f"speaks; use 'openai' or 'openai-compatible'."
            )
        if kind == "openai-compatible" and not base_url:
            raise ConfigurationError(
                f"LLM provider {name!r} is OpenAI-compatible but has no base_url: give the "
                f"server's address, e.g. base_url='http://127.0.0.1:8000/v1'."
            )
        self.name = name
        self.kind: str = kind
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.pricing_id: str | None = (
            ("openai" if kind == "openai" else None)
            if isinstance(pricing_id, _Default)
            else pricing_id
        )
        self._headers = dict(headers or {})
        self._client: LazyClient[openai.OpenAI] = LazyClient(self._build, _close)

    def _build(self) -> openai.OpenAI:
        import openai

        return openai.OpenAI(
            api_key=read_api_key(self.name, self.api_key_env),
            base_url=self.base_url,
            max_retries=0,
            default_headers=self._headers or None,
        )

    def _call(self, client: openai.OpenAI, request: ChatRequest) -> ChatCompletion | ModelError:
        import openai

        try:
            completion: ChatCompletion = client.chat.completions.create(**self._arguments(request))
            return completion
        except openai.APITimeoutError:
            return ModelTimeoutError(
                f"{self.name} did not answer within {request.timeout:g}s "
                f"(model {request.model!r}); raise the step's timeout if the model is slow.",
                model=request.model,
            )
        except openai.APIConnectionError as exc:
            cause = redact(str(exc.__cause__ or exc), client.api_key)
            return ModelConnectionError(
                f"cannot reach {self.name} at {safe_url(str(client.base_url))} "
                f"(model {request.model!r}): {cause}",
                model=request.model,
            )
        except openai.APIStatusError as exc:
            return status_fault(
                provider=self.name,
                model=request.model,
                status=exc.status_code,
                headers=exc.response.headers,
                body=exc.body,
                secret=client.api_key,
            )
        except openai.APIResponseValidationError:
            return ModelServerError(
                f"{self.name} sent a reply the openai SDK cannot read (model {request.model!r})",
                model=request.model,
            )
        except openai.OpenAIError as exc:
            return ModelRequestError(
                f"the openai SDK refused the call to {self.name} (model {request.model!r}): "
                f"{type(exc).__name__}: {redact(str(exc), client.api_key)}",
                model=request.model,
            )

    def _arguments(self, request: ChatRequest) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "timeout": request.timeout,
        }
        if request.schema is not None:
            arguments["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.schema},
            }
        if request.temperature is not None:
            arguments["temperature"] = request.temperature
        if request.logprobs:
            arguments["logprobs"] = True
        # extra_body reaches the JSON body as is, whether this SDK version knows the
        # key or not: params (vLLM's guided_json, top_k, seed), and max_completion_tokens,
        # which openai SDKs before 1.45 do not take as an argument.
        body: dict[str, Any] = {}
        if request.max_tokens is not None:
            # OpenAI's newer models take only max_completion_tokens; compatible
            # servers know max_tokens (some know nothing else).
            key = "max_completion_tokens" if self.kind == "openai" else "max_tokens"
            body[key] = request.max_tokens
        body.update(request.params)
        if body:
            arguments["extra_body"] = body
        return arguments

    def _response(self, request: ChatRequest, completion: ChatCompletion) -> ChatResponse:
        if not completion.choices:
            raise ModelServerError(
                f"{self.name} replied with no choices (model {request.model!r})",
                model=request.model,
            )
        choice = completion.choices[0]
        usage = completion.usage
        logprobs: tuple[float, ...] | None = None
        if request.logprobs and choice.logprobs is not None and choice.logprobs.content:
            logprobs = tuple(token.logprob for token in choice.logprobs.content)
        return ChatResponse(
            text=choice.message.content or "",
            usage=Usage(
                input_tokens=usage.prompt_tokens if usage else 0,
                output_tokens=usage.completion_tokens if usage else 0,
            ),
            finish_reason=choice.finish_reason,
            model=completion.model or request.model,
            logprobs=logprobs,
        )

    def close(self) -> None:
        """Close the SDK client's connections (a later call opens new ones)."""
        self._client.close()

    def __enter__(self) -> OpenAIProvider:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        where = f", base_url={safe_url(self.base_url)!r}" if self.base_url else ""
        return f"OpenAIProvider({self.name!r}, kind={self.kind!r}{where})"


def _close(client: openai.OpenAI) -> None:
    client.close()
