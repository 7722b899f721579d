"""A 405 under /api/v1 lists every method the path supports in `Allow` (RFC 9110 15.5.6).

Starlette answers 405 from the first route whose path matches, so `Allow` would name only that route's
methods (GET /me, but not PATCH /me). This raw ASGI middleware (cheap: it only looks at 405 responses)
rewrites the header with the union over all routes of that path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class AllowHeaderMiddleware:
    def __init__(self, app: ASGIApp, *, prefix: str, routes: Iterable[tuple[str, Iterable[str]]]) -> None:
        """`routes`: (full path template, methods) of every API route."""
        self.app = app
        self.prefix = prefix
        self.routes: list[tuple[re.Pattern[str], frozenset[str]]] = [
            (compile_path(path)[0], frozenset(methods)) for path, methods in routes
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                allowed = self._allowed(scope)
                if allowed:
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                    headers.append((b"allow", ", ".join(sorted(allowed)).encode()))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _allowed(self, scope: Scope) -> set[str]:
        methods: set[str] = set()
        for regex, route_methods in self.routes:
            if regex.match(scope["path"]):
                methods |= route_methods
        return methods
