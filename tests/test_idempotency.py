"""Idempotency-Key on unsafe requests: Stripe's semantics, stored per caller in the database."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import func, select

from kassa.app import create_app
from kassa.checkout.models import Checkout
from tests.checkout.flow import cart_with, open_shop, start_checkout


async def test_a_retried_request_is_replayed_byte_for_byte(client) -> None:
    first = await client.post("/v1/carts", headers={"Idempotency-Key": "cart-1"})
    assert first.status_code == 201
    client.cookies.clear()  # the response (and its cookie) never reached the client
    again = await client.post("/v1/carts", headers={"Idempotency-Key": "cart-1"})
    assert again.status_code == 201
    assert again.content == first.content  # the same cart, the same token: nothing new made
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    client.cookies.clear()
    other = await client.post("/v1/carts", headers={"Idempotency-Key": "cart-2"})
    assert other.json()["id"] != first.json()["id"]


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
