"""The API's front door (pure ASGI, outermost of ours): it refuses a request
without a valid key or session cookie (401), or a cookie-authenticated change
from another origin (403), before anything reads its body (FastAPI parses a JSON
body before it runs any dependency), and counts every request by route and
status, including those that fail."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from actionq.api.auth import authenticate
from actionq.api.errors import error_response
from actionq.api.metrics import ApiMetrics
from actionq.errors import AuthenticationError, CrossSiteRequestError

__all__ = ["PUBLIC_PATHS", "RequestGate"]

# Everything else needs a key, unknown paths included (a 401 tells an
# unauthenticated client nothing about which routes exist).
# The console's page and assets hold no data (it reads the API with a session).
PUBLIC_PATHS = frozenset(
    {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/console"}
)
PUBLIC_PREFIXES = ("/static-offline-docs/", "/console/")
# Logging out clears the cookie whether or not the session is still valid.
PUBLIC_ROUTES = frozenset({("DELETE", "/api/session")})


def is_public(method: str, path: str) -> bool:
    return (
        path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES) or (method, path) in PUBLIC_ROUTES
    )


class RequestGate:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics, keys: list[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # A WebSocket checks its key itself, after the handshake: the key
            # may come in its first frame (actionq.api.openhands.sockets).
            await self.app(scope, receive, send)
            return
        status: dict[str, Any] = {}

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        label = "unmatched"
        try:
            if not is_public(scope["method"], scope["path"]):
                headers = Headers(scope=scope)
                cookies = cookie_parser(headers.get("cookie", ""))
                try:
                    authenticate(scope["method"], scope["scheme"], headers, cookies, self.keys)
                except AuthenticationError as e:
                    label = "unauthenticated"
                    await error_response(401, e.code, str(e))(scope, receive, tracking_send)
                    return
                except CrossSiteRequestError as e:
                    label = "cross_site"
                    await error_response(403, e.code, str(e))(scope, receive, tracking_send)
                    return
            await self.app(scope, receive, tracking_send)
        except BaseException:
            status.setdefault("code", 500)
            raise
        finally:
            # The router leaves the route it chose in the scope.
            route = scope.get("route")
            label = str(getattr(route, "path", label))
            self.metrics.requests.labels(scope["method"], label, status.get("code", 500)).inc()
