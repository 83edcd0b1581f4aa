"""``/api/me``: who the token belongs to (users are managed with `surestep users`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from surestep.web.auth import Caller
from surestep.web.models import ErrorBody, UserOut

router = APIRouter(tags=["users"])


@router.get(
    "/me",
    response_model=UserOut,
    responses={401: {"model": ErrorBody, "description": "Missing, unknown or disabled token."}},
)
def me(user: Caller) -> dict[str, Any]:
    """The calling user: name, role and groups."""
    return {"name": user.name, "role": user.role, "groups": list(user.groups)}
