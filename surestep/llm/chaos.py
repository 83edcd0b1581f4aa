"""The chaos model server: a local OpenAI-compatible model that fails on purpose.

Point the ``openai`` SDK (or anything that speaks chat completions) at it to prove a
workflow survives what real models do: time out, answer 5xx or 429, return broken JSON,
drift from the schema, or answer unsure. Each request draws at most one fault, from
rates that sum to at most 1::

    with ChaosServer(ChaosConfig(seed=7, error_rate=0.1, bad_json_rate=0.1), port=0) as server:
        client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
        ...
        server.stats()  # {"requests": 40, "faults": {"error": 3, ...}, "clean": 33}

Both the answers and the faults are deterministic. An answer is keyed by (seed, the
messages, the model); a fault by (seed, the whole request, how many times this exact
request came before), so the retry of a failed request draws again and may succeed, and
one seed with one sequence of requests replays the same faults. ``surestep chaos-llm``
(:mod:`surestep.cli.chaos`) runs it from the command line. Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from surestep.errors import ConfigurationError
from surestep.llm import chaos_answers as answers

#: The faults, in the order their rates are laid end to end on [0, 1).
FAULT_KINDS = ("timeout", "error", "rate_limit", "bad_json", "schema_drift", "low_confidence")


@dataclass(frozen=True)
class ChaosConfig:
    """How often each fault happens (a probability per request) and how it behaves.

    ``timeout_seconds`` is how long a timed-out request is held before the server gives
    up on it with a 504; ``retry_after`` is the ``Retry-After`` of a 429 in seconds;
    ``latency_ms`` delays every answer.
    """

    seed: int = 0
    timeout_rate: float = 0.0
    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    bad_json_rate: float = 0.0
    schema_drift_rate: float = 0.0
    low_confidence_rate: float = 0.0
    latency_ms: float = 0.0
    timeout_seconds: float = 30.0
    retry_after: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_rate") and not 0.0 <= value <= 1.0:
                raise ConfigurationError(
                    f"{f.name} is {value}; a fault rate is a probability: give 0 to 1"
                )
        if sum(self.rates()) > 1.0 + 1e-9:
            raise ConfigurationError(
                f"the fault rates sum to {sum(self.rates()):g}; each request gets at most "
                "one fault, so they must sum to at most 1: lower some of them"
            )
        for name in ("latency_ms", "timeout_seconds", "retry_after"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} is {getattr(self, name)}; give 0 or more")

    def rates(self) -> tuple[float, ...]:
        """The rate of each of :data:`FAULT_KINDS`, in that order."""
        return tuple(float(getattr(self, f"{kind}_rate")) for kind in FAULT_KINDS)


def request_key(body: dict[str, Any]) -> str:
    """The hash of a request's whole content: the same request (a retry) has the same."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def draw_fault(config: ChaosConfig, key: str, seen: int) -> tuple[str | None, random.Random]:
    """The fault (or None) of the ``seen``-th repeat of the request hashed ``key``, and
    the random source that shapes it (which 5xx, which field drifts)."""
    rng = random.Random(f"fault:{config.seed}:{key}:{seen}")  # noqa: S311 -- replayable
    draw = rng.random()
    edge = 0.0
    for kind, rate in zip(FAULT_KINDS, config.rates(), strict=True):
        edge += rate
        if draw < edge:
            return kind, rng
    return None, rng


@dataclass
class _Counters:
    requests: int = 0
    bad_requests: int = 0
    clean: int = 0
    faults: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAULT_KINDS, 0))
    seen: dict[str, int] = field(default_factory=dict)  # request key -> times seen


