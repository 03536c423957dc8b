"""Orders: who sees what, the status table with roles, cancel, refunds within what was paid,
returns."""

from __future__ import annotations

import asyncio

from tests.checkout.flow import cart_with, deliver, open_shop, pay, start_checkout, stock


async def buy(client, admin, *lines, headers=None, coupon=None) -> tuple[dict, dict]:
    """A paid order for `lines`; returns (order, the headers that open it)."""
    cart, access = await cart_with(client, *lines, headers=headers)
    extra = {"coupon_code": coupon} if coupon else {}
    response = await start_checkout(client, cart, access, **extra)
    assert response.status_code == 201, response.text
    checkout = response.json()
    assert (await pay(client, checkout["payment"]["id"], access=access)).status_code == 202
    await deliver(client, admin.headers)
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    order = (await client.get(f"/v1/orders/{seen['order_id']}", headers=access)).json()
    return order, access


async def move(client, order_id: str, to: str, headers: dict) -> object:
    return await client.post(f"/v1/orders/{order_id}/transitions", json={"to": to}, headers=headers)


async def test_status_table_and_roles(client, admin, make_user, make_product) -> None:
    await open_shop(client, admin.headers)
    vendor = await make_user("vendor")
    other_vendor = await make_user("vendor")
    await make_product(("LAMP", 5), owner=vendor)
    buyer = await make_user("customer")
    order, access = await buy(client, admin, ("LAMP", 1), headers=buyer.headers)
    assert (order["status"], order["number"]) == ("paid", order["number"])
    assert order["number"] >= 1001

    # Nothing the table does not allow, whoever asks.
    skipped = await move(client, order["id"], "delivered", admin.headers)
    assert skipped.status_code == 409
    assert skipped.json()["code"] == "invalid_transition"
    assert (skipped.json()["from"], skipped.json()["to"]) == ("paid", "delivered")
    # The buyer cannot move it; another vendor does not even see it.
    assert (await move(client, order["id"], "processing", buyer.headers)).status_code == 403
    assert (await move(client, order["id"], "processing", other_vendor.headers)).status_code == 404
    # The vendor of its lines moves it to processing and shipped, not further.
    assert (await move(client, order["id"], "processing", vendor.headers)).status_code == 200
    assert (await move(client, order["id"], "shipped", vendor.headers)).status_code == 200
    assert (await move(client, order["id"], "delivered", vendor.headers)).status_code == 403
    done = await move(client, order["id"], "delivered", admin.headers)
    assert done.status_code == 200 and done.json()["status"] == "delivered"
    # `returned` only comes from the returns flow (goods and money follow it).
    assert (await move(client, order["id"], "returned", admin.headers)).status_code == 409
    events = (await client.get(f"/v1/orders/{order['id']}/events", headers=access)).json()
    changes = [(e["from_status"], e["to_status"], e["actor"]) for e in events]
    assert changes[-3:] == [
        ("paid", "processing", vendor.id),
        ("processing", "shipped", vendor.id),
        ("shipped", "delivered", admin.id),
    ]


async def test_who_sees_which_orders(client, admin, make_user, make_product) -> None:
    await open_shop(client, admin.headers)
    vendor = await make_user("vendor")
    await make_product(("SOAP", 9), owner=vendor)
    await make_product(("SALT", 9))  # the shop's own
    alice, bob = await make_user("customer"), await make_user("customer")
    mixed, _ = await buy(client, admin, ("SOAP", 1), ("SALT", 1), headers=alice.headers)
    shop_only, _ = await buy(client, admin, ("SALT", 2), headers=bob.headers)
    guest_order, guest = await buy(client, admin, ("SALT", 1))

    def ids(response) -> set[str]:
        assert response.status_code == 200, response.text
        return {o["id"] for o in response.json()["data"]}

    client.cookies.clear()  # the guest's cart cookie would open the guest's order too
    assert ids(await client.get("/v1/orders", headers=alice.headers)) == {mixed["id"]}
    assert ids(await client.get("/v1/orders", headers=bob.headers)) == {shop_only["id"]}
    assert ids(await client.get("/v1/orders", headers=guest)) == {guest_order["id"]}
    everything = await client.get("/v1/orders", headers=admin.headers)
    assert ids(everything) == {mixed["id"], shop_only["id"], guest_order["id"]}
    paid = await client.get("/v1/orders?status=paid&limit=2", headers=admin.headers)
    assert len(paid.json()["data"]) == 2 and paid.json()["next_cursor"]
    # The vendor sees the order with its line, and only its own line of it.
    seen = await client.get("/v1/orders", headers=vendor.headers)
    assert ids(seen) == {mixed["id"]}
    [line] = seen.json()["data"][0]["lines"]
    assert line["sku"] == "SOAP"
    # Someone else's order is a 404, like a missing one.
    assert (await client.get(f"/v1/orders/{mixed['id']}", headers=bob.headers)).status_code == 404
    client.cookies.clear()
    assert (await client.get(f"/v1/orders/{mixed['id']}")).status_code == 404


