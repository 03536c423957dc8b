"""Razorpay through the official SDK (run off the event loop), against a local stand-in of its
API (fake_razorpay.py: key id and secret checked) and webhooks signed the way Razorpay signs
them, in a shop that sells in INR: purchase with Checkout.js's confirmation, webhooks, capture
of an authorized payment, refunds, failures, forgeries, a wrong amount, confirmation, webhook
and reconcile racing, and an interrupted start that finds its order again."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from kassa import clock
from kassa.checkout import recovery
from kassa.orders.models import Order
from kassa.payments.models import Refund, WebhookEvent
from tests.checkout.flow import ADDRESS, cart_with, count, deliver, rows, stock
from tests.providers.fake_razorpay import KEY_ID, WEBHOOK_SECRETS, FakeRazorpay, signed

WEBHOOK = "/v1/webhooks/razorpay"
INDIA = {**ADDRESS, "city": "Pune", "postal_code": "411001", "country": "IN"}


@pytest.fixture
def shop_currency() -> str:
    return "inr"


async def open_indian_shop(client, admin, make_product) -> None:
    for path, body in (
        ("/v1/admin/shipping-rates/in", {"amount": 4900, "currency": "inr"}),
        ("/v1/admin/tax-rates/in", {"basis_points": 1800}),
    ):
        response = await client.put(path, json=body, headers=admin.headers)
        assert response.status_code == 200, response.text
    await make_product(("CHAI", 10), price=29900)


async def razorpay_checkout(client, admin, make_product, **extra):
    await open_indian_shop(client, admin, make_product)
    cart, access = await cart_with(client, ("CHAI", 2))
    body = {
        "cart_id": cart["id"],
        "email": "ada@example.in",
        "shipping_address": INDIA,
        "provider": "razorpay",
        **extra,
    }
    response = await client.post("/v1/checkouts", json=body, headers=access)
    assert response.status_code == 201, response.text
    return response.json(), access


async def send(client, event: dict, *, secret: str = WEBHOOK_SECRETS[1], event_id=None) -> dict:
    body, headers = signed(event, secret, event_id=event_id)
    response = await client.post(WEBHOOK, content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def confirm(client, checkout, access, payment_id: str, signature: str):
    return await client.post(
        f"/v1/checkouts/{checkout['id']}/confirm",
        json={"provider_payment_id": payment_id, "signature": signature},
        headers=access,
    )


async def test_an_inr_purchase_confirmed_by_checkout_js(
    client, admin, make_product, fake_razorpay_api: FakeRazorpay, db
) -> None:
    checkout, access = await razorpay_checkout(client, admin, make_product)
    # 2 x 299.00 + 49.00 shipping + 18 % GST on both, in paise.
    assert checkout["currency"] == "inr"
    assert (checkout["subtotal_amount"], checkout["shipping_amount"]) == (59800, 4900)
    payment = checkout["payment"]
    assert payment["provider"] == "razorpay" and payment["key_id"] == KEY_ID
    order_id = payment["provider_reference"]
    assert payment["order_id"] == order_id
    assert (payment["amount"], payment["currency"]) == (checkout["total_amount"], "inr")
    rzp_order = fake_razorpay_api.orders[order_id]
    assert (rzp_order["amount"], rzp_order["currency"]) == (checkout["total_amount"], "INR")
    assert rzp_order["receipt"] == checkout["id"]
    assert rzp_order["notes"]["kassa_payment_id"] == payment["id"]
    paid_id, signature = fake_razorpay_api.pay(order_id)
    response = await confirm(client, checkout, access, paid_id, signature)
    assert response.status_code == 200, response.text
    confirmed = response.json()
    assert confirmed["state"] == "completed" and confirmed["order_id"]
    again = await confirm(client, checkout, access, paid_id, signature)
    assert again.json()["order_id"] == confirmed["order_id"]  # idempotent
    # Razorpay's own webhooks for the same payment change nothing more.
    for kind in ("payment.captured", "order.paid"):
        assert (await send(client, fake_razorpay_api.event(kind, paid_id)))["outcome"] == (
            "processed"
        )
    assert await count(db, Order) == 1
    order = (await client.get(f"/v1/orders/{confirmed['order_id']}", headers=access)).json()
    assert (order["currency"], order["total_amount"]) == ("inr", checkout["total_amount"])
    chai = await stock(client, "CHAI", admin.headers)
    assert (chai["on_hand"], chai["reserved"]) == (8, 0)


async def test_rates_and_fixed_coupons_apply_only_in_their_own_currency(
    client, admin, make_product
) -> None:
    await client.put(
        "/v1/admin/shipping-rates/in",
        json={"amount": 500, "currency": "usd"},
        headers=admin.headers,
    )
    await make_product(("CHAI", 10), price=29900)
    cart, access = await cart_with(client, ("CHAI", 1))
    body = {"cart_id": cart["id"], "email": "a@example.in", "shipping_address": INDIA}
    response = await client.post("/v1/checkouts", json=body, headers=access)
    assert response.status_code == 422  # only a USD rate: never added to INR as if paise
    await client.put(
        "/v1/admin/shipping-rates/in",
        json={"amount": 4900, "currency": "inr"},
        headers=admin.headers,
    )
    await client.post(
        "/v1/admin/coupons",
        json={"code": "FIVEUSD", "kind": "fixed", "value": 500, "currency": "usd"},
        headers=admin.headers,
    )
    response = await client.post(
        "/v1/checkouts", json={**body, "coupon_code": "FIVEUSD"}, headers=access
    )
    assert response.status_code == 422 and "currency" in response.text
    response = await client.post("/v1/checkouts", json=body, headers=access)
    assert response.status_code == 201
    assert response.json()["shipping_amount"] == 4900


async def test_a_bad_confirmation_signature_changes_nothing(
    client, admin, make_product, fake_razorpay_api: FakeRazorpay, db
) -> None:
    checkout, access = await razorpay_checkout(client, admin, make_product)
    order_id = checkout["payment"]["provider_reference"]
    paid_id, signature = fake_razorpay_api.pay(order_id)
    for bad_id, bad_signature in ((paid_id, "0" * 64), ("pay_other", signature)):
        response = await confirm(client, checkout, access, bad_id, bad_signature)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_signature"
    assert await count(db, Order) == 0
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "open"


async def test_webhook_confirmation_and_reconcile_racing_make_one_order(
    client, admin, make_product, fake_razorpay_api: FakeRazorpay, stripe_settings, db
) -> None:
    checkout, access = await razorpay_checkout(client, admin, make_product)
    order_id = checkout["payment"]["provider_reference"]
    paid_id, signature = fake_razorpay_api.pay(order_id)
    clock.advance(timedelta(seconds=stripe_settings.reconcile_after_seconds + 1))
    captured = fake_razorpay_api.event("payment.captured", paid_id)
    body, headers = signed(captured, event_id="evt_rzp_captured")
    answers = await asyncio.gather(
        *(client.post(WEBHOOK, content=body, headers=headers) for _ in range(10)),
        *(confirm(client, checkout, access, paid_id, signature) for _ in range(5)),
        client.post("/v1/admin/jobs/reconcile", headers=admin.headers),
        client.post("/v1/admin/jobs/reconcile", headers=admin.headers),
    )
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    webhook_outcomes = sorted(a.json()["outcome"] for a in answers[:10])
    assert webhook_outcomes == ["duplicate"] * 9 + ["processed"]
    assert await count(db, Order) == 1
    chai = await stock(client, "CHAI", admin.headers)
    assert (chai["on_hand"], chai["reserved"]) == (8, 0)


async def test_a_failed_payment_then_an_authorized_one_that_kassa_captures(
    client, admin, make_product, fake_razorpay_api: FakeRazorpay, db
) -> None:
    checkout, access = await razorpay_checkout(client, admin, make_product)
    order_id = checkout["payment"]["provider_reference"]
    failed_id, _ = fake_razorpay_api.pay(order_id, status="failed")
    await send(client, fake_razorpay_api.event("payment.failed", failed_id))
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert (seen["state"], seen["payment"]["status"]) == ("open", "failed")
    held_id, _ = fake_razorpay_api.pay(order_id, status="authorized")
    assert (await send(client, fake_razorpay_api.event("payment.authorized", held_id)))[
        "outcome"
    ] == "processed"
    await deliver(client, admin.headers)  # the capture, outside any transaction
    assert fake_razorpay_api.payments[held_id]["status"] == "captured"
    assert ("POST", f"/v1/payments/{held_id}/capture") in fake_razorpay_api.requests
    await send(client, fake_razorpay_api.event("payment.captured", held_id))
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "completed"


async def test_refunds_full_and_partial_and_refused(
    client, admin, make_product, fake_razorpay_api: FakeRazorpay, db
) -> None:
    checkout, access = await razorpay_checkout(client, admin, make_product)
    paid_id, signature = fake_razorpay_api.pay(checkout["payment"]["provider_reference"])
    order_id = (await confirm(client, checkout, access, paid_id, signature)).json()["order_id"]
    response = await client.post(
        f"/v1/orders/{order_id}/refunds",
        json={"amount": 10000, "reason": "cold"},
        headers=admin.headers,
    )
    assert response.status_code in (200, 201), response.text
    app_refund_job = await deliver(client, admin.headers)
    assert app_refund_job >= 1
    [made] = fake_razorpay_api.refunds.values()
    [refund] = await rows(db, Refund)
    assert (made["amount"], made["notes"]) == (10000, {"kassa_refund_id": refund.id})
    assert refund.provider_reference == made["id"] and refund.status == "succeeded"
    processed = fake_razorpay_api.event("refund.processed", refund_id=made["id"])
    await send(client, processed)  # Razorpay's own word: nothing more to do
    fake_razorpay_api.refuse_refunds = True
    await client.post(
        f"/v1/orders/{order_id}/refunds", json={"reason": "rest"}, headers=admin.headers
    )
    await deliver(client, admin.headers)
    order = (await client.get(f"/v1/orders/{order_id}", headers=admin.headers)).json()
    assert (order["payment_status"], order["refunded_amount"]) == ("partially_refunded", 10000)
    assert await count(db, Refund, Refund.status == "failed") == 1
    fake_razorpay_api.refuse_refunds = False
    await client.post(
        f"/v1/orders/{order_id}/refunds", json={"reason": "rest"}, headers=admin.headers
    )
    await deliver(client, admin.headers)
    order = (await client.get(f"/v1/orders/{order_id}", headers=admin.headers)).json()
    assert (order["payment_status"], order["refunded_amount"]) == (
        "refunded",
        order["total_amount"],
    )
    assert sum(r["amount"] for r in fake_razorpay_api.refunds.values()) == order["total_amount"]


async def test_forged_tampered_replayed_and_rotated(
    client, admin, make_product, fake_razorpay_api: FakeRazorpay, db
) -> None:
    checkout, _ = await razorpay_checkout(client, admin, make_product)
    paid_id, _ = fake_razorpay_api.pay(checkout["payment"]["provider_reference"])
    event = fake_razorpay_api.event("payment.captured", paid_id)
    body, headers = signed(event, event_id="evt_rzp_1")
    for content, sent in (
        (body, {k: v for k, v in headers.items() if k != "x-razorpay-signature"}),
        (body + b" ", headers),
        signed(event, "someone_elses_secret", event_id="evt_rzp_1"),
    ):
        response = await client.post(WEBHOOK, content=content, headers=sent)
        assert (response.status_code, response.json()["code"]) == (400, "invalid_signature")
    no_id = {k: v for k, v in headers.items() if k != "x-razorpay-event-id"}
    assert (await client.post(WEBHOOK, content=body, headers=no_id)).status_code == 422
    assert await count(db, WebhookEvent) == 0 and await count(db, Order) == 0
    answers = await asyncio.gather(
        *(client.post(WEBHOOK, content=body, headers=headers) for _ in range(50))
    )
    assert sorted(a.json()["outcome"] for a in answers) == ["duplicate"] * 49 + ["processed"]
    old_secret = await send(client, event, secret=WEBHOOK_SECRETS[0], event_id="evt_rzp_1")
    assert old_secret["outcome"] == "duplicate"  # the retiring secret still verifies
    assert await count(db, Order) == 1


async def test_a_capture_for_a_wrong_amount_is_held_for_review(
    client, admin, make_product, fake_razorpay_api: FakeRazorpay, db
) -> None:
    checkout, access = await razorpay_checkout(client, admin, make_product)
    paid_id, _ = fake_razorpay_api.pay(checkout["payment"]["provider_reference"], amount=100)
    await send(client, fake_razorpay_api.event("payment.captured", paid_id))
    polled = (await client.get(f"/v1/payments/{checkout['payment']['id']}", headers=access)).json()
    assert polled["status"] == "requires_review"
    assert await count(db, Order) == 0
    await deliver(client, admin.headers)
    [given_back] = fake_razorpay_api.refunds.values()
    assert (given_back["amount"], given_back["payment_id"]) == (100, paid_id)


async def test_razorpay_down_gives_502_and_an_interrupted_start_finds_its_order(
    client, admin, make_product, fake_razorpay_api: FakeRazorpay, stripe_settings, db
) -> None:
    from kassa.carts.service import CartAccess
    from kassa.checkout import service
    from kassa.checkout.phases import PhaseLog

    await open_indian_shop(client, admin, make_product)
    cart, access = await cart_with(client, ("CHAI", 1))
    fake_razorpay_api.down = True
    body = {
        "cart_id": cart["id"],
        "email": "a@example.in",
        "shipping_address": INDIA,
        "provider": "razorpay",
    }
    response = await client.post("/v1/checkouts", json=body, headers=access)
    assert (response.status_code, response.json()["code"]) == (502, "provider_unavailable")
    assert (await stock(client, "CHAI", admin.headers))["reserved"] == 0
    fake_razorpay_api.down = False
    # A start cut off after Razorpay made the order, before Kassa stored its answer.
    made = await db.run(
        lambda s: service.start_checkout(
            s,
            stripe_settings,
            PhaseLog(),
            access=CartAccess(None, cart["token"]),
            cart_id=cart["id"],
            email="a@example.in",
            address=service.Address(**{**INDIA, "country": "in"}),
            coupon_code=None,
            provider_name="razorpay",
        )
    )
    provider = client._transport.app.state.providers.get("razorpay")
    assert made.payment is not None
    lost = await provider.create_payment(
        payment_id=made.payment.id,
        checkout_id=made.checkout.id,
        amount=made.payment.amount,
        currency="inr",
    )
    clock.advance(recovery.interrupted_after(stripe_settings) + timedelta(seconds=1))
    await client.post("/v1/admin/jobs/sweep", headers=admin.headers)
    seen = (await client.get(f"/v1/checkouts/{made.checkout.id}", headers=access)).json()
    assert seen["state"] == "open"
    assert seen["payment"]["provider_reference"] == lost.provider_reference  # the same order
    assert [o["receipt"] for o in fake_razorpay_api.orders.values()].count(made.checkout.id) == 1


async def test_razorpay_down_during_confirm_is_a_502_and_odd_signatures_a_400(
    client, admin, make_product, fake_razorpay_api: FakeRazorpay
) -> None:
    checkout, access = await razorpay_checkout(client, admin, make_product)
    paid_id, signature = fake_razorpay_api.pay(checkout["payment"]["provider_reference"])
    fake_razorpay_api.down = True
    response = await confirm(client, checkout, access, paid_id, signature)
    assert (response.status_code, response.json()["code"]) == (502, "provider_unavailable")
    fake_razorpay_api.down = False
    response = await confirm(client, checkout, access, paid_id, "\u00e9" * 64)
    assert (response.status_code, response.json()["code"]) == (400, "invalid_signature")
    body, headers = signed(fake_razorpay_api.event("payment.captured", paid_id))
    odd = {**headers, "x-razorpay-signature": "\u00e9".encode() * 8}  # not ASCII on the wire
    response = await client.post(WEBHOOK, content=body, headers=odd)
    assert (response.status_code, response.json()["code"]) == (400, "invalid_signature")
    assert (await confirm(client, checkout, access, paid_id, signature)).json()["state"] == (
        "completed"
    )
