"""Who is looking at a console page: the session cookie, the role checks, CSRF.

One dependency per role guards a whole router (``Depends(require("operator"))``), so a
page cannot be added without its check. Every POST reads its form through
:func:`posted`, which refuses a request without the session's CSRF token (a form field
``csrf``, or the ``X-CSRF-Token`` header that console.js adds to htmx requests).
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated
from urllib.parse import parse_qsl, quote

from fastapi import Depends, Request

from surestep.auth import User
from surestep.auth.sessions import csrf_token
from surestep.web.auth import SurestepApp

#: The session cookie; ``__Host-`` would force Secure, which plain-http localhost lacks.
COOKIE = "surestep_session"
#: A random value set by the login page, so that its form carries a CSRF token too.
LOGIN_COOKIE = "surestep_login"
CSRF_HEADER = "x-csrf-token"
#: Console forms are small; a larger body is refused before it is parsed.
MAX_FORM_BYTES = 1_000_000


class LoginRequired(Exception):
    """No valid session: answered with a redirect to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class ConsoleForbidden(Exception):
    """Signed in, but not allowed: answered with a 403 page saying why."""


def viewer(request: Request, app: SurestepApp) -> User:
    """The signed-in user (looked up once per request); LoginRequired otherwise."""
    cached: User | None = getattr(request.state, "console_user", None)
    if cached is not None:
        return cached
    secret = request.cookies.get(COOKIE, "")
    user = app.sessions.user(secret) if secret else None
    if user is None:
        target = request.url.path if request.method == "GET" else "/console/"
        if request.url.query and request.method == "GET":
            target += "?" + request.url.query
        raise LoginRequired(target)
    request.state.console_user = user
    return user


def require(role: str) -> Callable[[Request, User], User]:
    """A dependency: the signed-in user if their role is ``role`` or above; else 403."""

    def check(request: Request, user: Annotated[User, Depends(viewer)]) -> User:
        if not user.at_least(role):
            raise ConsoleForbidden(
                f"this page needs the {role} role (or above); {user.name} is a {user.role}"
            )
        return user

    check.__name__ = f"console_{role}"
    return check


#: The signed-in user of a page that its router's role check already guards.
Viewer = Annotated[User, Depends(viewer)]


class Form(dict[str, str]):
    """A posted form: the last value of each field, and every value (``all``)."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.pairs if key == name]


async def read_form(request: Request) -> Form:
    """The urlencoded body of ``request`` (the console posts nothing else)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ConsoleForbidden("the form is too large")
    text = body.decode("utf-8", "replace")
    return Form(parse_qsl(text, keep_blank_values=True, max_num_fields=10_000))


async def posted(request: Request) -> Form:
    """The form of a POST from a page of this session; ConsoleForbidden without the
    session's CSRF token (a page of another site cannot know it)."""
    form = await read_form(request)
    secret = request.cookies.get(COOKIE, "")
    sent = request.headers.get(CSRF_HEADER) or form.get("csrf", "")
    if not secret or not sent or not hmac.compare_digest(sent, csrf_token(secret)):
        raise ConsoleForbidden(
            "the form's CSRF token is missing or stale: reload the page and submit it again"
        )
    return form


#: A POSTed form whose CSRF token was checked.
Posted = Annotated[Form, Depends(posted)]


def csrf_of(request: Request) -> str:
    """The CSRF token to put in this page's forms (and its meta tag, for htmx)."""
    return csrf_token(request.cookies.get(COOKIE, ""))


def login_url(next_path: str) -> str:
    return "/console/login?next=" + quote(safe_next(next_path), safe="/")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if (
        not target
        or not target.startswith("/console/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 32 for c in target)
    ):
        return "/console/"
    return target
