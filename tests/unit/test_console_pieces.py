"""The console's pure pieces: forms from JSON Schema and back, Markdown sanitising,
where a sign-in may lead, chart bars, and the vendored htmx file."""

from __future__ import annotations

import hashlib
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, TypeAdapter

from surestep.review.request import json_schema
from surestep.web.console.forms import form_data, form_fields
from surestep.web.console.markdown import instructions_html
from surestep.web.console.overview import bars
from surestep.web.console.render import HTMX, HTMX_SHA256
from surestep.web.console.session import safe_next

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "surestep" / "web"


class Bank(BaseModel):
    iban: str


class Invoice(BaseModel):
    vendor: str
    total: Decimal
    paid: bool = False
    count: int | None = None
    lines: list[str] = []
    bank: Bank | None = None
    currency: Literal["EUR", "USD"] = "EUR"


SCHEMA = json_schema(TypeAdapter(Invoice))


def test_each_property_becomes_a_typed_labelled_input_prefilled() -> None:
    values = {"vendor": "ACME", "total": "12.50", "paid": True, "lines": ["a"]}
    fields = {f.name: f for f in form_fields(SCHEMA, values)}
    assert [(n, f.kind, f.required) for n, f in fields.items()] == [
        ("vendor", "text", True),
        ("total", "number", True),
        ("paid", "checkbox", False),
        ("count", "integer", False),
        ("lines", "json", False),
        ("bank", "json", False),
        ("currency", "select", False),
    ]
    assert fields["total"].value == "12.50" and fields["paid"].value == "on"
    assert fields["lines"].value == '[\n  "a"\n]'
    assert fields["currency"].options == ("EUR", "USD") and fields["currency"].value == "EUR"
    assert fields["vendor"].label == "Vendor" and fields["vendor"].input_name == "f.vendor"
    assert form_fields(None, values) == [] and form_fields({"type": "string"}, "x") == []


def test_submitted_values_convert_as_far_as_the_schema_says() -> None:
    submitted = {
        "f.vendor": "ACME",
        "f.total": "12.50",  # Decimal: number or string, kept exact as text
        "f.paid": "on",
        "f.count": "7",
        "f.lines": '["x", "y"]',
        "f.bank": "",  # optional and empty: left out, its default applies
        "f.currency": "USD",
    }
    data, problems = form_data(SCHEMA, submitted)
    assert problems == []
    assert data == {
        "vendor": "ACME",
        "total": "12.50",
        "paid": True,
        "count": 7,
        "lines": ["x", "y"],
        "currency": "USD",
    }
    TypeAdapter(Invoice).validate_python(data)  # what the library would accept


def test_what_cannot_be_converted_is_passed_on_or_named() -> None:
    data, problems = form_data(SCHEMA, {"f.vendor": "A", "f.total": "12,5", "f.count": "x"})
    assert data["total"] == "12,5" and data["count"] == "x"  # the schema check names them
    assert data["paid"] is False  # an unticked box is sent as nothing
    _, problems = form_data(SCHEMA, {"f.vendor": "A", "f.total": "1", "f.lines": "[1,"})
    assert [p["path"] for p in problems] == ["lines"]
    assert "not valid JSON" in problems[0]["message"]


def test_markdown_is_rendered_and_anything_active_removed() -> None:
    html = instructions_html(
        "# Title\n\n<script>alert(1)</script> <img src=x onerror=alert(1)> "
        "[a](javascript:alert(1)) [b](https://example.com) <a href='https://x' onclick=y>c</a>"
    )
    assert "<h1>Title</h1>" in html
    assert "<script" not in html and "<img" not in html and "<a href='https://x'" not in html
    assert 'href="javascript' not in html
    assert '<a href="https://example.com" rel="noopener noreferrer nofollow">b</a>' in html
    assert instructions_html(None) == "" and instructions_html("") == ""


def test_sign_in_leads_only_to_a_console_page() -> None:
    assert safe_next("/console/tasks/3?x=1") == "/console/tasks/3?x=1"
    for bad in (None, "", "/api/me", "//evil.example", "https://evil.example", "/console\\x",
                "/console/\nx", "javascript:alert(1)"):  # fmt: skip
        assert safe_next(bad) == "/console/", bad


def test_bars_are_shares_of_the_longest() -> None:
    drawn = bars({"pending": 5, "success": 20, "failed": 0})
    assert [(b.label, b.share) for b in drawn] == [
        ("success", 1.0),
        ("pending", 0.25),
        ("failed", 0.0),
    ]
    assert bars({}) == []


def test_htmx_is_the_pinned_release_and_the_assets_ship_in_the_wheel() -> None:
    vendored = (WEB / "static" / HTMX).read_bytes()
    assert hashlib.sha256(vendored).hexdigest() == HTMX_SHA256
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = data["package-data"]["surestep"]
    shipped = {p for g in globs for p in (ROOT / "surestep").glob(g)}
    for asset in [*WEB.joinpath("templates").iterdir(), *WEB.joinpath("static").iterdir()]:
        assert asset in shipped, asset
