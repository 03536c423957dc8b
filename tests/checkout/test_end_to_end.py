"""The whole flow over HTTP: product → cart → checkout → sandbox payment → signed webhook →
order paid → stock committed → cancel → stock back and refund."""

from __future__ import annotations

from tests.checkout.flow import cart_with, deliver, open_shop, pay, start_checkout, stock


async def test_buy_pay_cancel_refund(client, admin, make_product) -> None:
    await open_shop(client, admin.headers)
    await make_product(("TEA", 10), ("CUP", 4), price=1500)
    cart, access = await cart_with(client, ("TEA", 2), ("CUP", 1))

    response = await start_checkout(client, cart, access)
    assert response.status_code == 201, response.text
    checkout = response.json()
    assert checkout["state"] == "open"
    assert [(ln["sku"], ln["quantity"]) for ln in checkout["lines"]] == [("TEA", 2), ("CUP", 1)]
    # 4,500 subtotal + 500 shipping, 10 % tax on both.
    assert (checkout["subtotal_amount"], checkout["shipping_amount"]) == (4500, 500)
    assert (checkout["tax_amount"], checkout["total_amount"]) == (500, 5500)
    assert checkout["hold"]["state"] == "active"
    payment = checkout["payment"]
    assert (payment["provider"], payment["status"]) == ("sandbox", "pending")
    assert (await stock(client, "TEA", admin.headers))["reserved"] == 2

    # The cart is locked while the checkout is open.
    response = await client.post(
        f"/v1/carts/{cart['id']}/items", json={"sku": "TEA", "quantity": 1}, headers=access
    )
    assert response.status_code == 409 and response.json()["code"] == "cart_locked"

    response = await pay(client, payment["id"])
    assert response.status_code == 202, response.text
    polled = (await client.get(f"/v1/payments/{payment['id']}", headers=access)).json()
    assert polled["status"] == "processing"  # the webhook has not arrived yet

    assert await deliver(client, admin.headers) == 1
    polled = (await client.get(f"/v1/payments/{payment['id']}", headers=access)).json()
    assert (polled["status"], polled["amount"], polled["refunded_amount"]) == (
        "succeeded",
        5500,
        0,
    )
    checkout = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert checkout["state"] == "completed" and checkout["order_id"]
    order = (await client.get(f"/v1/orders/{checkout['order_id']}", headers=access)).json()
    assert (order["status"], order["payment_status"], order["total_amount"]) == (
        "paid",
        "paid",
        5500,
    )
    assert {(ln["sku"], ln["quantity"]) for ln in order["lines"]} == {("TEA", 2), ("CUP", 1)}
    tea = await stock(client, "TEA", admin.headers)
    assert (tea["on_hand"], tea["reserved"]) == (8, 0)  # committed: sold
    cart_now = await client.get(f"/v1/carts/{cart['id']}", headers=access)
    assert cart_now.json()["state"] == "closed"

    response = await client.post(
        f"/v1/orders/{order['id']}/cancel", json={"reason": "changed my mind"}, headers=access
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["payment_status"] == "refunded"
    tea = await stock(client, "TEA", admin.headers)
    assert (tea["on_hand"], tea["reserved"]) == (10, 0)
    # The refund goes to the provider through the outbox, whose refund.succeeded comes back.
    assert await deliver(client, admin.headers) >= 2
    polled = (await client.get(f"/v1/payments/{payment['id']}", headers=access)).json()
    assert (polled["status"], polled["refunded_amount"]) == ("refunded", 5500)
    events = (await client.get(f"/v1/orders/{order['id']}/events", headers=access)).json()
    kinds = [e["kind"] for e in events]
    assert kinds[:2] == ["created", "status_changed"]
    assert {"refund_created", "refund_succeeded"} <= set(kinds)
    movements = (await client.get("/v1/inventory/TEA/movements", headers=admin.headers)).json()[
        "data"
    ]
    assert [m["kind"] for m in movements] == ["initial", "hold", "commit", "return"]
