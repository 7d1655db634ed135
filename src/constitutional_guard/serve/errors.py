"""Typed JSON errors in OpenAI's envelope, and the handlers that turn failures into them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from constitutional_guard.errors import format_loc
from constitutional_guard.guard.events import GuardErrorCode
from constitutional_guard.serve.protocol import error_payload, request_param

logger = logging.getLogger(__name__)
CLIENT_CLOSED = 499
"""Status recorded when the client went away before the answer (nginx's convention); nobody reads it."""


class APIError(Exception):
    """An error answer: HTTP status, OpenAI error ``type``, message and the request field at fault."""

    def __init__(
        self, status: int, type_: str, message: str, param: str | None = None, code: str | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s

    def payload(self) -> dict:
        return error_payload(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        headers = {"Retry-After": str(self.retry_after_s)} if self.retry_after_s is not None else None
        if self.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(self.payload(), status_code=self.status, headers=headers)


class ClientGone(Exception):
    """The client disconnected; its work was stopped."""


def invalid_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, "invalid_request_error", message, param)


def overloaded(retry_after_s: int) -> APIError:
    return APIError(429, "rate_limit_error", "server is at capacity: too many requests queued, retry later",
                    code="overloaded", retry_after_s=retry_after_s)


def shutting_down() -> APIError:
    return APIError(503, "server_error", "the server is shutting down; retry on another instance",
                    code="shutting_down")


def body_timed_out(seconds: float) -> APIError:
    return APIError(408, "invalid_request_error", f"the request body did not arrive within {seconds:g}s",
                    code="body_timeout")


def timed_out(seconds: float) -> APIError:
    return APIError(504, "timeout_error", f"request exceeded the server's {seconds:g}s time limit", code="timeout")


def upstream_failed(code: str, message: str) -> APIError:
    """The guarded engine failed: 504 when it timed out, else 502, carrying its message."""
    if code == GuardErrorCode.UPSTREAM_TIMEOUT:
        return APIError(504, "timeout_error", message, code=code)
    return APIError(502, "server_error", message, code=GuardErrorCode.UPSTREAM_ERROR.value)


def guard_failed(exc: Exception, request_id: str) -> APIError:
    """The answer to a guard that raised; the log line carries the request id."""
    if isinstance(exc, ValueError):
        return invalid_request(f"the guard rejected the request: {exc}")
    logger.error("%s: guard failed", request_id, exc_info=exc)
    return APIError(500, "server_error", f"the guard failed: {type(exc).__name__}", code="guard_error")


def _error_param(error: dict[str, Any]) -> str | None:
    if error.get("type") == "json_invalid":
        return None
    loc = request_param(tuple(error.get("loc", ())))
    return format_loc(loc) if loc else None


def validation_error(errors: Sequence[dict[str, Any]]) -> APIError:
    """A 400 naming the field at fault: our own checks first, then the deepest location.

    Errors that a union member raised at the same field collapse into one, so a bad string is not also
    reported as "not a list".
    """
    if not errors:
        return invalid_request("invalid request")
    ranked = sorted(errors, key=lambda e: (e.get("type") != "value_error", -len(e.get("loc", ()))))
    messages: dict[str | None, str] = {}
    for error in ranked:
        messages.setdefault(_error_param(error), str(error.get("msg", "invalid")).removeprefix("Value error, "))
    param = _error_param(ranked[0])
    message = "; ".join(f"{name or 'body'}: {msg}" for name, msg in list(messages.items())[:5])
    return invalid_request(message, param)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc.errors()).response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return APIError(500, "server_error", "internal server error", code="internal_error").response()

    @app.exception_handler(ClientGone)
    async def _gone(_: Request, __: ClientGone) -> Response:
        return Response(status_code=CLIENT_CLOSED)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, APIError):  # raised while FastAPI read the body, e.g. the size limit
            return exc.__cause__.response()
        if exc.status_code == 404:
            return APIError(404, "not_found_error", f"no route {request.url.path}").response()
        if exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
            return APIError(405, "invalid_request_error", message).response()
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return APIError(exc.status_code, type_, str(exc.detail)).response()
