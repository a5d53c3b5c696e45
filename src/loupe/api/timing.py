"""``Server-Timing: app;dur=<ms>`` on every response: the server's own time.

Measured from the request reaching the app to the response headers being sent
(the route, its dependencies and its database work), so clients and
benchmarks can tell server time from network and client time.
"""

from __future__ import annotations

import time

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ServerTimingMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def send_with_timing(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - start) * 1000
                MutableHeaders(scope=message).append("Server-Timing", f"app;dur={ms:.2f}")
            await send(message)

        await self.app(scope, receive, send_with_timing)
