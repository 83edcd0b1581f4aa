"""The console in a real browser: Debian's Chromium driven by Playwright, against a real
server on 127.0.0.1, on both databases.

Screenshots of each step are saved under the test's tmp dir (``pytest --basetemp DIR``
keeps them where you want; CI can collect ``DIR/**/screenshots``). Chromium is
``/usr/bin/chromium`` (``apt-get install chromium``; Playwright's own browser download is
not used); without it these tests skip locally and fail in CI.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from console_site import declare, drive_aside, serving

from surestep import App, State

CHROMIUM = os.environ.get("SURESTEP_TEST_CHROMIUM", "/usr/bin/chromium")

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing: apt-get install chromium"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Shots:
    """Numbered screenshots of one test, in its tmp dir."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.count = 0

    def take(self, page: object, name: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{name}.png"), full_page=True)  # type: ignore[attr-defined]


@pytest.fixture
def shots(tmp_path: Path) -> Shots:
    return Shots(tmp_path / "screenshots")


@pytest.fixture
def site(app: App) -> Iterator[tuple[App, str, dict[str, str], dict[str, bool]]]:
    down = declare(app)
    tokens = {
        "alice": app.users.add("alice", "reviewer", ["finance"]),
        "olga": app.users.add("olga", "operator"),
    }
    app.start("invoice", "1", run_id="fin-1")
    app.start("invoice", "2", run_id="fin-2")
    app.start("fragile", run_id="dl-1")
    drive_aside(
        app,
        until=lambda: len(app.reviews.list()) == 2 and app.get_run("dl-1").state == "dead_letter",
    )
    with serving(app) as base:
        yield app, base, tokens, down


def open_page(chromium: object, base: str) -> tuple[object, object, list[str]]:
    """A fresh browser context (its own cookies) and page; script errors and CSP
    violations collected (a 4xx answer the test expects is not one)."""
    context = chromium.new_context(base_url=base)  # type: ignore[attr-defined]
    page = context.new_page()
    errors: list[str] = []
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(str(e)))
    return context, page, errors


def sign_in_with_keyboard(page: object, token: str, path: str) -> None:
    page.goto(path)  # type: ignore[attr-defined]
    assert "/console/login" in page.url  # type: ignore[attr-defined]
    page.keyboard.type(token)  # type: ignore[attr-defined]  # the token field has focus
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    # Not a glob: "**/console/inbox" would match the login page's own ?next= URL.
    page.wait_for_url(lambda url: urlsplit(url).path == path)  # type: ignore[attr-defined]
    page.wait_for_load_state()  # type: ignore[attr-defined]


def test_a_reviewer_fixes_an_invalid_edit_approves_and_the_run_finishes(
    chromium: object, site: tuple[App, str, dict[str, str], dict[str, bool]], shots: Shots
) -> None:
    app, base, tokens, _ = site
    context, page, errors = open_page(chromium, base)
    sign_in_with_keyboard(page, tokens["alice"], "/console/inbox")
    shots.take(page, "inbox")
    assert page.locator("#tasks tr.row").count() == 2
    assert "Runs" not in page.locator("header nav").inner_text()

    # j moves to the first task, Enter opens it.
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url("**/console/tasks/*")
    first = int(page.url.rsplit("/", 1)[1])
    assert page.get_by_role("heading", name="Check the invoice").is_visible()
    assert page.get_by_label("Total").input_value() == "120.00"  # the model's proposal

    # Claimed with htmx: the box is swapped in place, the CSRF token sent as a header.
    page.get_by_role("button", name="Claim").click()
    page.locator("#claim", has_text="Claimed by alice").wait_for()
    assert app.reviews.get(first).claimed_by == "alice"

    page.get_by_label("Total").fill("12,5O")
    page.get_by_role("button", name="Save edits").click()
    page.locator(".field-error").wait_for()
    shots.take(page, "invalid-edit")
    assert page.get_by_label("Total").get_attribute("aria-invalid") == "true"
    assert "does not fit the form" in page.get_by_role("alert").first.inner_text()
    assert "is not a number: write it like 12.50" in page.locator(".field-error").inner_text()
    assert app.reviews.get(first).state == "open"

    page.get_by_label("Total").fill("12.50")
    page.get_by_label("Comment").fill("total corrected")
    page.get_by_role("button", name="Save edits").click()
    # The next task opens; "a" approves it from the keyboard.
    page.wait_for_url(f"**decided={first}")
    shots.take(page, "next-task")
    second = int(page.url.split("/tasks/")[1].split("?")[0])
    assert second != first
    page.keyboard.press("a")
    page.wait_for_url("**/console/inbox?done=*")
    shots.take(page, "inbox-empty")
    assert "No more tasks waiting for you" in page.content()

    drive_aside(
        app, until=lambda: {app.get_run(r).state for r in ("fin-1", "fin-2")} == {State.SUCCESS}
    )
    decided = {app.reviews.get(t).run_id: app.reviews.get(t) for t in (first, second)}
    assert {t.outcome for t in decided.values()} == {"edit", "approve"}
    edited = next(t for t in decided.values() if t.outcome == "edit")
    assert app.handle(edited.run_id).result()["data"] == {
        "vendor": edited.payload["vendor"],
        "total": "12.50",
    }

    # An operator sees the run finished, with its review.
    context2, page2, errors2 = open_page(chromium, base)
    sign_in_with_keyboard(page2, tokens["olga"], f"/console/runs/{edited.run_id}")
    assert page2.locator("#run-state").inner_text() == "success"
    shots.take(page2, "run-finished")
    assert errors == [] and errors2 == [], errors + errors2
    context.close()
    context2.close()


def test_an_operator_redrives_a_dead_letter(
    chromium: object, site: tuple[App, str, dict[str, str], dict[str, bool]], shots: Shots
) -> None:
    app, base, tokens, down = site
    context, page, errors = open_page(chromium, base)
    sign_in_with_keyboard(page, tokens["olga"], "/console/dead-letters")
    assert "ConnectionError" in page.content() and "api is down" in page.content()
    shots.take(page, "dead-letters")
    down["yes"] = False
    page.get_by_label("Select run dl-1").check()
    page.get_by_role("button", name="Redrive selected").click()
    page.get_by_role("status").filter(has_text="redrove 1 run").wait_for()
    shots.take(page, "redriven")
    drive_aside(app, until=lambda: app.get_run("dl-1").state == State.SUCCESS)
    page.goto("/console/runs/dl-1")
    assert page.locator("#run-state").inner_text() == "success"
    assert "console:olga" in page.content()  # the event log says who redrove it
    shots.take(page, "run-page")
    page.goto("/console/overview")
    assert page.locator("svg").count() == 2
    shots.take(page, "overview")
    assert errors == [], errors
    context.close()


def test_a_reviewer_cannot_open_operator_pages(
    chromium: object, site: tuple[App, str, dict[str, str], dict[str, bool]], shots: Shots
) -> None:
    _, base, tokens, _ = site
    context, page, errors = open_page(chromium, base)
    sign_in_with_keyboard(page, tokens["alice"], "/console/inbox")
    for path in (
        "/console/runs",
        "/console/runs/dl-1",
        "/console/dead-letters",
        "/console/overview",
    ):
        answer = page.goto(path)
        assert answer is not None and answer.status == 403, path
        assert "needs the operator role" in page.content()
    shots.take(page, "forbidden")
    # Signing out ends the session: the inbox asks to sign in again.
    page.goto("/console/inbox")
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/console/login")
    page.goto("/console/inbox")
    assert "/console/login" in page.url
    assert errors == [], errors
    context.close()
