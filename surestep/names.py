"""What a run id, a workflow or step name, a version or an event name may be.

Checked up front, where the user passes it, so that a mistake gets a clear error at
once instead of a database error later (PostgreSQL refuses an index entry over ~2.7 kB,
and cannot store NUL in text at all).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from surestep.errors import ConfigurationError

#: The longest id or name surestep accepts, in characters (at most 1,020 bytes of
#: UTF-8: well inside any index). Child runs append ``:POSITION`` to their parent's id.
MAX_NAME_LENGTH = 255


def check_name(kind: str, value: object) -> str:
    """``value`` if it is a usable ``kind`` (e.g. "run_id"); else ConfigurationError.

    >>> check_name("run_id", "order-1")
    'order-1'
    """
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError(f"{kind} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_LENGTH:
        raise ConfigurationError(
            f"{kind} is {len(value):,} characters long ({value[:40]!r}...); the most "
            f"surestep accepts is {MAX_NAME_LENGTH}. Use a shorter {kind}, e.g. a hash of "
            f"the long key"
        )
    if "\x00" in value:
        raise ConfigurationError(
            f"{kind} {value[:40]!r} contains a NUL character, which databases cannot "
            f"store; remove it"
        )
    return value


def default_name(fn: Callable[..., Any], kind: str) -> str:
    """``Class.method`` or ``function``; the ``outer.<locals>.`` of nested ones dropped.

    A step's name is recorded in each run's history, so it must not change between
    deploys: a lambda (``<lambda>``, the same for all of them) or a callable without a
    name gets an error rather than a made-up name (a line number would change with any
    edit above it).
    """
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(qualname, str) or qualname.endswith("<lambda>"):
        what = "a lambda" if isinstance(qualname, str) else f"{fn!r}"
        raise ConfigurationError(
            f"{what} has no name of its own to record in a run's history; give the "
            f'{kind} one: app.{kind}(name="...")(fn), or declare it with def'
        )
    name = qualname.rsplit("<locals>.", 1)[-1]
    return name.rsplit(".", 1)[-1] if kind == "workflow" else name
