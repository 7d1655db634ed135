"""Typed JSON errors in OpenAI's envelope, and the handlers that turn failures into them."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from constitutional_guard.errors import format_loc
from constitutional_guard.serve.protocol import error_payload

logger = logging.getLogger(__name__)
CLIENT_CLOSED = 499
"""Status recorded when the client went away before the answer (nginx's convention); nobody reads it."""


class APIError(Exception):
    """An error answer: HTTP status, OpenAI error ``type``, message and the request field at fault."""

    def __init__(
        self, status: int, type_: str, message: str, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message
        self.param = param
        self.code = code

    def payload(self) -> dict:
        return error_payload(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status == 429 else None
        if self.status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        return JSONResponse(self.payload(), status_code=self.status, headers=headers)


class ClientGone(Exception):
    """The client disconnected; its work was stopped."""


def invalid_request(message: str, param: str | None = None) -> APIError:
    return APIError(400, "invalid_request_error", message, param)


def overloaded() -> APIError:
    return APIError(429, "rate_limit_error", "server is at capacity: too many requests queued, retry later",
                    code="overloaded")


def timed_out(seconds: float) -> APIError:
    return APIError(504, "timeout_error", f"request exceeded the server's {seconds:g}s time limit", code="timeout")


def guard_failed(exc: Exception) -> APIError:
    if isinstance(exc, ValueError):
        return invalid_request(f"the guard rejected the request: {exc}")
    logger.error("guard failed", exc_info=exc)
    return APIError(500, "server_error", f"the guard failed: {type(exc).__name__}", code="guard_error")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [part for part in first.get("loc", ()) if part != "body"]
        param = format_loc(loc) if loc else None
        message = "; ".join(
            f"{format_loc([p for p in e.get('loc', ()) if p != 'body']) if len(e.get('loc', ())) > 1 else 'body'}: "
            f"{e.get('msg', 'invalid')}"
            for e in errors[:5]
        )
        return invalid_request(message or "invalid request", param).response()

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
