"""Webhook notifications of review events, delivered durably by the engine itself.

``app.notify_reviews(url, secret=...)`` POSTs a signed JSON event to ``url`` when a
review task is created, escalated, marked overdue, expired or decided, so users wire
Slack, email or a pager without code in the engine.

How it is built: the ``on_review`` hook (which fires in the process that made the
change) starts a run of the internal workflow ``surestep.notify_review``, whose one step
POSTs the event. So a delivery survives restarts and is retried with backoff like any
step, and one that never succeeds lands in the dead-letter queue, where ``surestep
retry`` redrives it. The run id is derived from (notifier, task, event, escalation
level): the same event never starts two deliveries.

What is stored is the event as the receiver gets it (sensitive payload fields masked)
and the notifier's *name*. The URL (a Slack webhook URL is itself a credential) and the
secret live only in the App's process: every process that runs a worker, or decides
tasks, calls ``notify_reviews`` with them when it builds its App.

>>> app.notify_reviews("https://hooks.example.com/surestep", secret=os.environ["HOOK_KEY"])
... # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from surestep.errors import ConfigurationError, IdempotencyConflictError, WebhookDeliveryError
from surestep.names import check_name
from surestep.retry import Retry
from surestep.review.records import ReviewTask
from surestep.review.rows import masked

if TYPE_CHECKING:
    from surestep.clock import Clock


class NotifierHost(Protocol):
    """What the notifiers need of their App (a :class:`surestep.App` is one)."""

    clock: Clock

    def start(self, workflow: Any, /, *args: Any, **kwargs: Any) -> object: ...


@dataclass(frozen=True)
class Declare:
    """How the notifiers declare their delivery workflow on an App: its ``step``,
    ``workflow`` and ``hook`` decorators."""

    step: Callable[..., Any]
    workflow: Callable[..., Any]
    hook: Callable[..., Any]


log = logging.getLogger("surestep.review.notify")

EVENTS = ("created", "escalated", "overdue", "expired", "decided")
WORKFLOW = "surestep.notify_review"
STEP = "surestep.notify_review.post"

SIGNATURE_HEADER = "X-Surestep-Signature"
TIMESTAMP_HEADER = "X-Surestep-Timestamp"
EVENT_ID_HEADER = "X-Surestep-Event-Id"

#: 8 attempts, waiting about 2 s, 4 s, 8 s ... 128 s between them (~4 minutes in all).
DELIVERY_RETRY = Retry(max_attempts=8, initial_delay=2.0, backoff=2.0, max_delay=600.0)
TIMEOUT = 10.0


# -- signing: what the sender does and what a receiver checks -----------------------------


def sign(secret: str | bytes, timestamp: str, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 over ``timestamp + "." + body``.

    The timestamp is inside the signed material, so a receiver that refuses old
    timestamps refuses a replayed request too.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str | bytes,
    body: bytes,
    headers: Mapping[str, str],
    *,
    now: float,
    tolerance: float = 300.0,
) -> bool:
    """For receivers: whether a request carries a valid signature made within
    ``tolerance`` seconds of ``now`` (epoch seconds).

    >>> ok = verify_signature(KEY, request.body, request.headers, now=time.time())
    ... # doctest: +SKIP
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    signature = lowered.get(SIGNATURE_HEADER.lower(), "")
    try:
        fresh = abs(now - float(timestamp)) <= tolerance
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


# -- what is sent ------------------------------------------------------------------------


def event_id(notifier: str, event: str, task: ReviewTask) -> str:
    """The idempotency key of one event for one notifier: also the delivery's run id."""
    return f"surestep-notify:{notifier}:{task.id}:{event}:{task.level}"


def event_body(notifier: str, event: str, task: ReviewTask) -> dict[str, Any]:
    """The JSON a webhook receives; fields marked sensitive (``redact=``) are masked."""
    hide = task.sensitive
    return {
        "id": event_id(notifier, event, task),
        "event": event,
        "occurred_at": task.updated_at,
        "task": {
            "id": task.id,
            "run_id": task.run_id,
            "kind": task.kind,
            "workflow": task.workflow,
            "state": task.state,
            "assignee": task.assignee,
            "groups": list(task.groups),
            "level": task.level,
            "priority": task.priority,
            "due_at": task.due_at,
            "created_at": task.created_at,
            "instructions": task.instructions,
            "payload": masked(task.payload, hide),
            "proposal": masked(task.proposal, hide),
            "confidence": task.confidence,
            "outcome": task.outcome,
            "data": masked(task.data, hide),
            "reviewer": task.reviewer,
            "comment": task.comment,
            "decided_at": task.decided_at,
        },
    }


