"""Who may see and change jobs over HTTP: the token (a Bearer header, or a cookie the login form sets) and, for
POSTs, the Origin header.

Without a token (the page on 127.0.0.1 only; `config` refuses another host without one) everyone who can
reach the port may read; POSTs still need a matching Origin, so a web page elsewhere cannot make a
visitor's browser retry or cancel jobs. With a token, every page, the API and (unless
`web.metrics_public`) /metrics need it; /login and /static do not.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "glimpsed_session"
OPEN_PATHS = ("/login", "/static/", "/favicon.ico")


def session_value(token: str) -> str:
    """What the cookie holds: a digest of the token, so the cookie itself never carries the token."""
    return hmac.new(token.encode(), b"glimpsed web session", hashlib.sha256).hexdigest()


def same_origin(request: Request) -> bool:
    """Whether the request's Origin is this server (scheme, host and port as the browser reached it)."""
    origin = request.headers.get("origin")
    host = request.headers.get("host")
    return origin is not None and host is not None and origin in (f"http://{host}", f"https://{host}")


class TokenGuard:
    """ASGI middleware: 401 without the token where one is set, 403 for a POST from another origin.

    Args:
        app: the application.
        token: the secret, or None (no token: reads are open).
        metrics_public: serve /metrics without the token.
        login_page: the 401 answer to a page request (the login form).
    """

    def __init__(self, app: ASGIApp, token: str | None, metrics_public: bool,
                 login_page: Callable[[Request], Response]) -> None:
        self.app = app
        self.token = token
        self.metrics_public = metrics_public
        self.login_page = login_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        refusal = self.refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def bearer_ok(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return (self.token is not None and header.startswith("Bearer ")
                and hmac.compare_digest(header[7:].strip().encode(), self.token.encode()))

    def authenticated(self, request: Request) -> bool:
        """The token came as a Bearer header or as the login cookie (always True without a token)."""
        if self.token is None:
            return True
        cookie = request.cookies.get(COOKIE, "")
        return self.bearer_ok(request) or hmac.compare_digest(cookie.encode(), session_value(self.token).encode())

    def refusal(self, request: Request) -> Response | None:
        path = request.url.path
        if request.method == "POST" and not same_origin(request):
            # A browser always sends Origin with a POST; a script without one must show the Bearer token.
            if request.headers.get("origin") is not None or not (self.token is None or self.bearer_ok(request)):
                return JSONResponse({"error": "forbidden", "detail": "a POST must come from this page (its Origin)"},
                                    status_code=403)
        if path.startswith(OPEN_PATHS) or (path == "/metrics" and self.metrics_public):
            return None
        if self.authenticated(request):
            return None
        if path.startswith("/api/") or path == "/metrics" or request.method != "GET":
            return JSONResponse({"error": "unauthorized", "detail": "send `Authorization: Bearer <web token>`"},
                                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="glimpsed"'})
        return self.login_page(request)
