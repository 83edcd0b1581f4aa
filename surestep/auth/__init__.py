"""Users of the REST API: who they are, what their role lets them do, their tokens.

:mod:`surestep.auth.roles` and :mod:`surestep.auth.tokens` are pure;
:mod:`surestep.auth.users` keeps users in the run store's database (``app.users``).
"""

from __future__ import annotations

from surestep.auth.roles import ROLES
from surestep.auth.users import User, Users

__all__ = ["ROLES", "User", "Users"]