# -- the notifiers of one App --------------------------------------------------------------


@dataclass(frozen=True)
class Webhook:
    """One notifier: where events go and with which key. Never stored."""

    name: str
    url: str
    secret: bytes
    events: frozenset[str]
    timeout: float

    def __repr__(self) -> str:  # the URL and the secret stay out of logs and tracebacks
        return f"Webhook({self.name!r}, events={sorted(self.events)})"


class Webhooks:
    """The webhook notifiers of one App: one hook and one delivery workflow for all."""

    def __init__(self, app: NotifierHost, declare: Declare) -> None:
        self._app = app
        self._hooks: dict[str, Webhook] = {}
        deliver = declare.step(STEP, retry=DELIVERY_RETRY, on_exhausted="dead_letter")(self._post)

        def notify_review(notifier: str, event: dict[str, Any]) -> int:
            return int(deliver(notifier, event))

        declare.workflow(WORKFLOW)(notify_review)
        declare.hook("on_review")(self._on_review)

    def add(
        self,
        url: str,
        *,
        secret: str | bytes,
        events: Sequence[str],
        name: str,
        timeout: float,
    ) -> Webhook:
        check_name("notifier name", name)
        if name in self._hooks:
            raise ConfigurationError(
                f"a review notifier named {name!r} exists on this App; give the other one "
                f"another name= (the name is part of each delivery's run id)"
            )
        if not isinstance(timeout, int | float) or not 0 < timeout <= 60:
            raise ConfigurationError(f"timeout must be from 0 to 60 seconds, got {timeout!r}")
        hook = Webhook(name, _checked_url(url), _checked_secret(secret), _events(events), timeout)
        self._hooks[name] = hook
        return hook

    def _on_review(self, event: str, task: ReviewTask) -> None:
        for hook in self._hooks.values():
            if event not in hook.events:
                continue
            body = event_body(hook.name, event, task)
            try:
                self._app.start(WORKFLOW, hook.name, body, run_id=body["id"])
            except IdempotencyConflictError:
                # Started already for this event (its task changed since): one delivery.
                log.info("review event %s is being delivered already", body["id"])

    def _post(self, notifier: str, event: dict[str, Any]) -> int:
        """The delivery step: POST the event, signed at this attempt's time."""
        hook = self._hooks.get(notifier)
        if hook is None:
            raise ConfigurationError(
                f"no review notifier named {notifier!r} in this process: call "
                f"app.notify_reviews(url, secret=..., name={notifier!r}) where the App of "
                f"this worker is built"
            )
        body = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
        timestamp = str(int(self._app.clock.now()))
        request = urllib.request.Request(  # noqa: S310 -- the scheme is checked: http(s)
            hook.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "surestep-review-notifier",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(hook.secret, timestamp, body),
                EVENT_ID_HEADER: str(event["id"]),
            },
        )
        # The errors name the notifier, not the URL: the URL may carry a token.
        try:
            with _NO_REDIRECTS.open(request, timeout=hook.timeout) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            raise WebhookDeliveryError(
                f"review notifier {notifier!r}: the webhook answered HTTP {exc.code}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WebhookDeliveryError(
                f"review notifier {notifier!r}: no answer from the webhook ({reason})"
            ) from None


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would turn the POST into a GET without its body (and a 200 would count
    as delivered): answer it as the failure it is, to be retried and seen."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)


def _checked_url(url: str) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            "notify_reviews(url=...) takes an http:// or https:// URL of the webhook"
        )
    return url


def _checked_secret(secret: str | bytes) -> bytes:
    if not isinstance(secret, str | bytes) or not secret:
        raise ConfigurationError(
            "notify_reviews(secret=...) takes the non-empty key the receiver verifies "
            "signatures with (a str or bytes; read it from the environment, not the code)"
        )
    return secret.encode() if isinstance(secret, str) else secret


def _events(events: Sequence[str]) -> frozenset[str]:
    if isinstance(events, str) or not events or set(events) - set(EVENTS):
        raise ConfigurationError(
            f"events= takes a list of some of {', '.join(EVENTS)}, got {events!r}"
        )
    return frozenset(events)
