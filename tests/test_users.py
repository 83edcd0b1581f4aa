"""The REST API's users on both databases: tokens shown once, stored as hashes only."""

from __future__ import annotations

import hashlib

import pytest

from surestep import App, ConfigurationError, FakeClock, UserExistsError, UserNotFoundError
from surestep.auth.roles import at_least, may_see_task


def stored_hashes(app: App) -> list[str]:
    with app.store.reading() as cur:
        cur.execute("SELECT token_hash FROM surestep_users ORDER BY name")
        return [row[0] for row in cur.fetchall()]


def test_a_token_is_shown_once_and_only_its_hash_is_stored(app: App) -> None:
    token = app.users.add("alice", "reviewer", ["finance", "legal", "finance"])
    assert token.startswith("sst_") and len(token) >= 40
    assert stored_hashes(app) == [hashlib.sha256(token.encode()).hexdigest()]
    with app.store.reading() as cur:
        cur.execute("SELECT * FROM surestep_users")
        assert token not in repr(cur.fetchall())
    user = app.users.authenticate(token)
    assert user is not None
    assert (user.name, user.role, user.groups) == ("alice", "reviewer", ("finance", "legal"))
    assert token not in repr(app.users.list())


def test_wrong_malformed_and_disabled_tokens_do_not_authenticate(
    app: App, clock: FakeClock
) -> None:
    token = app.users.add("bob", "operator")
    for wrong in ["", "sst_", token[:-1], token + "x", "Bearer " + token, "x" * 10_000, "sst_\x00"]:
        assert app.users.authenticate(wrong) is None
    clock.advance(5)
    disabled = app.users.disable("bob")
    assert disabled.disabled_at == clock.now() and not disabled.active
    assert app.users.authenticate(token) is None
    assert app.users.disable("bob").disabled_at == disabled.disabled_at  # idempotent


def test_rotate_replaces_the_token_at_once(app: App, clock: FakeClock) -> None:
    old = app.users.add("carol", "admin")
    clock.advance(60)
    new = app.users.rotate("carol")
    assert new != old
    assert app.users.authenticate(old) is None
    user = app.users.authenticate(new)
    assert user is not None and user.rotated_at == clock.now()


def test_names_roles_and_groups_are_checked(app: App) -> None:
    app.users.add("dave", "reviewer")
    with pytest.raises(UserExistsError, match="surestep users rotate dave"):
        app.users.add("dave", "admin")
    with pytest.raises(ConfigurationError, match="role 'root' is not one of"):
        app.users.add("erin", "root")
    with pytest.raises(ConfigurationError, match="may not contain ':'"):
        app.users.add("group:finance", "reviewer")
    with pytest.raises(ConfigurationError, match="group"):
        app.users.add("erin", "reviewer", ["*"])
    with pytest.raises(UserNotFoundError, match="surestep users list"):
        app.users.disable("nobody")
    with pytest.raises(UserNotFoundError):
        app.users.rotate("nobody")
    assert [u.name for u in app.users.list()] == ["dave"]


def test_roles_are_ordered_and_reviewers_see_only_their_tasks() -> None:
    assert at_least("admin", "operator") and at_least("operator", "reviewer")
    assert not at_least("reviewer", "operator") and not at_least("nobody", "reviewer")
    see = may_see_task
    assert see("reviewer", "alice", ["finance"], None, ["finance"])
    assert see("reviewer", "alice", [], "alice", [])
    assert see("reviewer", "alice", [], None, [])  # open to any reviewer
    assert not see("reviewer", "alice", ["finance"], "bob", ["legal"])
    assert see("operator", "olga", [], "bob", ["legal"])
