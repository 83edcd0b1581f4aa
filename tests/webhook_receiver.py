"""A webhook receiver on 127.0.0.1 for the review notifier's tests: a real HTTP server
in a thread that records each request and checks its signature."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from surestep.review import notify

SECRET = "s3cret-never-stored-9f81c2"
TOKEN = "T0KEN-in-the-url-77aa"


class Receiver:
    """A webhook receiver: records every request; answers the statuses it is given,
    then 200."""

    def __init__(self, clock: Callable[[], float], statuses: list[int]) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses = statuses
        self.clock = clock
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.append(
                    {
                        "path": self.path,
                        "headers": dict(self.headers.items()),
                        "body": body,
                        "status": status,
                        "signed": notify.verify_signature(
                            SECRET, body, dict(self.headers.items()), now=receiver.clock()
                        ),
                    }
                )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/{TOKEN}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests]
