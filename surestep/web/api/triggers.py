"""``POST /api/trigger/{workflow}``: start a run from a signed webhook (Standard Webhooks).

No bearer token: the signature is the authentication (see :mod:`surestep.flow.triggers`).
The order of the checks is the order of the answers: a workflow without a declared
trigger is 404, a missing, wrong or stale signature 401, a body that is not the
workflow's arguments 422; in each case nothing is started. A redelivery (same
``webhook-id``) answers 202 with the run its first delivery started.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from surestep.app import App
from surestep.errors import ConfigurationError, InputValidationError, SurestepError
from surestep.flow.triggers import SignatureError, verify
from surestep.names import check_name
from surestep.web.auth import SurestepApp
from surestep.web.errors import ApiError
from surestep.web.models import ErrorBody

router = APIRouter(prefix="/trigger", tags=["triggers"])

#: The largest body accepted: webhook payloads are events, not uploads.
MAX_BODY = 1 << 20
#: Keyword arguments of ``App.start`` itself (run id, deadline, priority, budget, ...):
#: a body cannot set them. Read from its signature, so a new option is covered at once.
_START_OPTIONS = frozenset(
    name
    for name, parameter in inspect.signature(App.start).parameters.items()
    if parameter.kind is parameter.KEYWORD_ONLY
)


@router.post(
    "/{workflow}",
    status_code=202,
    responses={
        401: {"model": ErrorBody, "description": "Missing, wrong or stale signature."},
        404: {"model": ErrorBody, "description": "No webhook trigger for this workflow."},
        422: {"model": ErrorBody, "description": "The body is not the workflow's inputs."},
    },
)
async def trigger(workflow: str, request: Request, app: SurestepApp) -> JSONResponse:
    """Start a run of ``workflow`` with the JSON object in the body as its arguments."""
    declared = app.triggers.find(workflow)
    if declared is None or app.registry.find(workflow) is None:
        raise ApiError(
            404,
            "trigger_not_found",
            f"no webhook trigger for workflow {workflow!r} on this server; declare one "
            f"with app.webhook_trigger(...) and serve that App (surestep serve --app)",
        )
    try:
        key = declared.key()
    except ConfigurationError as exc:
        raise ApiError(503, "trigger_not_configured", str(exc)) from None
    body = await request.body()
    if len(body) > MAX_BODY:
        raise ApiError(413, "too_large", f"the body is over {MAX_BODY} bytes")
    try:
        message_id = verify(key, _lower(request.headers), body, app.clock.now())
    except SignatureError as exc:
        raise ApiError(401, "bad_signature", str(exc)) from None
    arguments = _arguments(body)
    run_id = declared.run_id(message_id)
    try:
        check_name("run_id", run_id)
    except ConfigurationError as exc:
        raise ApiError(422, "invalid_webhook_id", str(exc)) from None
    try:
        # start() writes to the database: off the event loop, as the plain routes are.
        handle = await run_in_threadpool(app.start, workflow, run_id=run_id, **arguments)
    except InputValidationError as exc:
        raise ApiError(422, exc.code, str(exc)) from None
    except ConfigurationError as exc:
        raise ApiError(422, "invalid_body", str(exc)) from None
    except SurestepError:
        raise  # the error handlers answer (a conflict 409, the database 503)
    return JSONResponse({"run_id": handle.id, "workflow": workflow}, 202)


def _lower(headers: Any) -> dict[str, str | None]:
    names = ("webhook-id", "webhook-timestamp", "webhook-signature")
    return {name: headers.get(name) for name in names}


def _arguments(body: bytes) -> dict[str, Any]:
    """The workflow's keyword arguments: the body's JSON object (empty body: none)."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(422, "invalid_body", "the body must be a JSON object") from None
    if not isinstance(value, dict):
        raise ApiError(
            422, "invalid_body", "the body must be a JSON object of the workflow's arguments"
        )
    clash = sorted(_START_OPTIONS & value.keys())
    if clash:
        raise ApiError(422, "invalid_body", f"{', '.join(clash)} cannot be set by a webhook's body")
    return value
