"""Every error leaves the API as ``{"error": {"code", "message"}}`` with the right status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from actionq.errors import (
    ActionqError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    CrossSiteRequestError,
    InvalidArgumentsError,
    NotFoundError,
    StreamCapacityError,
    TooManyStreamsError,
    UnavailableError,
    UnknownToolError,
)

__all__ = ["error_response", "install_error_handlers"]

log = logging.getLogger(__name__)

_STATUS_BY_ERROR: list[tuple[type[ActionqError], int]] = [
    (AuthenticationError, 401),
    (CrossSiteRequestError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (UnknownToolError, 400),
    (BadRequestError, 400),
    (InvalidArgumentsError, 422),
    (TooManyStreamsError, 429),
    (StreamCapacityError, 503),
    (UnavailableError, 503),
    (ConfigurationError, 500),
]
_CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
}


def error_response(status: int, code: str, message: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def _json_error_message(error: Any, document: Any) -> str:
    """Where and what: 'line 3, column 5 (character 40): Expecting value'."""
    position = next((p for p in error.get("loc", ())[1:] if isinstance(p, int)), None)
    reason = (error.get("ctx") or {}).get("error", "invalid JSON")
    if position is None or not isinstance(document, str | bytes):
        return f"malformed JSON: {reason}"
    text = document.decode(errors="replace") if isinstance(document, bytes) else document
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return f"malformed JSON at line {line}, column {column} (character {position}): {reason}"


def _validation_message(exc: RequestValidationError, request: Request) -> str:
    parts = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            parts.append(_json_error_message(error, exc.body))
            continue
        location = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{location or 'body'}: {error.get('msg', 'invalid')}")
    message = "; ".join(parts) or "invalid request"
    content_type = request.headers.get("content-type", "")
    about_body = any(tuple(e.get("loc", ()))[:1] == ("body",) for e in exc.errors())
    if about_body and "json" not in content_type.lower():
        sent = f"'{content_type}'" if content_type else "none"
        message += (
            f" (send the body as JSON with 'Content-Type: application/json'; content type: {sent})"
        )
    return message


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ActionqError)
    async def actionq_error(request: Request, exc: ActionqError) -> JSONResponse:
        status = next((s for cls, s in _STATUS_BY_ERROR if isinstance(exc, cls)), 500)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return error_response(status, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", _validation_message(exc, request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _CODE_BY_STATUS.get(exc.status_code, "http_error")
        message = str(exc.detail)
        if exc.status_code == 413:
            limit = request.app.state.settings.api_max_body_bytes
            message = f"request body larger than {limit} bytes (ACTIONQ_API_MAX_BODY_BYTES)"
        return error_response(exc.status_code, code, message)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; see the API log")
