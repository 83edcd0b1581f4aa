"""What the chaos model says: deterministic answers, and the faulty variants of them.

Every function here takes a seeded :class:`random.Random` and returns text or JSON, so
the same seed and request give the same answer on every machine and run (only a reply's
``created`` timestamp is the clock's). The HTTP side (:mod:`surestep.llm.chaos`) decides
*which* answer a request gets.

A JSON answer is built from the request's JSON Schema (the shape pydantic's
``model_json_schema()`` produces): objects (required and some optional properties),
strings made of the prompt's words (or dates, emails, URIs, UUIDs by ``format``; length
bounds kept), integers and numbers within their bounds, booleans, enums and consts,
arrays (tuples by ``prefixItems``, sets by ``uniqueItems``), ``$ref`` into ``$defs``,
``anyOf``/``oneOf`` (nullable fields, unions, pydantic's ``Decimal``: a number, or a
string that is one) and ``allOf``. A ``pattern`` is met where the prompt's words or a
number fit it (``Decimal``'s do); other patterns are not.
A number named ``confidence`` gets a value in the answer's confidence range: high on clean
answers, low on the low-confidence fault (a percent when the field is an integer).
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from dataclasses import dataclass
from typing import Any

import jsonschema

#: The confidence a clean answer reports, and the one the low-confidence fault reports.
HIGH_CONFIDENCE = (0.85, 0.99)
LOW_CONFIDENCE = (0.2, 0.6)

_FALLBACK_WORDS = ("alpha", "ledger", "invoice", "quarter", "summary", "vendor", "report")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'-]{2,}")
_TOKEN = re.compile(r"\s*\S+")
_MAX_DEPTH = 6  # a recursive $ref (a tree of nodes) stops growing here


def prompt_words(messages: list[dict[str, Any]]) -> list[str]:
    """The words of the messages' text, which the answers' strings are made of."""
    words: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):  # the multi-part shape: [{"type": "text", ...}]
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        words.extend(_WORD.findall(str(content or "")))
    return words or list(_FALLBACK_WORDS)


def count_tokens(text: str) -> int:
    """A stand-in for a tokenizer: one token per run of non-space characters."""
    return len(_TOKEN.findall(text))


def split_tokens(text: str) -> list[str]:
    """The text as the tokens :func:`count_tokens` counts; joined, they give the text back
    (less any whitespace at its end)."""
    return _TOKEN.findall(text)


def text_answer(rng: random.Random, messages: list[dict[str, Any]]) -> str:
    """A plain-text reply: a one-sentence "summary", some of the prompt's words in order."""
    words = list(dict.fromkeys(prompt_words(messages)))  # distinct, in the prompt's order
    keep = sorted(rng.sample(range(len(words)), min(len(words), rng.randint(5, 12))))
    return f"Summary: {' '.join(words[i] for i in keep)}."


@dataclass
class _Draft:
    """What one JSON answer is built with, and what building it saw."""

    rng: random.Random
    words: list[str]
    defs: dict[str, Any]
    confidence: tuple[float, float]
    saw_confidence: bool = False


def json_answer(
    rng: random.Random,
    messages: list[dict[str, Any]],
    schema: dict[str, Any] | None,
    confidence: tuple[float, float] = HIGH_CONFIDENCE,
) -> tuple[Any, bool]:
    """A value satisfying ``schema`` (None: any JSON object), and whether it has a
    ``confidence`` field (so the caller knows a low confidence would be visible)."""
    if not schema:
        schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    draft = _Draft(rng, prompt_words(messages), defs, confidence)
    return _value(draft, schema, "", 0), draft.saw_confidence