class ChaosModel:
    """The model behind the server: turns a chat-completions body into a reply (or a
    fault), and counts what it did. Thread-safe; no HTTP (see :class:`ChaosServer`)."""

    def __init__(self, config: ChaosConfig, echo: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._echo = echo
        self._lock = threading.Lock()
        self._counts = _Counters()

    def stats(self) -> dict[str, Any]:
        """Requests seen, faults injected by kind, and clean answers, since the start or
        the last :meth:`reset`."""
        with self._lock:
            c = self._counts
            return {
                "requests": c.requests,
                "bad_requests": c.bad_requests,
                "faults": dict(c.faults),
                "faults_total": sum(c.faults.values()),
                "clean": c.clean,
            }

    def reset(self) -> None:
        """Zero the counters and forget which requests were seen: from here on the
        server answers exactly as a fresh one with the same seed would."""
        with self._lock:
            self._counts = _Counters()

    def count_bad_request(self) -> None:
        with self._lock:
            self._counts.bad_requests += 1

    def complete(self, body: dict[str, Any]) -> Reply:
        """The reply to one ``POST /v1/chat/completions``."""
        problem = _invalid_body(body)
        if problem:
            self.count_bad_request()
            return error_reply(400, problem, "invalid_request_error")
        key = request_key(body)
        with self._lock:
            seen = self._counts.seen.get(key, 0)
            self._counts.seen[key] = seen + 1
        fault, rng = draw_fault(self.config, key, seen)
        try:
            reply = self._reply(body, fault, rng)
        except ValueError as exc:  # a schema the answers cannot follow
            self.count_bad_request()
            return error_reply(400, str(exc), "invalid_request_error")
        with self._lock:
            self._counts.requests += 1
            if reply.fault:
                self._counts.faults[reply.fault] += 1
            else:
                self._counts.clean += 1
        if reply.fault and self._echo:
            where = f"model={body['model']} request={key[:10]} seen={seen}"
            self._echo(f"chaos: {reply.fault:<14} {reply.note} {where}")
        return reply

    def _reply(self, body: dict[str, Any], fault: str | None, rng: random.Random) -> Reply:
        config = self.config
        if fault == "timeout":
            held = f"{config.timeout_seconds:g}s"
            reply = error_reply(504, f"the chaos server held this request {held}", "timeout")
            reply.fault, reply.note, reply.hold = fault, f"held {held}", config.timeout_seconds
            return reply
        if fault == "error":
            status = rng.choice((500, 502, 503))
            reply = error_reply(status, "the chaos server failed on purpose", "server_error")
            reply.fault, reply.note = fault, f"status={status}"
            return reply
        if fault == "rate_limit":
            reply = error_reply(
                429, "rate limit reached (injected by the chaos server)", "rate_limit_exceeded"
            )
            reply.fault, reply.note = fault, f"retry-after={config.retry_after:g}"
            reply.headers["Retry-After"] = f"{config.retry_after:g}"
            return reply
        answer_key = request_key({"model": body["model"], "messages": body["messages"]})
        answer_rng = random.Random(f"answer:{config.seed}:{answer_key}")  # noqa: S311
        done = answers.completion(body, fault, answer_rng, rng)
        return Reply(200, done.body, fault=done.fault, note=done.note)


def _invalid_body(body: Any) -> str | None:
    """What is wrong with a chat-completions body, in the words of an OpenAI 400."""
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "'model' is required: the name of the model to call (any name will do)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' is required: a non-empty list of {role, content} objects"
    if not all(isinstance(m, dict) for m in messages):
        return "each of 'messages' must be an object with 'role' and 'content'"
    if body.get("stream"):
        return "the chaos server does not stream: call it with stream=false"
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict)
        or response_format.get("type") not in ("text", "json_object", "json_schema")
    ):
        return "'response_format' must have type 'text', 'json_object' or 'json_schema'"
    return None


@dataclass
class Reply:
    """One HTTP answer: status, JSON body, extra headers; ``hold`` seconds to wait
    before sending it (a timeout fault); ``fault`` the kind injected, if any."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    fault: str | None = None
    hold: float = 0.0
    note: str = ""


def error_reply(status: int, message: str, kind: str) -> Reply:
    """An error in OpenAI's shape, which the SDK turns into its exception of ``status``."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": kind}}
    return Reply(status, body)


