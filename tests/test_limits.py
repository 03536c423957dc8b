"""Bounded request bodies: over the limit is 413 before the body is read in full (webhooks have a
smaller limit), too slow is 408, a client that leaves mid-body runs nothing."""

from __future__ import annotations

import asyncio
from typing import Any

from kassa.limits import BodyLimitMiddleware

KIB = 1024


async def test_a_declared_body_over_the_limit_is_413(client, admin) -> None:
    big = b"x" * (1024 * KIB + 1)
    response = await client.post(
        "/v1/products", content=big, headers=admin.headers | {"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert (problem["code"], problem["max_bytes"]) == ("payload_too_large", 1024 * KIB)


async def test_webhooks_have_a_smaller_limit(client, admin) -> None:
    body = b"{" + b" " * (300 * KIB) + b"}"
    webhook = await client.post("/v1/webhooks/sandbox", content=body)
    assert (webhook.status_code, webhook.json()["code"]) == (413, "payload_too_large")
    product = await client.post(
        "/v1/products", content=body, headers=admin.headers | {"content-type": "application/json"}
    )
    assert product.status_code == 422  # read, and refused for what it says, not for its size


class Recorder:
    def __init__(self) -> None:
        self.called = False
        self.body = b""
        self.sent: list[dict[str, Any]] = []

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        self.called = True
        message = await receive()
        self.body = message["body"]

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None


def middleware(recorder: Recorder, timeout: float = 1.0) -> BodyLimitMiddleware:
    return BodyLimitMiddleware(
        recorder.app,
        max_body_bytes=64 * KIB,
        webhook_max_body_bytes=8 * KIB,
        timeout_seconds=timeout,
    )


def scope(path: str = "/v1/carts") -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "headers": []}


async def test_a_streamed_body_is_cut_off_at_the_limit_without_reading_the_rest() -> None:
    recorder = Recorder()
    reads = 0

    async def endless() -> dict[str, Any]:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * (16 * KIB), "more_body": True}

    await middleware(recorder)(scope(), endless, recorder.send)
    assert recorder.status == 413 and not recorder.called
    assert reads == 5  # 64 KiB allowed: the fifth 16 KiB chunk passes it, and reading stops


async def test_a_body_that_trickles_in_is_cut_off() -> None:
    recorder = Recorder()

    async def slow() -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b"x", "more_body": True}

    await middleware(recorder, timeout=0.3)(scope(), slow, recorder.send)
    assert recorder.status == 408 and not recorder.called


async def test_a_client_that_leaves_mid_body_runs_nothing() -> None:
    recorder = Recorder()
    messages = iter(
        [
            {"type": "http.request", "body": b"{", "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def leaving() -> dict[str, Any]:
        return next(messages)

    await middleware(recorder)(scope(), leaving, recorder.send)
    assert recorder.sent == [] and not recorder.called


async def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    recorder = Recorder()
    parts = iter(
        [
            {"type": "http.request", "body": b'{"a": ', "more_body": True},
            {"type": "http.request", "body": b"1}", "more_body": False},
        ]
    )

    async def receive() -> dict[str, Any]:
        return next(parts)

    await middleware(recorder)(scope(), receive, recorder.send)
    assert recorder.called and recorder.body == b'{"a": 1}'
