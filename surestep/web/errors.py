"""Errors as the API answers them: one body shape, one status per kind of error.

Every error body is ``{"code", "message", "reason", "fields"}``: ``reason`` says why for
a conflict, ``fields`` (``[{"path", "message"}]``) names the fields of invalid input;
both are null where they do not apply. Nothing a client sent is
echoed back (a payload may hold sensitive fields), and no header is ever logged (the
Authorization header holds a token).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from surestep.errors import (
    ConfigurationError,
    IdempotencyConflictError,
    InvalidOperationError,
    ReviewConflictError,
    ReviewNotFoundError,
    ReviewValidationError,
    RunNotFoundError,
    StorageError,
    SurestepError,
    UserExistsError,
    UserNotFoundError,
)

log = logging.getLogger("surestep.web")

#: The one body for a review task that does not exist *and* for one the caller may not
#: see, so that a 404 does not tell a reviewer which task ids exist.
TASK_NOT_FOUND = "no such review task, or not one you may see"


class ApiError(Exception):
    """An error the API answers with ``status`` and a ``{"code", "message"}`` body."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def unauthorized() -> ApiError:
    # One message for a missing, unknown and disabled token: which it was is not the
    # caller's business (a disabled user learns it from whoever disabled them).
    return ApiError(
        401,
        "unauthorized",
        "send a valid token: Authorization: Bearer <token> (from `surestep users add`)",
        {"WWW-Authenticate": "Bearer"},
    )


def forbidden(message: str) -> ApiError:
    return ApiError(403, "forbidden", message)


_STATUS: list[tuple[type[SurestepError], int]] = [
    (ReviewNotFoundError, 404),
    (RunNotFoundError, 404),
    (UserNotFoundError, 404),
    (ReviewConflictError, 409),
    (InvalidOperationError, 409),
    (IdempotencyConflictError, 409),
    (UserExistsError, 409),
    (ReviewValidationError, 422),
    (ConfigurationError, 400),
    (StorageError, 503),
]


def error_body(
    code: str,
    message: str,
    reason: str | None = None,
    fields: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The one shape of every error answer (:class:`surestep.web.models.ErrorBody`)."""
    return {"code": code, "message": message, "reason": reason, "fields": fields}


def body(exc: SurestepError) -> tuple[int, dict[str, Any]]:
    """The status and body for a library error."""
    status = next((s for kind, s in _STATUS if isinstance(exc, kind)), 400)
    if isinstance(exc, ReviewNotFoundError):
        return status, error_body(exc.code, TASK_NOT_FOUND)
    return status, error_body(
        exc.code,
        str(exc),
        exc.reason if isinstance(exc, ReviewConflictError) else None,
        exc.fields if isinstance(exc, ReviewValidationError) else None,
    )


async def library_error(request: Request, exc: SurestepError) -> JSONResponse:
    """The JSON answer to a library error (a 5xx is logged: the server's fault)."""
    status, content = body(exc)
    if status >= 500:
        log.warning("%s %s: %s", request.method, request.url.path, content["message"])
    return JSONResponse(content, status)


def install(api: FastAPI) -> None:
    """Answer every error with the one body shape."""

    @api.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), exc.status, headers=exc.headers)

    api.add_exception_handler(SurestepError, library_error)  # type: ignore[arg-type]

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [
            {"path": ".".join(str(p) for p in error["loc"]), "message": error["msg"]}
            for error in exc.errors()
        ]
        return JSONResponse(
            error_body(
                "invalid_request",
                "the request is invalid: "
                + "; ".join(f"{f['path']}: {f['message']}" for f in fields),
                fields=fields,
            ),
            422,
        )

    @api.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this answer, so the server logs its
        # traceback (frames, not locals: no header is in it); the client learns only
        # that it failed.
        return JSONResponse(
            error_body("internal", "internal error; the server's log has the cause"),
            500,
        )
