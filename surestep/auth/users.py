"""``app.users``: the users of the REST API, kept in the run store's database.

A user has a name, a role (:data:`surestep.auth.roles.ROLES`), groups (the review groups
whose tasks they see) and one token, of which only a hash is stored: the token is shown
once, by :meth:`Users.add` and :meth:`Users.rotate`, and never again.

>>> token = app.users.add("alice", "reviewer", ["finance"])   # doctest: +SKIP
>>> app.users.authenticate(token).name                        # doctest: +SKIP
'alice'
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import surestep.auth.roles as roles
import surestep.auth.tokens as tokens
from surestep.clock import Clock
from surestep.errors import ConfigurationError, UserExistsError, UserNotFoundError
from surestep.names import check_name
from surestep.review.records import ReviewTask
from surestep.storage import Store
from surestep.storage.rows import Cursor
from surestep.storage.transient import retry_transient

# Never token_hash: what is read to show a user does not carry it.
COLUMNS = "name, role, groups, created_at, disabled_at, rotated_at"


@dataclass(frozen=True)
class User:
    """A user of the REST API, as listings show it (no token, no hash)."""

    name: str
    role: str
    groups: tuple[str, ...]
    created_at: float
    disabled_at: float | None
    rotated_at: float | None

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    def at_least(self, role: str) -> bool:
        """Whether this user may do what ``role`` may."""
        return roles.at_least(self.role, role)

    def may_see(self, task: ReviewTask) -> bool:
        """Whether this user may see and decide ``task``."""
        return roles.may_see_task(self.role, self.name, self.groups, task.assignee, task.groups)


class UserHost(Protocol):
    """What ``Users`` needs of its App."""

    clock: Clock

    @property
    def store(self) -> Store: ...


class Users:
    """The API users of one App's database."""

    def __init__(self, host: UserHost) -> None:
        self._host = host

    @property
    def _rows(self) -> UserStore:
        return UserStore(self._host.store)

    def add(self, name: str, role: str, groups: Sequence[str] = ()) -> str:
        """Create a user; return their token (shown this once: only its hash is kept)."""
        name, role, groups = _user_name(name), roles.check_role(role), _groups(groups)
        token = tokens.new_token()
        self._rows.insert(name, role, groups, tokens.digest(token), self._now())
        return token

    def list(self) -> builtins.list[User]:
        """Every user, disabled ones too, by name."""
        return self._rows.all()

    def get(self, name: str) -> User:
        return self._rows.get(check_name("user name", name))

    def disable(self, name: str) -> User:
        """Refuse the user's token from now on (their past actions stay in the logs)."""
        return self._rows.disable(check_name("user name", name), self._now())

    def rotate(self, name: str) -> str:
        """Give the user a new token and return it; the old one stops working at once.
        A disabled user stays disabled."""
        token = tokens.new_token()
        self._rows.set_token(check_name("user name", name), tokens.digest(token), self._now())
        return token

    def authenticate(self, token: str) -> User | None:
        """The active user whose token this is, or None (unknown, malformed, disabled)."""
        if not tokens.plausible(token):
            return None
        found = self._rows.by_digest(tokens.digest(token))
        if found is None or not tokens.matches(token, found[1]):
            return None
        user = found[0]
        return user if user.active else None

    def _now(self) -> float:
        return self._host.clock.now()


class UserStore:
    """Users in the database of ``store``, written in its transactions."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.reconnect_timeout = store.reconnect_timeout

    @retry_transient
    def insert(
        self, name: str, role: str, groups: Sequence[str], token_hash: str, now: float
    ) -> None:
        with self.store.transaction() as cur:
            if _find(cur, name) is not None:
                raise UserExistsError(
                    f"a user named {name!r} exists; `surestep users rotate {name}` gives "
                    f"them a new token"
                )
            cur.execute(
                "INSERT INTO surestep_users (name, role, groups, token_hash, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, role, json.dumps(list(groups)), token_hash, now),
            )

    @retry_transient
    def all(self) -> builtins.list[User]:
        with self.store.reading() as cur:
            cur.execute(f"SELECT {COLUMNS} FROM surestep_users ORDER BY name")
            return [user_from_row(row) for row in cur.fetchall()]

    @retry_transient
    def get(self, name: str) -> User:
        with self.store.reading() as cur:
            return _existing(cur, name)

    @retry_transient
    def disable(self, name: str, now: float) -> User:
        with self.store.transaction() as cur:
            _existing(cur, name)
            cur.execute(
                "UPDATE surestep_users SET disabled_at = ? WHERE name = ? AND disabled_at IS NULL",
                (now, name),
            )
            return _existing(cur, name)

    @retry_transient
    def set_token(self, name: str, token_hash: str, now: float) -> None:
        with self.store.transaction() as cur:
            _existing(cur, name)
            cur.execute(
                "UPDATE surestep_users SET token_hash = ?, rotated_at = ? WHERE name = ?",
                (token_hash, now, name),
            )

    @retry_transient
    def by_digest(self, token_hash: str) -> tuple[User, str] | None:
        """The user whose token has this hash, and the stored hash."""
        with self.store.reading() as cur:
            cur.execute(
                f"SELECT {COLUMNS}, token_hash FROM surestep_users WHERE token_hash = ?",
                (token_hash,),
            )
            row = cur.fetchone()
        return None if row is None else (user_from_row(row[:-1]), str(row[-1]))


def _find(cur: Cursor, name: str) -> User | None:
    cur.execute(f"SELECT {COLUMNS} FROM surestep_users WHERE name = ?", (name,))
    row = cur.fetchone()
    return None if row is None else user_from_row(row)


def _existing(cur: Cursor, name: str) -> User:
    user = _find(cur, name)
    if user is None:
        raise UserNotFoundError(f"no user named {name!r}; `surestep users list` shows them")
    return user


def user_from_row(row: Sequence[Any]) -> User:
    name, role, groups, created_at, disabled_at, rotated_at = row
    return User(
        name=str(name),
        role=str(role),
        groups=tuple(json.loads(groups or "[]")),
        created_at=float(created_at),
        disabled_at=None if disabled_at is None else float(disabled_at),
        rotated_at=None if rotated_at is None else float(rotated_at),
    )


def _user_name(name: object) -> str:
    # A colon would make "group:x" a user name that reads as a group in a task's
    # principals ("user:NAME" / "group:NAME").
    name = check_name("user name", name)
    if ":" in name or name != name.strip():
        raise ConfigurationError(
            f"user name {name!r} may not contain ':' or surrounding spaces; pick another"
        )
    return name


def _groups(groups: Sequence[str]) -> tuple[str, ...]:
    if isinstance(groups, str):
        groups = [groups]
    found = []
    for group in groups:
        group = check_name("group", group).removeprefix("group:")
        if ":" in group or group != group.strip() or group == "*":
            raise ConfigurationError(
                f"group {group!r} may not contain ':', be '*' or have surrounding spaces"
            )
        found.append(group)
    return tuple(dict.fromkeys(found))
