"""Steps of the buying flow over HTTP, shared by the checkout, payment and order tests."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import func, select

from kassa.db import Database

ADDRESS = {
    "name": "Ada Lovelace",
    "line1": "1 Analytical Row",
    "city": "London",
    "postal_code": "N1 9GU",
    "country": "US",
}
GOOD_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
NO_FUNDS_CARD = "4000000000009995"


async def open_shop(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> None:
    """A shipping rate (500, free from 10,000) and a 10 % tax rate for the US."""
    response = await client.put(
        "/v1/admin/shipping-rates/us",
        json={"amount": 500, "free_above_amount": 10_000},
        headers=admin_headers,
    )
    assert response.status_code == 200, response.text
    response = await client.put(
        "/v1/admin/tax-rates/us", json={"basis_points": 1000}, headers=admin_headers
    )
    assert response.status_code == 200, response.text


async def cart_with(
    client: httpx.AsyncClient, *lines: tuple[str, int], headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """A cart with `lines`; returns (cart, the headers that open it)."""
    response = await client.post("/v1/carts", headers=headers or {})
    assert response.status_code in (200, 201), response.text
    cart = response.json()
    access = dict(headers) if headers else {"X-Cart-Token": cart["token"]}
    for sku, quantity in lines:
        response = await client.post(
            f"/v1/carts/{cart['id']}/items", json={"sku": sku, "quantity": quantity}, headers=access
        )
        assert response.status_code == 200, response.text
    return cart, access


async def start_checkout(
    client: httpx.AsyncClient,
    cart: dict[str, Any],
    access: dict[str, str],
    **extra: Any,
) -> httpx.Response:
    body = {
        "cart_id": cart["id"],
        "email": "ada@example.com",
        "shipping_address": ADDRESS,
        **extra,
    }
    return await client.post("/v1/checkouts", json=body, headers=access)


async def pay(
    client: httpx.AsyncClient,
    payment_id: str,
    card: str = GOOD_CARD,
    access: dict[str, str] | None = None,
) -> httpx.Response:
    """The buyer pays at the sandbox's card form (it needs the cart token or the sign-in; the
    client's cookie jar carries the last cart's cookie otherwise)."""
    return await client.post(
        f"/v1/sandbox/payments/{payment_id}/pay", json={"card_number": card}, headers=access or {}
    )


async def deliver(client: httpx.AsyncClient, admin_headers: dict[str, str]) -> int:
    """Drain the outbox now (the background loop does this in `kassa serve`)."""
    response = await client.post("/v1/admin/jobs/outbox", headers=admin_headers)
    assert response.status_code == 200, response.text
    return int(response.json()["attempted"])


async def stock(client: httpx.AsyncClient, sku: str, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get(f"/v1/inventory/{sku}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def count(db: Database, model: Any, *conditions: Any) -> int:
    """How many rows of `model` (matching `conditions`) the database holds now."""
    async with db.read() as session:
        query = select(func.count()).select_from(model).where(*conditions)
        return int(await session.scalar(query) or 0)


async def rows(db: Database, model: Any, *conditions: Any) -> list[Any]:
    async with db.read() as session:
        return list((await session.execute(select(model).where(*conditions))).scalars())
