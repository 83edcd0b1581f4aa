"""A review task's form as HTML inputs, and the inputs back as data. Pure: no I/O.

The task's ``form`` is the JSON Schema pydantic made of the workflow's model. Each
top-level property becomes one input: text, number (typed as text so that a wrong value
reaches the server and is answered with the field's error, rather than being silently
dropped by the browser), checkbox, a select for an enum, or a JSON text area for nested
objects and lists. What comes back is converted only as far as the schema says; checking
it is the library's job (``app.reviews.decide`` validates an edit against the schema and
names the failing fields), so the console and the API refuse exactly the same edits.

>>> fields = form_fields(task.form, task.proposal or task.payload)   # doctest: +SKIP
>>> data, problems = form_data(task.form, {"f.total": "99.50"})       # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Inputs are named ``f.<property>`` so that no property can clash with the page's own
#: fields (csrf, outcome, comment).
PREFIX = "f."


@dataclass(frozen=True)
class FormField:
    """One input of a review form."""

    name: str  # the property's name
    label: str
    kind: str  # text | number | integer | checkbox | select | json
    required: bool
    value: str  # as the input shows it
    options: tuple[str, ...] = ()
    description: str | None = None

    @property
    def input_name(self) -> str:
        return PREFIX + self.name

    @property
    def input_id(self) -> str:
        return "field-" + "".join(c if c.isalnum() else "-" for c in self.name)


def form_fields(
    schema: Mapping[str, Any] | None, values: Any, submitted: Mapping[str, str] | None = None
) -> list[FormField]:
    """The inputs of ``schema``, showing ``submitted`` (a re-shown form keeps what the
    reviewer typed) or else ``values`` (the proposal, or the payload)."""
    if not schema or not isinstance(schema.get("properties"), Mapping):
        return []
    required = set(schema.get("required", ()))
    current = values if isinstance(values, Mapping) else {}
    fields = []
    for name, prop in schema["properties"].items():
        kind, options = _kind(_resolve(schema, prop))
        if submitted is not None:
            shown = submitted.get(PREFIX + name, "")
        else:
            shown = _shown(kind, current.get(name, prop.get("default")))
        fields.append(
            FormField(
                name=str(name),
                label=str(prop.get("title") or name),
                kind=kind,
                required=name in required,
                value=shown,
                options=options,
                description=prop.get("description"),
            )
        )
    return fields


def form_data(
    schema: Mapping[str, Any] | None, submitted: Mapping[str, str]
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The data an edit submits, and the problems found converting it
    (``[{"path", "message"}]``, as the library reports invalid fields)."""
    data: dict[str, Any] = {}
    problems: list[dict[str, str]] = []
    for field in form_fields(schema, {}, submitted):
        raw = submitted.get(field.input_name, "")
        if field.kind == "checkbox":
            data[field.name] = raw in ("on", "true", "1")
            continue
        if raw.strip() == "" and not field.required:
            continue  # left empty: the model's default applies
        try:
            data[field.name] = _parsed(field.kind, raw, _allows_string(schema, field.name))
        except ValueError as exc:
            problems.append({"path": field.name, "message": str(exc)})
    return data, problems


def _resolve(schema: Mapping[str, Any], prop: Mapping[str, Any]) -> Mapping[str, Any]:
    """A property with a local ``$ref`` followed and an optional (``X | None``) unwrapped."""
    options = prop.get("anyOf")
    if isinstance(options, list):
        real = [o for o in options if o.get("type") != "null"]
        if len(real) == 1:
            prop = {**prop, **real[0]}
            prop.pop("anyOf", None)
    ref = prop.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
        return {**target, **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def _types(prop: Mapping[str, Any]) -> set[str]:
    found = prop.get("type")
    types = set(found) if isinstance(found, list) else {found} if found else set()
    for option in prop.get("anyOf", ()):
        types |= _types(option)
    return types - {"null"}


def _kind(prop: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    if isinstance(prop.get("enum"), list) and all(isinstance(e, str) for e in prop["enum"]):
        return "select", tuple(prop["enum"])
    types = _types(prop)
    if types & {"object", "array"} or not types:
        return "json", ()
    if types == {"boolean"}:
        return "checkbox", ()
    if "number" in types:
        return "number", ()  # a Decimal is number-or-string: still a number to type
    if types == {"integer"}:
        return "integer", ()
    return "text", ()


def _allows_string(schema: Mapping[str, Any] | None, name: str) -> bool:
    prop = (schema or {}).get("properties", {}).get(name, {})
    return "string" in _types(_resolve(schema or {}, prop))


def _shown(kind: str, value: Any) -> str:
    if value is None:
        return ""
    if kind == "json":
        return json.dumps(value, indent=2, ensure_ascii=False)
    if kind == "checkbox":
        return "on" if value else ""
    return str(value)


def _parsed(kind: str, raw: str, allows_string: bool) -> Any:
    text = raw.strip()
    if kind == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc.msg} at character {exc.pos})") from None
    if kind in ("number", "integer") and not allows_string:
        # Unconvertible text is passed on as it is: the schema check names the field.
        try:
            return int(text) if kind == "integer" or text.lstrip("+-").isdigit() else float(text)
        except ValueError:
            return raw
    return text if kind in ("number", "integer") else raw
