"""The W3C ``traceparent`` a run is stored with: checked and formatted without
importing OpenTelemetry, so that starting a run with tracing off costs nothing more.

A traceparent is ``00-<32 hex trace id>-<16 hex parent span id>-<2 hex flags>``
(https://www.w3.org/TR/trace-context/#traceparent-header), lower case; an all-zero
trace or span id is invalid.
"""

from __future__ import annotations

import re

from surestep.errors import ConfigurationError

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def check_traceparent(value: object) -> tuple[int, int, int]:
    """The (trace id, span id, flags) of a W3C traceparent; anything else is a
    :class:`~surestep.errors.ConfigurationError` saying what a valid one looks like."""
    match = _TRACEPARENT.match(value.strip()) if isinstance(value, str) else None
    if match is None or int(match[1], 16) == 0 or int(match[2], 16) == 0:
        raise ConfigurationError(
            f"traceparent={value!r} is not a W3C traceparent; pass the caller's header "
            f"as it came, e.g. '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' "
            f"(version 00, a 32 and a 16 lower-case hex id, not all zeros, and 2 hex flags)"
        )
    return int(match[1], 16), int(match[2], 16), int(match[3], 16)


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """The traceparent of a span, as stored with a run."""
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
