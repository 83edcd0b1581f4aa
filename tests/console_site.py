"""What the console tests share: a real server on 127.0.0.1, signed-in HTTP clients, the
workflows the pages show, and a reader of the pages' HTML."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from html.parser import HTMLParser

import httpx
from pydantic import BaseModel

import surestep
from surestep import App
from surestep.testing import drive
from surestep.web import server

INSTRUCTIONS = (
    "## Check the invoice\n\nCompare the **total** with the PDF. "
    "<script>alert('x')</script> [docs](javascript:alert(1)) [policy](https://example.com/p)"
)


class Invoice(BaseModel):
    vendor: str
    total: Decimal


def declare(app: App) -> dict[str, bool]:
    """An invoice workflow that asks finance for a review (with a form, a sensitive
    field and Markdown instructions), and a fragile one that dead-letters while
    ``down["yes"]``."""
    down = {"yes": True}

    @app.workflow(name="invoice")
    def invoice(doc: str, group: str = "finance") -> dict[str, object]:
        fields = {"vendor": f"ACME {doc}", "total": "120.50", "iban": "DE89370400440532013000"}
        decision = surestep.request_review(
            fields,
            kind="approve_invoice",
            groups=[group],
            form=Invoice,
            redact=["iban"],
            proposal={**fields, "total": "120.00"},
            confidence=0.62,
            instructions=INSTRUCTIONS,
        )
        return {"outcome": decision.outcome, "data": decision.data}

    @app.step(name="call_api", retry=surestep.Retry(max_attempts=1))
    def call_api() -> str:
        if down["yes"]:
            raise ConnectionError("api is down")
        return "ok"

    @app.workflow(name="fragile")
    def fragile() -> str:
        return call_api()

    return down


@contextmanager
def serving(app: App) -> Iterator[str]:
    """The API and console over ``app`` on a free port of 127.0.0.1, in a thread."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    api = server(app, port=port, log_level="warning")
    thread = threading.Thread(target=api.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not api.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        api.should_exit = True
        thread.join(10)
        sock.close()


def csrf_in(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field on the page"
    return found.group(1)


def browser(base: str) -> httpx.Client:
    """A client that keeps cookies and does not follow redirects (close it)."""
    return httpx.Client(base_url=base, timeout=30, follow_redirects=False)


def sign_in(client: httpx.Client, token: str, next_path: str = "/console/") -> httpx.Response:
    form = client.get("/console/login", params={"next": next_path})
    assert form.status_code == 200, form.text
    return client.post(
        "/console/login", data={"csrf": csrf_in(form.text), "token": token, "next": next_path}
    )


def signed_in(base: str, token: str) -> httpx.Client:
    client = browser(base)
    answer = sign_in(client, token)
    assert answer.status_code == 303, answer.text
    return client


class Controls(HTMLParser):
    """The form controls of a page and the labels that name them."""

    def __init__(self) -> None:
        super().__init__()
        self.controls: list[dict[str, str | None]] = []
        self.labelled: set[str] = set()
        self._label_depth = 0
        self._inside_label: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "label":
            self._label_depth += 1
            if found.get("for"):
                self.labelled.add(str(found["for"]))
        if tag in ("input", "select", "textarea") and found.get("type") != "hidden":
            found["tag"] = tag
            found["in_label"] = "yes" if self._label_depth else None
            self.controls.append(found)

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._label_depth -= 1

    def unlabelled(self) -> list[dict[str, str | None]]:
        return [
            c
            for c in self.controls
            if not (c.get("id") in self.labelled or c.get("aria-label") or c.get("in_label"))
        ]


def unlabelled_controls(html: str) -> list[dict[str, str | None]]:
    parser = Controls()
    parser.feed(html)
    return parser.unlabelled()


def drive_aside(app: App, until: Callable[[], bool]) -> None:
    """``drive`` in a thread of its own: Playwright's sync API keeps an event loop running
    in the test's thread, where ``asyncio.run`` cannot start another."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            drive(app, until=until)
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "the worker did not stop"
    if failure:
        raise failure[0]
