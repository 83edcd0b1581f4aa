"""A scripted model server on 127.0.0.1 for the provider adapters' tests.

It speaks just enough of OpenAI's ``/v1/chat/completions`` and Anthropic's
``/v1/messages`` for the real SDKs: each path answers from its own queue of scripted
replies (status, headers, JSON body, optional delay), and every request received is
recorded with its headers and body, so a test can count requests (one per call: the
SDKs' own retries are off) and look for the key where it belongs and nowhere else.

    with FakeModelServer() as server:
        server.script(OPENAI, Reply(body=openai_completion("hi")))
        provider = OpenAIProvider("openai", base_url=server.openai_base_url)
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``delay`` holds the answer back that many seconds (cut short
    when the server closes), to make a client time out."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]  # names in lower case
    body: Any  # the parsed JSON, or None


class FakeModelServer:
    """A real HTTP server in a thread; a context manager that closes it."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self._queues: dict[str, deque[Reply]] = {OPENAI: deque(), ANTHROPIC: deque()}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url  # the anthropic SDK adds /v1/messages itself

    def script(self, path: str, *replies: Reply) -> None:
        """Queue replies for ``path`` (:data:`OPENAI` or :data:`ANTHROPIC`)."""
        with self._lock:
            self._queues[path].extend(replies)

    def requests_to(self, path: str) -> list[ReceivedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _next_reply(self, request: ReceivedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            queue = self._queues.get(request.path)
            if queue:
                return queue.popleft()
        message = f"fake model server: no reply scripted for POST {request.path}"
        return Reply(status=599, body={"error": {"message": message}})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                received = ReceivedRequest(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=json.loads(raw) if raw else None,
                )
                reply = server._next_reply(received)
                if reply.delay:
                    server._closing.wait(reply.delay)
                payload = json.dumps(reply.body).encode() if reply.body is not None else b""
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nobody to answer

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def close(self) -> None:
        self._closing.set()  # wake replies held back by a delay
        self._server.shutdown()
        self._server.server_close()  # joins the handler threads
        self._thread.join(timeout=10)

    def __enter__(self) -> FakeModelServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def openai_completion(
    text: str,
    *,
    model: str = "gpt-4o-mini",
    prompt_tokens: int = 10,
    completion_tokens: int = 5,
    finish_reason: str = "stop",
    logprobs: list[float] | None = None,
) -> dict[str, Any]:
    """A Chat Completions reply body."""
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish_reason,
        "logprobs": None,
    }
    if logprobs is not None:
        choice["logprobs"] = {
            "content": [
                {"token": f"t{i}", "logprob": lp, "bytes": None, "top_logprobs": []}
                for i, lp in enumerate(logprobs)
            ]
        }
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def anthropic_message(
    text: str,
    *,
    model: str = "claude-3-5-haiku-latest",
    input_tokens: int = 12,
    output_tokens: int = 6,
    stop_reason: str = "end_turn",
) -> dict[str, Any]:
    """A Messages API reply body."""
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def openai_error(message: str, *, code: str | None = None) -> dict[str, Any]:
    """An OpenAI error body (OpenAI-compatible servers use the same shape)."""
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


def anthropic_error(message: str, *, kind: str = "invalid_request_error") -> dict[str, Any]:
    """An Anthropic error body."""
    return {"type": "error", "error": {"type": kind, "message": message}}
