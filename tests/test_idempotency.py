"""Idempotency-Key on unsafe requests: Stripe's semantics, stored per caller in the database."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
from sqlalchemy import func, select

from kassa import clock, idempotency
from kassa.app import create_app
from kassa.checkout.models import Checkout
from kassa.ops.models import IdempotencyRecord
from tests.checkout.flow import cart_with, open_shop, start_checkout


async def test_a_retried_request_is_replayed_byte_for_byte(client, make_product) -> None:
    await make_product(("CORK", 5))
    cart, access = await cart_with(client)
    url = f"/v1/carts/{cart['id']}/items"
    headers = {**access, "Idempotency-Key": "add-1"}
    first = await client.post(url, json={"sku": "CORK", "quantity": 1}, headers=headers)
    assert first.status_code == 200
    again = await client.post(url, json={"sku": "CORK", "quantity": 1}, headers=headers)
    assert again.status_code == 200
    assert again.content == first.content  # added once, answered the same
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["content-type"] == first.headers["content-type"]
    assert "Idempotent-Replayed" not in first.headers
    seen = (await client.get(f"/v1/carts/{cart['id']}", headers=access)).json()
    assert seen["items"][0]["quantity"] == 1
    other = await client.post(
        url, json={"sku": "CORK", "quantity": 1}, headers={**access, "Idempotency-Key": "add-2"}
    )
    assert other.json()["items"][0]["quantity"] == 2


async def test_credentials_are_never_replayed_to_an_address(client, make_user) -> None:
    # A guest known only by its address: a new cart's token is not stored for replay (someone
    # else behind the same address could send the same key).
    client.cookies.clear()
    first = await client.post("/v1/carts", headers={"Idempotency-Key": "cart"})
    client.cookies.clear()
    second = await client.post("/v1/carts", headers={"Idempotency-Key": "cart"})
    assert first.status_code == second.status_code == 201
    assert first.json()["token"] != second.json()["token"]
    assert "Idempotent-Replayed" not in second.headers
    # Sign-in is never replayed: the password is checked every time.
    account = await make_user()
    body = {"email": account.email, "password": "correct-horse-battery"}
    for _ in range(2):
        response = await client.post(
            "/v1/auth/login", json=body, headers={"Idempotency-Key": "login"}
        )
        assert response.status_code == 200 and "Idempotent-Replayed" not in response.headers


async def test_the_same_key_with_another_body_is_refused(client, admin, make_product) -> None:
    await make_product(("TAPE", 5))
    cart, access = await cart_with(client)
    url = f"/v1/carts/{cart['id']}/items"
    headers = {**access, "Idempotency-Key": "add-tape"}
    assert (await client.post(url, json={"sku": "TAPE", "quantity": 1}, headers=headers)).is_success
    reused = await client.post(url, json={"sku": "TAPE", "quantity": 2}, headers=headers)
    assert reused.status_code == 422
    assert reused.json()["code"] == "idempotency_key_reused"
    elsewhere = await client.post("/v1/carts", headers=headers)
    assert elsewhere.json()["code"] == "idempotency_key_reused"
    replay = await client.post(url, json={"sku": "TAPE", "quantity": 1}, headers=headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json()["items"][0]["quantity"] == 1  # added once


async def test_keys_belong_to_their_caller(client, make_user) -> None:
    alice, bob = await make_user(), await make_user()
    a = await client.post("/v1/carts", headers={**alice.headers, "Idempotency-Key": "k"})
    b = await client.post("/v1/carts", headers={**bob.headers, "Idempotency-Key": "k"})
    assert a.json()["id"] != b.json()["id"]
    assert "Idempotent-Replayed" not in b.headers


async def test_concurrent_retries_run_the_request_once(client, admin, db, make_product) -> None:
    await open_shop(client, admin.headers)
    await make_product(("GLUE", 5))
    cart, access = await cart_with(client, ("GLUE", 1))
    headers = {**access, "Idempotency-Key": "checkout-once"}
    responses = await asyncio.gather(*(start_checkout(client, cart, headers) for _ in range(8)))
    codes = [r.status_code for r in responses]
    assert codes.count(201) >= 1 and set(codes) <= {201, 409}, codes
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "idempotency_key_in_use"
    assert len({r.json()["id"] for r in responses if r.status_code == 201}) == 1
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(Checkout)) == 1
    later = await start_checkout(client, cart, headers)
    assert later.status_code == 201 and later.headers["Idempotent-Replayed"] == "true"


async def test_errors_are_stored_but_server_errors_are_not(settings, db, client) -> None:
    refused = await client.post(
        "/v1/carts/cart_nope/items",
        json={"sku": "X", "quantity": 1},
        headers={"Idempotency-Key": "e"},
    )
    assert refused.status_code == 404
    again = await client.post(
        "/v1/carts/cart_nope/items",
        json={"sku": "X", "quantity": 1},
        headers={"Idempotency-Key": "e"},
    )
    assert again.headers["Idempotent-Replayed"] == "true"

    app = create_app(settings, db=db, background=False)
    calls = []

    @app.post("/boom")
    async def boom() -> None:
        calls.append(1)
        raise RuntimeError("the server broke")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://kassa.test") as http:
        for _ in range(2):
            response = await http.post("/boom", headers={"Idempotency-Key": "boom"})
            assert response.status_code == 500
            assert "Idempotent-Replayed" not in response.headers
    assert len(calls) == 2  # a 5xx is not stored: the retry ran again


async def test_bad_keys(client) -> None:
    for key in ("", "x" * 256):
        response = await client.post("/v1/carts", headers={"Idempotency-Key": key})
        assert response.status_code == 422, key
        assert response.json()["errors"][0]["field"] == "Idempotency-Key"


async def test_a_slow_request_keeps_its_key(settings, db, monkeypatch) -> None:
    monkeypatch.setattr(idempotency, "RENEW_EVERY", 0.05)
    app = create_app(settings, db=db, background=False)
    release = asyncio.Event()
    runs = []

    @app.post("/slow")
    async def slow() -> dict[str, int]:
        runs.append(1)
        await release.wait()
        return {"runs": len(runs)}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://kassa.test") as http:
        headers = {"Idempotency-Key": "slow"}
        first = asyncio.create_task(http.post("/slow", headers=headers))
        await asyncio.sleep(0.3)
        clock.advance(idempotency.LEASE + timedelta(seconds=1))  # past the first lease
        await asyncio.sleep(0.3)  # the running request renews its lease meanwhile
        retry = await http.post("/slow", headers=headers)
        assert retry.status_code == 409 and retry.json()["code"] == "idempotency_key_in_use"
        release.set()
        assert (await first).json() == {"runs": 1}
        replay = await http.post("/slow", headers=headers)
        assert replay.headers["Idempotent-Replayed"] == "true"
    assert len(runs) == 1


async def test_a_request_cut_off_mid_body_claims_nothing(settings, db) -> None:
    app = create_app(settings, db=db, background=False)
    messages = iter(
        [
            {"type": "http.request", "body": b'{"sku": "A', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive() -> dict:
        return next(messages)

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/carts",
        "raw_path": b"/v1/carts",
        "query_string": b"",
        "headers": [(b"idempotency-key", b"cut"), (b"host", b"kassa.test")],
        "client": ("127.0.0.1", 5555),
        "server": ("kassa.test", 80),
    }
    await app(scope, receive, send)
    assert sent == []
    async with db.read() as session:
        assert await session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0
