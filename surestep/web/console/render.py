"""Rendering console pages: one Jinja2 environment, autoescaping every template.

Templates get the request's user, its CSRF token and a few display filters; anything
they show was computed by the library before (no query, no decision in a template).
"""

from __future__ import annotations

import functools
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from surestep.web.console.session import csrf_of

TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
#: htmx 2.0.4, vendored unmodified from the npm registry's tarball
#: https://registry.npmjs.org/htmx.org/-/htmx.org-2.0.4.tgz
#: (tarball sha256 a34988d1b9f005a458d593aa8d7486537cb878b8ac3b82703db1268983123ecc),
#: its dist/htmx.min.js: sha256 e209dda5c8235479f3166defc7750e1dbcd5a5c1808b7792fc2e6733768fb447
#: (tests/test_console_static.py checks it). Zero-Clause BSD licence: static/htmx-LICENSE.
HTMX = "htmx-2.0.4.min.js"
HTMX_SHA256 = "e209dda5c8235479f3166defc7750e1dbcd5a5c1808b7792fc2e6733768fb447"


@functools.cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,  # every template, whatever its file name
        undefined=StrictUndefined,  # a misspelt name fails the test, not the reviewer
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, seconds=seconds, pretty=pretty, usd=usd, percent=percent)
    env.globals["htmx"] = HTMX
    return env


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """The page ``template`` for ``request`` with ``context``."""
    user = getattr(request.state, "console_user", None)
    html = (
        environment()
        .get_template(template)
        .render(user=user, csrf=csrf_of(request), path=request.url.path, **context)
    )
    return HTMLResponse(html, status)


def when(at: float | None) -> str:
    """Epoch seconds as a UTC time, e.g. ``2024-05-01 12:03:04Z``."""
    if at is None:
        return "—"
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def seconds(value: float | None) -> str:
    """A duration, short: ``850 ms``, ``12.3 s``, ``4 min``, ``2.5 h``."""
    if value is None or math.isnan(value):
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=False)


def usd(value: float | None) -> str:
    if value is None:
        return "—"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f}%"
