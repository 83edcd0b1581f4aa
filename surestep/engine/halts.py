"""How a run's execution stops early: the ``Halt`` that unwinds a workflow and the
``Verdict`` that says how the run settles."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

from surestep.states import State


class Halt(BaseException):
    """Unwinds a workflow that must stop now; its ``Verdict`` says how the run settles.

    A BaseException, so that the workflow's own ``except Exception`` cannot swallow it.
    """


@dataclass
class Verdict:
    """How a run settles whatever its workflow function does next."""

    state: State | None  # None: the lease is lost, so this worker writes nothing more
    reason: str
    available_at: float | None = None
    error: dict[str, Any] | None = None
    # "event:NAME" / "child:RUN_ID" / "review:TASK_ID" that end the wait
    waiting_for: tuple[str, ...] = ()

    def outranks(self, other: Verdict) -> bool:
        """A lost lease beats everything, then a storage error, a failure, a dead letter,
        a review, and the earliest wait."""
        return _RANK[self.state] < _RANK[other.state]

    def joined(self, other: Verdict) -> Verdict:
        """Two waits at once (gathered): wake at the earlier time or either's event."""
        times = [t for t in (self.available_at, other.available_at) if t is not None]
        return Verdict(
            self.state,
            self.reason,
            min(times) if times else None,
            waiting_for=tuple(dict.fromkeys(self.waiting_for + other.waiting_for)),
        )


_RANK: dict[State | None, int] = {
    None: 0,
    State.PENDING: 1,
    State.FAILED: 2,
    State.DEAD_LETTER: 3,
    State.NEEDS_REVIEW: 4,
    State.WAITING: 5,
}

#: How long a run handed back after a storage error waits before it is claimed again.
STORAGE_RETRY_SECONDS = 1.0


def error_info(exc: BaseException) -> dict[str, Any]:
    """How an error is stored: its type, message and traceback."""
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    return {
        "type": name,
        "message": _storable(str(exc)),
        "traceback": _storable("".join(traceback.format_exception(exc))),
    }


def _storable(text: str) -> str:
    """``text`` as UTF-8 can hold it: a lone surrogate (a message made from undecodable
    bytes, say) is kept as its escape, ``\\udc80``, instead of failing the write."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")
