"""Who is calling: one dependency reads the bearer token, others check the role.

>>> @router.post("/reviews/{task_id}/reassign")                        # doctest: +SKIP
... def reassign(task_id: int, user: Operator, app: SurestepApp): ...
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from surestep.app import App
from surestep.auth import User
from surestep.web.errors import forbidden, unauthorized

# auto_error=False: a missing or non-Bearer header is answered by current_user with our
# own 401 body (and the WWW-Authenticate header), like an unknown token.
_bearer = HTTPBearer(
    auto_error=False,
    description="A token made by `surestep users add NAME --role ROLE`.",
)


def surestep_app(request: Request) -> App:
    """The App this API serves."""
    app: App = request.app.state.surestep
    return app


SurestepApp = Annotated[App, Depends(surestep_app)]


def current_user(
    app: SurestepApp,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    """The active user whose bearer token came with the request; 401 otherwise."""
    if credentials is None:
        raise unauthorized()
    user = app.users.authenticate(credentials.credentials)
    if user is None:
        raise unauthorized()
    return user


def role(needed: str) -> Callable[[User], User]:
    """A dependency: the current user, if their role is ``needed`` or above; else 403."""

    def check(user: Annotated[User, Depends(current_user)]) -> User:
        if not user.at_least(needed):
            raise forbidden(
                f"this needs the {needed} role (or above); {user.name} is a {user.role}"
            )
        return user

    check.__name__ = f"at_least_{needed}"
    return check


#: Any authenticated user (reviewers see only the tasks offered to them).
Caller = Annotated[User, Depends(current_user)]
#: An operator or admin.
Operator = Annotated[User, Depends(role("operator"))]
