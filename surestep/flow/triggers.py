"""Webhook triggers: a signed POST to ``/api/trigger/<workflow>`` starts a run.

``app.webhook_trigger("ingest", secret_env="INGEST_WEBHOOK_SECRET")`` lets a sender
that holds the secret start runs of ``ingest`` through ``surestep serve --app``. Requests
are signed as Standard Webhooks (standardwebhooks.com) specifies, which Svix, Clerk,
Resend and others send as they are:

* headers ``webhook-id``, ``webhook-timestamp`` (epoch seconds) and ``webhook-signature``
  (``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``; several, space-separated,
  while a secret rotates);
* the secret is ``whsec_<base64 key>``, read from the environment variable named at
  declaration, never stored in the database;
* a timestamp more than 5 minutes away from the server's clock is refused, so a
  captured request cannot be replayed later.

The ``webhook-id`` becomes the run id (``webhook:<workflow>:<id>``): a sender's
redelivery of a message finds the run its first delivery started, and starts no other.
Verification here is pure (no I/O but the environment read); the route is
:mod:`surestep.web.api.triggers`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

from surestep.errors import ConfigurationError
from surestep.names import check_name

#: How far a request's timestamp may be from the server's clock, in seconds.
TOLERANCE = 300.0
_PREFIX = "whsec_"


class SignatureError(Exception):
    """The request is not signed with the trigger's secret (or too old); the message
    says which check failed, for the server's answer."""


@dataclass(frozen=True)
class Trigger:
    """A workflow that signed webhooks may start; its secret is in ``secret_env``."""

    workflow: str
    secret_env: str

    def key(self) -> bytes:
        """The HMAC key from the environment; ConfigurationError if unset or malformed."""
        return decode_secret(os.environ.get(self.secret_env), self.secret_env)

    def run_id(self, message_id: str) -> str:
        return f"webhook:{self.workflow}:{message_id}"


def decode_secret(secret: str | None, env: str) -> bytes:
    """The key of a ``whsec_<base64>`` secret (the prefix may be left out)."""
    if not secret:
        raise ConfigurationError(
            f"the webhook trigger secret ${env} is not set; set it to the secret the "
            f"sender signs with (whsec_<base64>) in the environment of `surestep serve`"
        )
    try:
        key = base64.b64decode(secret.removeprefix(_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        raise ConfigurationError(
            f"${env} is not a webhook secret: expected whsec_ followed by base64, e.g. "
            f"whsec_{base64.b64encode(b'32 random bytes...').decode()}"
        )
    return key


def sign(key: bytes, message_id: str, timestamp: int | str, body: bytes) -> str:
    """The ``webhook-signature`` header value a sender computes (tests and senders).

    >>> sign(b"k", "msg_1", 1700000000, b"{}")
    'v1,LTBsW2zNVsMNlXYZbgw/T+jGxr1msQBcXoa3h1dR9wQ='
    """
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode()}"


class Triggers:
    """The webhook triggers an App declares, by workflow name."""

    def __init__(self) -> None:
        self._triggers: dict[str, Trigger] = {}

    def add(self, workflow: str, secret_env: str) -> Trigger:
        check_name("workflow", workflow)
        if not isinstance(secret_env, str) or not secret_env.strip():
            raise ConfigurationError(
                f"webhook trigger for {workflow!r}: secret_env names the environment "
                f"variable that holds its secret, e.g. secret_env='INGEST_WEBHOOK_SECRET'"
            )
        if workflow in self._triggers:
            raise ConfigurationError(f"workflow {workflow!r} has a webhook trigger already")
        trigger = Trigger(workflow, secret_env)
        self._triggers[workflow] = trigger
        return trigger

    def find(self, workflow: str) -> Trigger | None:
        return self._triggers.get(workflow)

    def all(self) -> list[Trigger]:
        return list(self._triggers.values())


def verify(
    key: bytes,
    headers: dict[str, str | None],
    body: bytes,
    now: float,
    tolerance: float = TOLERANCE,
) -> str:
    """Check a request's Standard Webhooks signature; return its message id, or raise
    :class:`SignatureError` saying what is wrong. ``headers`` are by lower-case name."""
    message_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not message_id or not timestamp or not signatures:
        raise SignatureError(
            "sign the request: send webhook-id, webhook-timestamp and webhook-signature "
            "(Standard Webhooks)"
        )
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SignatureError("webhook-timestamp must be epoch seconds") from None
    if abs(now - sent_at) > tolerance:
        raise SignatureError(
            f"webhook-timestamp is more than {tolerance:.0f} s from the server's clock; "
            f"sign the request when sending it (and check the sender's clock)"
        )
    expected = sign(key, message_id, timestamp, body).encode()
    for candidate in signatures.split():
        if hmac.compare_digest(candidate.encode(), expected):
            return message_id
    raise SignatureError("webhook-signature does not match: wrong secret, or a changed body")
