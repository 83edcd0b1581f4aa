"""Sign-in sessions of the web console: a token exchanged for a short-lived secret.

The browser keeps the session's secret in a cookie; the database keeps only its SHA-256
(a secret of 256 random bits needs no slow hash, as for tokens), so whoever reads the
database cannot sign in with what they find there. Sessions are stored, not signed:
signing out deletes the row, so a copied cookie stops working at once, and no signing
key has to be shared by every process that serves the console.

A session is tied to the token it was opened with: rotating or disabling that user's
token ends their sessions too. It lasts :data:`SESSION_SECONDS` from sign-in, however
busy the user is (no sliding renewal: a stolen cookie's worth is bounded).

>>> secret, user = app.sessions.open(token)          # doctest: +SKIP
>>> app.sessions.user(secret).name                    # doctest: +SKIP
'alice'
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Protocol

import surestep.auth.tokens as tokens
from surestep.auth.users import COLUMNS, User, user_from_row
from surestep.clock import Clock
from surestep.storage import Store
from surestep.storage.transient import retry_transient

#: How long a session lasts from sign-in: a working day.
SESSION_SECONDS = 8 * 3600.0
#: Longer than any secret we make; anything longer is refused before it is hashed.
_MAX_SECRET = 128


class SessionHost(Protocol):
    clock: Clock

    @property
    def store(self) -> Store: ...


class Sessions:
    """The console sessions of one App's database (``app.sessions``)."""

    def __init__(self, host: SessionHost, seconds: float = SESSION_SECONDS) -> None:
        self._host = host
        self.seconds = seconds

    @property
    def _rows(self) -> SessionStore:
        return SessionStore(self._host.store)

    def open(self, token: str) -> tuple[str, User] | None:
        """Exchange an API token for a session: (its secret, the user), or None for a
        token that signs no one in (unknown, malformed, disabled)."""
        if not tokens.plausible(token):
            return None
        now = self._host.clock.now()
        secret = secrets.token_urlsafe(32)
        user = self._rows.open(tokens.digest(token), _digest(secret), now, now + self.seconds)
        return None if user is None else (secret, user)

    def user(self, secret: str) -> User | None:
        """The active user of an unexpired session, or None."""
        if not secret or len(secret) > _MAX_SECRET:
            return None
        return self._rows.user(_digest(secret), self._host.clock.now())

    def close(self, secret: str) -> None:
        """Sign out: the session's secret stops working at once."""
        if secret and len(secret) <= _MAX_SECRET:
            self._rows.close(_digest(secret))


def csrf_token(secret: str) -> str:
    """The CSRF token of a session: derived from its secret, so nothing more is stored,
    and only a page served to the session's owner can carry it (the secret itself is
    in an HttpOnly cookie no script reads)."""
    return hmac.new(secret.encode(), b"surestep console csrf", hashlib.sha256).hexdigest()


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


class SessionStore:
    """The ``surestep_console_sessions`` table, joined with ``surestep_users``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reconnect_timeout = store.reconnect_timeout

    @retry_transient
    def open(self, token_hash: str, id_hash: str, now: float, expires_at: float) -> User | None:
        with self.store.transaction() as cur:
            cur.execute("DELETE FROM surestep_console_sessions WHERE expires_at <= ?", (now,))
            cur.execute(
                f"SELECT {COLUMNS} FROM surestep_users"
                " WHERE token_hash = ? AND disabled_at IS NULL",
                (token_hash,),
            )
            row = cur.fetchone()
            if row is None:
                return None
            user = user_from_row(row)
            cur.execute(
                "INSERT INTO surestep_console_sessions"
                " (id_hash, user_name, token_hash, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (id_hash, user.name, token_hash, now, expires_at),
            )
            return user

    @retry_transient
    def user(self, id_hash: str, now: float) -> User | None:
        columns = ", ".join(f"u.{c.strip()}" for c in COLUMNS.split(","))
        with self.store.reading() as cur:
            # The token hash must still be the user's: a rotated token ends the session.
            cur.execute(
                f"SELECT {columns} FROM surestep_console_sessions s JOIN surestep_users u"
                " ON u.name = s.user_name AND u.token_hash = s.token_hash"
                " WHERE s.id_hash = ? AND s.expires_at > ? AND u.disabled_at IS NULL",
                (id_hash, now),
            )
            row = cur.fetchone()
        return None if row is None else user_from_row(row)

    @retry_transient
    def close(self, id_hash: str) -> None:
        with self.store.transaction() as cur:
            cur.execute("DELETE FROM surestep_console_sessions WHERE id_hash = ?", (id_hash,))
