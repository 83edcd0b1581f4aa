"""Signing in and out: a token typed once, exchanged for a session cookie.

The cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page
sends it) and Secure when the console is served over https. The token is not kept by
the browser; the session it opens ends after ``app.sessions.seconds``, on sign-out, or
when the user's token is rotated or disabled.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from surestep.auth.sessions import csrf_token
from surestep.web.auth import SurestepApp
from surestep.web.console.render import page
from surestep.web.console.session import (
    COOKIE,
    LOGIN_COOKIE,
    Form,
    Posted,
    Viewer,
    read_form,
    safe_next,
)

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/login")
def login_page(request: Request, next: str = "/console/") -> Response:
    """The sign-in form, with a fresh login CSRF value in its own cookie."""
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    response = page(
        request, "login.html", next=safe_next(next), login_csrf=csrf_token(nonce), error=None
    )
    _set_cookie(request, response, LOGIN_COOKIE, nonce, 3600)
    return response


async def login_form(request: Request) -> Form:
    return await read_form(request)


@router.post("/login")
def login(
    request: Request, app: SurestepApp, form: Annotated[Form, Depends(login_form)]
) -> Response:
    """Exchange the token for a session; back to the form (401) if it signs no one in."""
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    sent = form.get("csrf", "")
    target = safe_next(form.get("next"))
    if not nonce or not hmac.compare_digest(sent, csrf_token(nonce)):
        return _again(request, target, "The form expired: sign in again.", 403)
    opened = app.sessions.open(form.get("token", "").strip())
    if opened is None:
        return _again(request, target, "That token signs no one in: check it and retry.", 401)
    secret, _ = opened
    response = RedirectResponse(target, 303)
    _set_cookie(request, response, COOKIE, secret, int(app.sessions.seconds))
    response.delete_cookie(LOGIN_COOKIE, path="/console/")
    return response


@router.post("/logout")
def logout(request: Request, app: SurestepApp, user: Viewer, form: Posted) -> Response:
    """End the session (its secret stops working at once) and go to the login page."""
    app.sessions.close(request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/console/login", 303)
    response.delete_cookie(COOKIE, path="/console/")
    return response


def _again(request: Request, target: str, error: str, status: int) -> Response:
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    response = page(
        request, "login.html", status, next=target, login_csrf=csrf_token(nonce), error=error
    )
    _set_cookie(request, response, LOGIN_COOKIE, nonce, 3600)
    return response


def _set_cookie(request: Request, response: Response, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        path="/console/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
