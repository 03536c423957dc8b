"""Bounded request bodies: a body over its limit is 413 `payload_too_large`, refused before it
is read in full, and a body that arrives too slowly is cut off with 408 `request_timeout`.

An ASGI middleware outside every other one: it reads the body (at most the limit, within the
time allowed), then hands it to the app as if it had just arrived. Without it, five concurrent
100 MB bodies took a process from 129 MB to 1 GB, and a client trickling a body held a
connection (and a worker's shutdown) for as long as it liked.
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kassa.errors import problem

WEBHOOK_PREFIX = "/v1/webhooks/"


class BodyLimitMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        webhook_max_body_bytes: int,
        timeout_seconds: float,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.webhook_max_body_bytes = webhook_max_body_bytes
        self.timeout_seconds = timeout_seconds

    def limit_for(self, path: str) -> int:
        return (
            self.webhook_max_body_bytes
            if path.startswith(WEBHOOK_PREFIX)
            else (self.max_body_bytes)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(limit, scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.timeout_seconds
        more = True
        while more:
            left = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(left, 0.001))
            except TimeoutError:
                await problem(
                    408,
                    "request_timeout",
                    "Request body too slow",
                    f"the body did not arrive within {self.timeout_seconds:g} seconds",
                )(scope, receive, send)
                return
            if message["type"] == "http.disconnect":
                return  # the client left: nothing to answer, nothing to run
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _too_large(limit, scope, receive, send)
                return
            chunks.append(body)
            more = bool(message.get("more_body", False))
        await self.app(scope, _replay(b"".join(chunks), receive), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    response = problem(
        413,
        "payload_too_large",
        "Request body too large",
        f"the body may be at most {limit} bytes",
        max_bytes=limit,
    )
    # Close the connection: the rest of the body is never read.
    response.headers["connection"] = "close"
    await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed
