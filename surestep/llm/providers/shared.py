"""What the OpenAI and Anthropic adapters do alike: read the key, build the SDK client
once, and turn an HTTP failure into a fault of :mod:`surestep.llm.faults`.

Secrets: the mapped errors are built here from plain values (status, a redacted and
shortened provider message, the model), never from the SDK exception itself, whose
``request`` carries the ``Authorization`` header. Adapters raise them *outside* their
``except`` block, so not even ``__context__`` leads back to that request.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar

from surestep.errors import ConfigurationError
from surestep.llm.faults import ModelError, ModelRequestError, ModelServerError, fault_for_status
from surestep.llm.types import ChatRequest, ChatResponse

#: Sent as the key to servers that need none (``api_key_env=None``): the SDKs insist on
#: having one.
PLACEHOLDER_KEY = "surestep-no-key"

#: Provider messages are quoted in errors, shortened to this many characters.
MESSAGE_LIMIT = 300

# Key-shaped words (OpenAI "sk-...", "sk-proj-...", Anthropic "sk-ant-..."): a provider's
# 401 often quotes part of the key it was sent ("Incorrect API key provided: sk-ab***yz").
_KEY_SHAPED = re.compile(r"\b(?:sk|key|api[-_]?key)[-_][A-Za-z0-9_\-*.]{6,}", re.IGNORECASE)

# A URL's user:password@ and its query (gateways take keys as ?api_key=...).
_URL_USERINFO = re.compile(r"(?<=://)[^\s/@]*@")
_URL_QUERY = re.compile(r"(?<=\S)(://[^\s?#]*)\?[^\s#]*")

# Words providers use when the prompt does not fit the model's context window.
_CONTEXT_WORDS = ("context_length", "context length", "context window", "prompt is too long")

ClientT = TypeVar("ClientT")


def read_api_key(provider: str, env_var: str | None) -> str:
    """The key from ``env_var``, or the placeholder when there is none to read."""
    if env_var is None:
        return PLACEHOLDER_KEY
    key = os.environ.get(env_var, "").strip()
    if not key:
        raise ConfigurationError(
            f"the environment variable {env_var} is not set: the LLM provider {provider!r} "
            f"reads its API key from it. Set it in every worker's environment, or declare "
            f"the provider with api_key_env=None for a local server that needs no key."
        )
    return key


class LazyClient(Generic[ClientT]):
    """One SDK client, built on first use (so a missing key fails the call that needs it,
    not the App's construction) and shared by every thread afterwards."""

    def __init__(self, build: Callable[[], ClientT], close: Callable[[ClientT], None]) -> None:
        self._build = build
        self._close = close
        self._client: ClientT | None = None
        self._lock = threading.Lock()

    def get(self) -> ClientT:
        client = self._client
        if client is not None:
            return client
        with self._lock:
            if self._client is None:
                self._client = self._build()
            return self._client

    def close(self) -> None:
        """Close the client's connections; the next call builds a new client."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            self._close(client)

    def __repr__(self) -> str:
        return f"<LazyClient built={self._client is not None}>"


def redact(text: str, secret: str | None) -> str:
    """``text`` without the key and without anything shaped like a key, shortened."""
    if secret and secret != PLACEHOLDER_KEY:
        text = text.replace(secret, "[redacted]")
    text = _KEY_SHAPED.sub("[redacted]", text)
    text = safe_url(text)
    text = " ".join(text.split())
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 3] + "..."
    return text


def safe_url(text: str) -> str:
    """``text`` with each URL's credentials (``user:password@``) and query taken out: a
    base_url may carry a key, and messages naming it are stored and logged."""
    return _URL_QUERY.sub(r"\1?[redacted]", _URL_USERINFO.sub("", text))


def provider_message(body: object) -> str:
    """The human message of an error body: ``{"error": {"message": ...}}`` (both
    providers), ``{"message": ...}``, or the body itself when it is text."""
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            message = error.get("message")
            if isinstance(message, str):
                return message
        elif isinstance(error, str):
            return error
        return ""
    if isinstance(body, str | bytes):
        return body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return ""


def retry_after_seconds(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the provider asked to wait: ``retry-after-ms`` (OpenAI, Anthropic), else
    ``retry-after`` as seconds or as an HTTP date. None when it said nothing usable."""
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = lowered.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def unreadable_reply(provider: str, model: str, problem: str) -> ModelServerError:
    """The fault for a reply whose body does not have the shape the SDK promises."""
    return ModelServerError(
        f"{provider} sent a reply surestep cannot read (model {model!r}): "
        f"{problem[:MESSAGE_LIMIT]}",
        model=model,
    )


def status_fault(
    *,
    provider: str,
    model: str,
    status: int,
    headers: Mapping[str, str],
    body: object,
    secret: str | None,
) -> ModelError:
    """The fault for an HTTP error reply, with a message that names the provider, the
    model and the status, quotes the provider (redacted), and says what happens next."""
    said = redact(provider_message(body), secret)
    said_part = f": {said}" if said else ""
    fault = fault_for_status(status)
    if status == 529:
        what = "is overloaded"
    elif fault is ModelRequestError and any(w in said.lower() for w in _CONTEXT_WORDS):
        what = "refused the request: it does not fit the model's context window"
    elif fault is ModelRequestError:
        what = "refused the request"
    elif status == 429:
        what = "is rate limiting this key"
    else:
        what = "failed"
    return fault(
        f"{provider} {what} (HTTP {status}, model {model!r}){said_part}",
        model=model,
        status=status,
        retry_after=retry_after_seconds(headers),
    )


class OneCall(Generic[ClientT]):
    """What the SDK adapters share: a call made once, its fault raised outside the SDK's
    ``except`` blocks (so the fault's ``__context__`` stays empty and no traceback leads
    back to the SDK's request and its key), and a body the SDK took without checking its
    shape (a compatible server's bug) turned into a recorded, retried server error."""

    name: str
    _client: LazyClient[ClientT]

    def _call(self, client: ClientT, request: ChatRequest) -> Any:
        """The SDK's reply, or the :class:`ModelError` its failure maps to."""
        raise NotImplementedError

    def _response(self, request: ChatRequest, reply: Any) -> ChatResponse:
        raise NotImplementedError

    def complete(self, request: ChatRequest) -> ChatResponse:
        """Make the call once; raise a fault of :mod:`surestep.llm.faults`."""
        outcome = self._call(self._client.get(), request)
        if isinstance(outcome, ModelError):
            raise outcome
        try:
            return self._response(request, outcome)
        except (AttributeError, TypeError, ValueError, LookupError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        raise unreadable_reply(self.name, request.model, problem)
