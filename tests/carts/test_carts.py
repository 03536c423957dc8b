"""Carts: anonymous and signed-in, items with availability, versions, merge at sign-in."""

from __future__ import annotations

import asyncio

import httpx


async def new_cart(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> dict:
    response = await client.post("/v1/carts", headers=headers or {})
    assert response.status_code in (200, 201), response.text
    return response.json()


def as_guest(cart: dict) -> dict[str, str]:
    return {"X-Cart-Token": cart["token"]}


async def test_anonymous_cart_with_items_and_totals(client, make_product) -> None:
    await make_product(("MUG", 5), price=1250)
    cart = await new_cart(client)
    assert cart["id"].startswith("cart_") and cart["token"]
    assert (cart["items"], cart["subtotal_amount"], cart["version"]) == ([], 0, 1)
    response = await client.post(
        f"/v1/carts/{cart['id']}/items",
        json={"sku": "MUG", "quantity": 2},
        headers=as_guest(cart),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    [item] = body["items"]
    assert (item["sku"], item["quantity"], item["unit_price_amount"], item["line_amount"]) == (
        "MUG",
        2,
        1250,
        2500,
    )
    assert item["available"] == 5  # a cart holds no stock; checkout does
    assert (body["subtotal_amount"], body["version"], body["token"]) == (2500, 2, None)
    again = await client.post(
        f"/v1/carts/{cart['id']}/items",
        json={"sku": "MUG", "quantity": 1},
        headers=as_guest(cart),
    )
    assert again.json()["items"][0]["quantity"] == 3


async def test_cart_rules(client, make_product) -> None:
    await make_product(("MUG", 5))
    cart = await new_cart(client)
    url, guest = f"/v1/carts/{cart['id']}/items", as_guest(cart)
    too_many = await client.post(url, json={"sku": "MUG", "quantity": 6}, headers=guest)
    assert too_many.status_code == 409
    assert too_many.json()["errors"] == [{"sku": "MUG", "requested": 6, "available": 5}]
    assert (
        await client.post(url, json={"sku": "NOPE", "quantity": 1}, headers=guest)
    ).status_code == 404
    for quantity in (0, -1, 1001, 1.5, "2"):
        bad = await client.post(url, json={"sku": "MUG", "quantity": quantity}, headers=guest)
        assert bad.status_code == 422, quantity
    # The cookie set at creation is the token too; without either the cart does not exist.
    assert (await client.get(f"/v1/carts/{cart['id']}")).status_code == 200
    client.cookies.clear()
    assert (await client.get(f"/v1/carts/{cart['id']}")).status_code == 404
    assert (
        await client.get(f"/v1/carts/{cart['id']}", headers={"X-Cart-Token": "wrong"})
    ).status_code == 404


async def test_update_remove_clear_and_stale_versions(client, make_product) -> None:
    await make_product(("MUG", 5), ("TEE", 5))
    cart = await new_cart(client)
    guest, base = as_guest(cart), f"/v1/carts/{cart['id']}"
    await client.post(f"{base}/items", json={"sku": "MUG", "quantity": 1}, headers=guest)
    body = (
        await client.post(f"{base}/items", json={"sku": "TEE", "quantity": 1}, headers=guest)
    ).json()
    mug = next(i for i in body["items"] if i["sku"] == "MUG")
    stale = await client.patch(
        f"{base}/items/{mug['id']}", json={"quantity": 3, "version": 2}, headers=guest
    )
    assert (stale.status_code, stale.json()["version"]) == (409, 3)
    fresh = await client.patch(
        f"{base}/items/{mug['id']}", json={"quantity": 3, "version": body["version"]}, headers=guest
    )
    assert next(i for i in fresh.json()["items"] if i["sku"] == "MUG")["quantity"] == 3
    removed = await client.delete(f"{base}/items/{mug['id']}", headers=guest)
    assert [i["sku"] for i in removed.json()["items"]] == ["TEE"]
    assert (await client.delete(f"{base}/items/{mug['id']}", headers=guest)).status_code == 404
    cleared = await client.delete(f"{base}/items", headers=guest)
    assert cleared.json()["items"] == []


async def test_concurrent_changes_lose_no_update(client, make_product) -> None:
    await make_product(("MUG", 1000))
    cart = await new_cart(client)
    url, guest = f"/v1/carts/{cart['id']}/items", as_guest(cart)
    responses = await asyncio.gather(
        *(client.post(url, json={"sku": "MUG", "quantity": 1}, headers=guest) for _ in range(20))
    )
    assert [r.status_code for r in responses] == [200] * 20
    final = (await client.get(f"/v1/carts/{cart['id']}", headers=guest)).json()
    assert final["items"][0]["quantity"] == 20
    assert final["version"] == 21


async def test_signed_in_callers_have_one_open_cart_and_merge_at_sign_in(
    client, make_user, make_product
) -> None:
    await make_product(("MUG", 5), ("TEE", 5))
    buyer = await make_user("customer")
    mine = await new_cart(client, buyer.headers)
    again = await client.post("/v1/carts", headers=buyer.headers)
    assert (again.status_code, again.json()["id"]) == (200, mine["id"])
    await client.post(
        f"/v1/carts/{mine['id']}/items", json={"sku": "MUG", "quantity": 4}, headers=buyer.headers
    )

    guest_cart = await new_cart(client)
    for sku, quantity in (("MUG", 3), ("TEE", 2)):
        await client.post(
            f"/v1/carts/{guest_cart['id']}/items",
            json={"sku": sku, "quantity": quantity},
            headers=as_guest(guest_cart),
        )
    merged = await client.post(
        f"/v1/carts/{mine['id']}/merge", json={"token": guest_cart["token"]}, headers=buyer.headers
    )
    assert merged.status_code == 200, merged.text
    quantities = {i["sku"]: i["quantity"] for i in merged.json()["items"]}
    assert quantities == {"MUG": 5, "TEE": 2}  # 4 + 3 capped at the 5 available
    closed = await client.post(
        f"/v1/carts/{guest_cart['id']}/items",
        json={"sku": "TEE", "quantity": 1},
        headers=as_guest(guest_cart),
    )
    assert (closed.status_code, closed.json()["code"]) == (409, "conflict")
    twice = await client.post(
        f"/v1/carts/{mine['id']}/merge", json={"token": guest_cart["token"]}, headers=buyer.headers
    )
    assert twice.status_code == 404
    other = await make_user("customer")
    assert (await client.get(f"/v1/carts/{mine['id']}", headers=other.headers)).status_code == 404