async def test_buyer_cancels_while_paid_and_not_after(client, admin, make_user, make_product):
    await open_shop(client, admin.headers)
    await make_product(("BELL", 5), price=2000)
    buyer = await make_user("customer")
    order, access = await buy(client, admin, ("BELL", 2), headers=buyer.headers)
    assert (await stock(client, "BELL", admin.headers))["on_hand"] == 3
    other, _ = await buy(client, admin, ("BELL", 1), headers=buyer.headers)
    await move(client, other["id"], "processing", admin.headers)
    refused = await client.post(
        f"/v1/orders/{other['id']}/cancel", json={"reason": "late"}, headers=access
    )
    assert refused.status_code == 403
    by_shop = await client.post(
        f"/v1/orders/{other['id']}/cancel", json={"reason": "out of stock"}, headers=admin.headers
    )
    assert by_shop.status_code == 200 and by_shop.json()["status"] == "cancelled"
    cancelled = await client.post(
        f"/v1/orders/{order['id']}/cancel", json={"reason": "oops"}, headers=access
    )
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert (body["status"], body["payment_status"]) == ("cancelled", "refunded")
    assert body["refunded_amount"] == body["total_amount"]
    assert (await stock(client, "BELL", admin.headers))["on_hand"] == 5
    again = await client.post(
        f"/v1/orders/{order['id']}/cancel", json={"reason": "twice"}, headers=access
    )
    assert again.status_code == 409 and again.json()["code"] == "invalid_transition"


async def test_refunds_never_exceed_what_was_paid(client, admin, make_product) -> None:
    await open_shop(client, admin.headers)
    await make_product(("DRUM", 5), price=5000)
    order, access = await buy(client, admin, ("DRUM", 1))
    total = order["total_amount"]  # 5,000 + 10 % tax; free shipping from 10,000? no: 500
    assert total == 6050
    url = f"/v1/orders/{order['id']}/refunds"
    partial = await client.post(url, json={"amount": 1000, "reason": "dent"}, headers=admin.headers)
    assert partial.status_code == 201, partial.text
    assert (partial.json()["amount"], partial.json()["status"]) == (1000, "pending")
    # Ten refunds of 1,000 at once against the 5,050 left: exactly five pass.
    responses = await asyncio.gather(
        *(
            client.post(url, json={"amount": 1000, "reason": "race"}, headers=admin.headers)
            for _ in range(10)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 5 + [422] * 5, codes
    left = await client.post(url, json={"reason": "the rest"}, headers=admin.headers)
    assert left.status_code == 201 and left.json()["amount"] == 50
    over = await client.post(url, json={"amount": 1, "reason": "more"}, headers=admin.headers)
    assert over.status_code == 422
    seen = (await client.get(f"/v1/orders/{order['id']}", headers=access)).json()
    assert (seen["refunded_amount"], seen["payment_status"]) == (total, "refunded")
    payment = (await client.get(f"/v1/payments/{seen['payment_id']}", headers=access)).json()
    assert (payment["refunded_amount"], payment["status"]) == (total, "refunded")
    # Only admins refund.
    response = await client.post(url, json={"amount": 1, "reason": "x"}, headers=access)
    assert response.status_code == 401
    # Every refund reaches the provider and comes back confirmed.
    await deliver(client, admin.headers)
    events = (await client.get(f"/v1/orders/{order['id']}/events", headers=access)).json()
    kinds = [e["kind"] for e in events]
    assert kinds.count("refund_created") == 7 and kinds.count("refund_succeeded") == 7


async def test_returns_put_stock_back_and_refund_the_paid_share(
    client, admin, make_user, make_product
) -> None:
    await open_shop(client, admin.headers)
    await make_product(("VASE", 5), price=4000)
    await client.post(
        "/v1/admin/coupons",
        json={"code": "HALF", "kind": "percent", "value": 50},
        headers=admin.headers,
    )
    buyer = await make_user("customer")
    order, access = await buy(client, admin, ("VASE", 2), headers=buyer.headers, coupon="HALF")
    # 8,000 - 4,000 discount + 500 shipping, 10 % tax: 4,950.
    assert order["total_amount"] == 4950
    url = f"/v1/orders/{order['id']}/returns"
    early = await client.post(
        url, json={"lines": [{"sku": "VASE", "quantity": 1}], "reason": "chipped"}, headers=access
    )
    assert early.status_code == 409  # only once delivered
    for to in ("processing", "shipped", "delivered"):
        await move(client, order["id"], to, admin.headers)
    too_many = await client.post(
        url, json={"lines": [{"sku": "VASE", "quantity": 3}], "reason": "x"}, headers=access
    )
    assert too_many.status_code == 422
    made = await client.post(
        url, json={"lines": [{"sku": "VASE", "quantity": 1}], "reason": "chipped"}, headers=access
    )
    assert made.status_code == 201, made.text
    assert made.json()["status"] == "requested"
    on_hand = (await stock(client, "VASE", admin.headers))["on_hand"]
    receive = f"{url}/{made.json()['id']}/receive"
    assert (await client.post(receive, headers=access)).status_code == 403  # admins only
    received = await client.post(receive, headers=admin.headers)
    assert received.status_code == 200 and received.json()["status"] == "received"
    assert (await stock(client, "VASE", admin.headers))["on_hand"] == on_hand + 1
    seen = (await client.get(f"/v1/orders/{order['id']}", headers=access)).json()
    # One vase's share of what was paid for the goods: (4,000 + 400 tax) / 2 = 2,200.
    assert seen["refunded_amount"] == 2200
    assert seen["status"] == "delivered"  # one vase is still with the buyer
    assert (await client.post(receive, headers=admin.headers)).status_code == 200  # no-op
    assert (await client.get(f"/v1/orders/{order['id']}", headers=access)).json()[
        "refunded_amount"
    ] == 2200
    second = await client.post(
        url, json={"lines": [{"sku": "VASE", "quantity": 1}], "reason": "both"}, headers=access
    )
    await client.post(f"{url}/{second.json()['id']}/receive", headers=admin.headers)
    seen = (await client.get(f"/v1/orders/{order['id']}", headers=access)).json()
    assert seen["status"] == "returned"
    assert seen["refunded_amount"] == 4400  # shipping (and its tax) stays paid
    movements = (await client.get("/v1/inventory/VASE/movements", headers=admin.headers)).json()
    assert [m["kind"] for m in movements["data"]][-2:] == ["return", "return"]
