"""Decoding what the database holds, where a hand edit, a downgrade or a bug may have
left something surestep cannot read.

Every decode names the record it reads (table, column, run, position), so that a bad
row becomes one typed :class:`CorruptRecordError` about one run, never a bare
``ValueError`` or ``JSONDecodeError`` that stops a worker or a listing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from surestep.errors import CorruptRecordError
from surestep.states import State

_STATES = ", ".join(s.value for s in State)


@dataclass(frozen=True, slots=True)
class Where:
    """The record a value comes from."""

    table: str
    run_id: str
    position: int | None = None

    def corrupt(self, column: str, detail: str) -> CorruptRecordError:
        return CorruptRecordError(self.table, column, self.run_id, self.position, detail)


def state(raw: Any, where: Where, column: str = "state") -> State:
    """``raw`` as a State, or :class:`CorruptRecordError`."""
    try:
        return State(raw)
    except ValueError:
        raise where.corrupt(column, f"{raw!r} is not a state surestep knows ({_STATES})") from None


def optional_state(raw: Any, where: Where, column: str) -> State | None:
    return None if raw is None else state(raw, where, column)


def json_value(text: str | None, where: Where, column: str) -> Any:
    """Stored JSON text decoded (None stays None), or :class:`CorruptRecordError`."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise where.corrupt(column, f"not valid JSON ({exc}): {_excerpt(text)}") from None


def _excerpt(text: Any, limit: int = 60) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
