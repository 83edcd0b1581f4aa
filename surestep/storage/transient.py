"""Retrying storage operations through transient failures (a restarting server)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from surestep.errors import StorageError

log = logging.getLogger("surestep.storage")

P = ParamSpec("P")
R = TypeVar("R")


class _HasTimeout(Protocol):
    reconnect_timeout: float


S = TypeVar("S", bound=_HasTimeout)


def retry_transient(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """Retry ``method`` with exponential backoff while it fails with a transient
    ``StorageError``, for up to the store's ``reconnect_timeout`` seconds.

    Only operations that are safe to repeat are decorated: their writes are conditional
    (lease token, expected state) or idempotent (``ON CONFLICT``), so a commit whose
    acknowledgement was lost with the connection is not applied twice. (``claim`` is
    not: the worker recovers from a lost claim acknowledgement itself.)
    """

    @functools.wraps(method)
    def retrying(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        deadline = time.monotonic() + self.reconnect_timeout
        pause = 0.05
        while True:
            try:
                return method(self, *args, **kwargs)
            except StorageError as exc:
                if not exc.transient or time.monotonic() + pause > deadline:
                    raise
                log.warning("%s; retrying in %.2fs", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)

    return retrying