def _value(draft: _Draft, schema: dict[str, Any], name: str, depth: int) -> Any:
    if depth > 8 * _MAX_DEPTH:
        raise ValueError(
            "the chaos model cannot answer this schema: it requires an endless value "
            "(a required field that recurses without a null or an empty list)"
        )
    schema = _resolved(draft, schema)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return draft.rng.choice(schema["enum"])
    branches = schema.get("anyOf") or schema.get("oneOf")
    if branches:
        return _value(draft, _branch(draft, branches, depth), name, depth)
    if "allOf" in schema:
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            merged = _merged(merged, _resolved(draft, part))
        return _value(draft, merged, name, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or ["null"]
        kind = kinds[0]
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    return _typed_value(draft, schema, str(kind), name, depth)


def _typed_value(draft: _Draft, schema: dict[str, Any], kind: str, name: str, depth: int) -> Any:
    if kind == "object":
        return _object(draft, schema, depth)
    if kind == "array":
        return _array(draft, schema, name, depth)
    if kind in ("number", "integer"):
        return _number(draft, schema, kind == "integer", name)
    if kind == "boolean":
        return draft.rng.random() < 0.5
    if kind == "null":
        return None
    return _string(draft, schema)


def _resolved(draft: _Draft, schema: dict[str, Any]) -> dict[str, Any]:
    """The schema a ``$ref`` points to (siblings of the ``$ref`` win), or the schema."""
    seen = 0
    while "$ref" in schema and seen < 32:
        ref = str(schema["$ref"])
        target = draft.defs.get(ref.rsplit("/", 1)[-1])
        if target is None:
            raise ValueError(f"the chaos model cannot resolve $ref {ref!r}; use #/$defs/...")
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        seen += 1
    return schema


def _branch(draft: _Draft, branches: list[dict[str, Any]], depth: int) -> dict[str, Any]:
    """One branch of an anyOf: usually not null (a nullable field mostly holds a value);
    null once the answer is deep, so recursive schemas end."""
    values = [b for b in branches if _resolved(draft, b).get("type") != "null"]
    nulls = [b for b in branches if b not in values]
    if nulls and (depth >= _MAX_DEPTH or not values or draft.rng.random() < 0.15):
        return nulls[0]
    chosen = _resolved(draft, draft.rng.choice(values or branches))
    numeric = any(_resolved(draft, b).get("type") in ("number", "integer") for b in values)
    if numeric and chosen.get("type") == "string" and _is_plain(chosen):
        # number-or-string is how pydantic (2.14 on) writes a Decimal, with no pattern
        # on the string: a numeric string is what that string means.
        return {**chosen, "pattern": r"^\d+\.\d+$"}
    return chosen


def _is_plain(schema: dict[str, Any]) -> bool:
    return not any(k in schema for k in ("pattern", "format", "enum", "const"))


def _merged(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    merged = {**left, **right}
    if "properties" in left or "properties" in right:
        merged["properties"] = {**left.get("properties", {}), **right.get("properties", {})}
        merged["required"] = [*left.get("required", []), *right.get("required", [])]
    return merged


def _object(draft: _Draft, schema: dict[str, Any], depth: int) -> dict[str, Any]:
    required = set(schema.get("required", []))
    result: dict[str, Any] = {}
    for key, prop in schema.get("properties", {}).items():
        # Optional fields come and go (a real model leaves some out); deep in a
        # recursive schema only the required ones are kept, so the answer ends.
        if key in required or (depth < _MAX_DEPTH and draft.rng.random() < 0.7):
            result[key] = _value(draft, prop, key, depth + 1)
    return result


def _array(draft: _Draft, schema: dict[str, Any], name: str, depth: int) -> list[Any]:
    fixed = schema.get("prefixItems") or schema.get("items")
    if isinstance(fixed, list):  # a tuple: one schema per position
        return [_value(draft, item, name, depth + 1) for item in fixed]
    low = int(schema.get("minItems", 0 if depth >= _MAX_DEPTH else 1))
    high = low if depth >= _MAX_DEPTH else max(low, int(schema.get("maxItems", max(low, 3))))
    items = schema.get("items") or {"type": "string"}
    count = draft.rng.randint(low, high)
    result: list[Any] = []
    # uniqueItems (a set): draw until the values differ; a few spares, as words repeat.
    for _ in range(count * 20 if schema.get("uniqueItems") else count):
        value = _value(draft, items, name, depth + 1)
        if not schema.get("uniqueItems") or value not in result:
            result.append(value)
        if len(result) == count:
            break
    return result


def _number(draft: _Draft, schema: dict[str, Any], integer: bool, name: str) -> int | float:
    low, high = _bounds(schema, integer)
    if name == "confidence":
        draft.saw_confidence = True
        # A confidence on a 0..100 scale (an integer, or a maximum above 1) is a percent.
        scale = 100.0 if integer or float(schema.get("maximum", 1)) > 1 else 1.0
        low = max(low, draft.confidence[0] * scale)
        high = max(low, min(high, draft.confidence[1] * scale))
    if integer:
        return draft.rng.randint(math.ceil(low), max(math.ceil(low), math.floor(high)))
    return round(draft.rng.uniform(low, high), 4 if name == "confidence" else 2)


def _bounds(schema: dict[str, Any], integer: bool) -> tuple[float, float]:
    """The closed range a number must lie in; 1000 wide where the schema leaves it open."""
    step = 1.0 if integer else 0.01
    low = float(schema["minimum"]) if "minimum" in schema else None
    high = float(schema["maximum"]) if "maximum" in schema else None
    if "exclusiveMinimum" in schema:
        low = float(schema["exclusiveMinimum"]) + step
    if "exclusiveMaximum" in schema:
        high = float(schema["exclusiveMaximum"]) - step
    if low is None:
        low = 0.0 if high is None or high >= 0 else high - 1000.0
    if high is None:
        high = low + 1000.0
    return low, max(low, high)


def _string(draft: _Draft, schema: dict[str, Any]) -> str:
    rng = draft.rng
    fmt = schema.get("format")
    if fmt == "date-time":
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z"
    if fmt == "date":
        return f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "email":
        return f"{rng.choice(draft.words).lower()}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{rng.choice(draft.words).lower()}"
    if fmt == "uuid":
        return "".join(rng.choice("0123456789abcdef") for _ in range(32))
    text = " ".join(rng.choice(draft.words) for _ in range(rng.randint(1, 3)))
    low, high = int(schema.get("minLength", 0)), schema.get("maxLength")
    while len(text) < low:
        text += " " + rng.choice(draft.words)
    text = text if high is None else text[: int(high)]
    if "pattern" in schema:
        word = rng.choice(draft.words)
        number = f"{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}"
        # The prompt's words, else a number (a Decimal's string), whichever fits.
        tries = (text, word, word.lower(), number, number.split(".")[0])
        text = next((t for t in tries if _matches(str(schema["pattern"]), t)), text)
    return text


def _matches(pattern: str, text: str) -> bool:
    try:
        return re.search(pattern, text) is not None
    except re.error:  # an ECMA-only construct: keep the words
        return False


def drifted(rng: random.Random, value: Any, schema: dict[str, Any] | None) -> Any:
    """``value`` (a valid answer) changed so that it breaks ``schema``: a required field
    missing, or a field of the wrong type. Still valid JSON."""
    if not isinstance(value, dict) or not value:
        return [value]  # an object was asked for; a list is the wrong shape
    schema = schema or {"type": "object"}
    required = [k for k in schema.get("required", []) if k in value]
    candidates: list[dict[str, Any]] = []
    for key in required:
        candidates.append({k: v for k, v in value.items() if k != key})
    for key in value:
        candidates.append({**value, key: _wrong_type(value[key])})
    rng.shuffle(candidates)
    for candidate in candidates:
        if not _valid(candidate, schema):
            return candidate
    return [value]


def _wrong_type(value: Any) -> Any:
    # Chosen so pydantic's lax mode cannot coerce them back: "perhaps" is no bool,
    # "not a number" no int, float or Decimal, an int no str.
    if isinstance(value, bool):
        return "perhaps"
    if isinstance(value, int | float):
        return "not a number"
    if isinstance(value, str):
        return 12345
    if isinstance(value, list):
        return "not a list"
    return "not an object"


def _valid(value: Any, schema: dict[str, Any]) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def broken_json(rng: random.Random, text: str) -> tuple[str, bool]:
    """``text`` (a JSON answer) made unparseable, and whether it was cut short (the
    reply then ends with ``finish_reason="length"``, as a real truncated one does)."""
    variant = rng.randrange(3)
    if variant == 0:
        cut = text[: max(1, len(text) * rng.randint(30, 80) // 100)]
        if not _parses(cut):  # a cut number ("12" of "123") would still parse
            return cut, True
    if variant == 2 and text[-1:] in ("}", "]"):
        return f"{text[:-1]},{text[-1]}", False  # a trailing comma
    return f"Sure! Here is the JSON you asked for:\n```json\n{text}\n```\nAnything else?", False


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def logprobs(rng: random.Random, text: str, low: bool) -> list[dict[str, Any]]:
    """``choices[0].logprobs.content`` for ``text``, as the OpenAI SDK parses it: near 0
    (a sure model) normally, well below it (an unsure one) when ``low``."""
    lo, hi = (0.7, 2.5) if low else (0.0001, 0.05)
    return [
        {
            "token": token,
            "logprob": -round(rng.uniform(lo, hi), 6),
            "bytes": list(token.encode("utf-8")),
            "top_logprobs": [],
        }
        for token in split_tokens(text)
    ]


def dumps(value: Any) -> str:
    """The JSON text of an answer, compact the way models write it."""
    return json.dumps(value, ensure_ascii=False)


@dataclass
class Completion:
    """A 200 answer's body, and the fault it carries (None: a clean answer)."""

    body: dict[str, Any]
    fault: str | None
    note: str  # for the fault's printed line


def completion(
    request: dict[str, Any], fault: str | None, rng: random.Random, fault_rng: random.Random
) -> Completion:
    """The chat-completion answer to ``request``: clean, or carrying ``fault`` if it is a
    content fault. ``rng`` is the answer's (keyed by seed, messages and model) and
    ``fault_rng`` the fault's (which variant of broken JSON, which field drifts)."""
    model, messages = str(request["model"]), request["messages"]
    text, finish, fault, note = _content(request, fault, rng, fault_rng)
    max_tokens = request.get("max_tokens") or request.get("max_completion_tokens")
    if isinstance(max_tokens, int) and 0 < max_tokens < count_tokens(text):
        text, finish = "".join(split_tokens(text)[:max_tokens]), "length"
    prompt_text = " ".join(str(m.get("content", "")) for m in messages)
    completion_tokens = count_tokens(text)
    prompt_tokens = count_tokens(prompt_text) + 3 * len(messages)  # + each message's role
    choice: dict[str, Any] = {
        "index": 0,
        "message": {"role": "assistant", "content": text, "refusal": None},
        "finish_reason": finish,
        "logprobs": None,
    }
    if request.get("logprobs"):
        low = fault == "low_confidence"
        choice["logprobs"] = {"content": logprobs(rng, text, low)}
    body = {
        "id": f"chatcmpl-chaos-{fault_rng.getrandbits(48):012x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "surestep-chaos",
    }
    return Completion(body, fault, note or f"finish={finish}")


def _content(
    request: dict[str, Any], fault: str | None, rng: random.Random, fault_rng: random.Random
) -> tuple[str, str, str | None, str]:
    """The answer's text, finish reason, the fault it really carries, and a note.

    A content fault the request gives no way to see (broken JSON or drift in a free-text
    answer; a low confidence with neither a confidence field nor logprobs) is not
    injected: the answer is clean, and counted so."""
    messages = request["messages"]
    wants_json, schema = _schema_of(request)
    low = fault == "low_confidence"
    if not wants_json:
        visible = low and bool(request.get("logprobs"))
        return text_answer(rng, messages), "stop", fault if visible else None, ""
    value, has_confidence = json_answer(
        rng, messages, schema, LOW_CONFIDENCE if low else HIGH_CONFIDENCE
    )
    note = ""
    if fault == "schema_drift":
        value, note = _drift_note(value, drifted(fault_rng, value, schema))
    text, finish = dumps(value), "stop"
    if fault == "bad_json":
        text, truncated = broken_json(fault_rng, text)
        finish = "length" if truncated else finish
    if low:
        note = f"confidence={value.get('confidence')}" if isinstance(value, dict) else ""
        fault = fault if has_confidence or request.get("logprobs") else None
    return text, finish, fault, note


def _drift_note(before: Any, after: Any) -> tuple[Any, str]:
    """``after``, and what drifted from ``before``, for the printed line."""
    if not isinstance(after, dict) or not isinstance(before, dict):
        return after, "answered a list"
    missing = [key for key in before if key not in after]
    if missing:
        return after, f"missing {missing[0]}"
    changed = [key for key in before if type(before[key]) is not type(after[key])]
    return after, f"{changed[0]} is now {type(after[changed[0]]).__name__}" if changed else ""


def _schema_of(request: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """Whether the request wants JSON, and the JSON Schema it gave (if any)."""
    response_format = request.get("response_format") or {}
    kind = response_format.get("type")
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return True, schema if isinstance(schema, dict) else None
    return kind == "json_object", None
