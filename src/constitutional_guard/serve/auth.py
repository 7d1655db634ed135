"""Bearer-token authentication in front of every endpoint except the health check."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from constitutional_guard.serve.errors import APIError

OPEN_PATHS = frozenset({"/healthz"})


def bearer_token(headers: list[tuple[bytes, bytes]]) -> str | None:
    value = dict(headers).get(b"authorization", b"").decode("latin-1")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class BearerAuthMiddleware:
    """Answer 401 unless ``Authorization: Bearer <key>`` carries one of ``keys`` (compared in constant time)."""

    def __init__(self, app: ASGIApp, keys: tuple[str, ...]) -> None:
        self.app = app
        self._keys = [k.encode("utf-8") for k in keys]

    def _accepted(self, token: str | None) -> bool:
        if token is None:
            return False
        given = token.encode("utf-8")
        matches = [hmac.compare_digest(given, key) for key in self._keys]  # every key, so timing reveals nothing
        return any(matches)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope["headers"])
        if not self._accepted(token):
            reason = "missing bearer token" if token is None else "invalid API key"
            error = APIError(401, "authentication_error", f"{reason}: send 'Authorization: Bearer <key>'",
                             code="invalid_api_key")
            await error.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)