class _Server(ThreadingHTTPServer):
    """The HTTP server, knowing its model and its open connections: closing shuts
    those down, so a held request or an idle keep-alive connection ends at once."""

    daemon_threads = False
    block_on_close = True  # server_close joins the handler threads: nothing outlives it

    def __init__(self, address: tuple[str, int], model: ChaosModel) -> None:
        self.model = model
        self.stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._dropping = False
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if not open_:
                self._connections.discard(connection)
            elif self._dropping:
                # Accepted just before the server stopped, set up just after the drop:
                # end it too, or server_close would wait for its client forever.
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            else:
                self._connections.add(connection)

    def drop_connections(self) -> None:
        with self._connections_lock:
            self._dropping = True
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # the client closed it already
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its own timeout) and closed the socket is what this
        # server is for, not an error worth a traceback.
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the model prints what it injected; every request would drown that

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            model = {"id": "chaos", "object": "model", "created": 0, "owned_by": "surestep"}
            self._send(Reply(200, {"object": "list", "data": [model]}))
        elif path == "/chaos/stats":
            self._send(Reply(200, self.server.model.stats()))
        else:
            self._send(_not_found("GET", path))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path in ("/v1/chat/completions", "/chat/completions"):
            self._complete()
        elif path == "/chaos/reset":
            self._read_body()
            self.server.model.reset()
            self._send(Reply(200, {"reset": True, **self.server.model.stats()}))
        else:
            self._read_body()
            self._send(_not_found("POST", path))

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0  # the JSON parse then fails: a 400
            self.close_connection = True  # the body's end is unknown
        return self.rfile.read(length) if length > 0 else b""

    def _complete(self) -> None:
        try:
            body = json.loads(self._read_body())
        except ValueError as exc:
            self.server.model.count_bad_request()
            message = f"the request body is not JSON ({exc}); send a chat-completions object"
            self._send(error_reply(400, message, "invalid_request_error"))
            return
        reply = self.server.model.complete(body)
        stopping = self.server.stopping
        latency = self.server.model.config.latency_ms / 1000.0
        if latency and stopping.wait(latency):
            self.close_connection = True
            return
        if reply.hold and stopping.wait(reply.hold):
            self.close_connection = True  # shutting down: the held request never answers
            return
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        payload = json.dumps(reply.body).encode("utf-8")
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True  # the client is gone (it timed out first)


def _not_found(method: str, path: str) -> Reply:
    known = "POST /v1/chat/completions, GET /v1/models, GET /chaos/stats, POST /chaos/reset"
    return error_reply(404, f"no route {method} {path}; the chaos server has {known}", "not_found")


class ChaosServer:
    """The chaos model on a local HTTP port, served from a background thread.

    ``port=0`` picks a free port; :attr:`url` is then the base URL to give the SDK.
    ``echo`` gets one line per injected fault (``surestep chaos-llm`` prints them).
    Closing stops at once, ending any request it holds::

        with ChaosServer(ChaosConfig(seed=7, timeout_rate=0.2), port=0) as server:
            client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)
    """

    def __init__(
        self,
        config: ChaosConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config or ChaosConfig()
        self.host = host
        self.model = ChaosModel(self.config, echo)
        self._port = port
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the one picked, for ``port=0``) once started."""
        return self._httpd.server_address[1] if self._httpd else self._port

    @property
    def url(self) -> str:
        """The OpenAI base URL: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> ChaosServer:
        """Listen and serve in a background thread; an ``OSError`` if the port is taken."""
        if self._httpd is None:
            self._httpd = _Server((self.host, self._port), self.model)
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"surestep-chaos-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, end held requests and open connections, free the port."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.stopping.set()
        httpd.shutdown()
        httpd.drop_connections()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join()

    def stats(self) -> dict[str, Any]:
        """Requests, injected faults by kind and clean answers (``GET /chaos/stats``)."""
        return self.model.stats()

    def reset(self) -> None:
        """Zero the counters, as ``POST /chaos/reset`` does (see :meth:`ChaosModel.reset`)."""
        self.model.reset()

    def __enter__(self) -> ChaosServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def summary(stats: dict[str, Any]) -> str:
    """The one-paragraph account ``surestep chaos-llm`` prints when it stops."""
    faults = ", ".join(f"{kind} {n}" for kind, n in stats["faults"].items() if n) or "none"
    return (
        f"chaos summary: {stats['requests']} requests, {stats['clean']} clean, "
        f"{stats['faults_total']} faults injected ({faults}), "
        f"{stats['bad_requests']} bad requests"
    )
