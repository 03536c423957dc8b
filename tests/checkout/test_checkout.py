"""Checkout over HTTP: one open checkout per cart, re-pricing with the drift tolerance, all-or-
nothing holds, cancel, expiry by the sweeper, coupons, failed and late payments."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from kassa import clock
from tests.checkout.flow import (
    DECLINED_CARD,
    NO_FUNDS_CARD,
    cart_with,
    deliver,
    open_shop,
    pay,
    start_checkout,
    stock,
)


async def stats(client, admin) -> dict:
    response = await client.get("/v1/admin/stats?hours=1", headers=admin.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_one_open_checkout_per_cart(client, admin, make_product) -> None:
    await open_shop(client, admin.headers)
    await make_product(("PEN", 5))
    cart, access = await cart_with(client, ("PEN", 1))
    first = await start_checkout(client, cart, access)
    assert first.status_code == 201, first.text
    second = await start_checkout(client, cart, access)
    assert second.status_code == 409
    assert second.json()["code"] == "checkout_active"
    assert second.json()["checkout_id"] == first.json()["id"]
    assert (await stock(client, "PEN", admin.headers))["reserved"] == 1


async def test_not_enough_stock_holds_nothing_and_is_recorded(client, admin, make_product) -> None:
    await open_shop(client, admin.headers)
    await make_product(("INK", 3), ("NIB", 1))
    cart, access = await cart_with(client, ("INK", 2), ("NIB", 1))
    # Someone else buys the last nib between add-to-cart and checkout.
    other, other_access = await cart_with(client, ("NIB", 1))
    assert (await start_checkout(client, other, other_access)).status_code == 201
    response = await start_checkout(client, cart, access)
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "insufficient_stock"
    assert body["errors"] == [{"sku": "NIB", "requested": 1, "available": 0}]
    assert (await stock(client, "INK", admin.headers))["reserved"] == 0  # all or nothing
    # The cart is not left locked by the failed attempt.
    changed = await client.post(
        f"/v1/carts/{cart['id']}/items", json={"sku": "INK", "quantity": 1}, headers=access
    )
    assert changed.status_code == 200, changed.text
    seen = await stats(client, admin)
    assert (seen["started"], seen["failed"]) == (2, 1)
    assert seen["failures_by_phase"] == {"hold": 1}
    assert seen["failures_by_code"] == {"insufficient_stock": 1}


async def test_price_drift_inside_the_tolerance_uses_the_new_price(
    client, admin, settings, make_product
) -> None:
    settings.price_drift_tolerance_percent = 5.0
    await open_shop(client, admin.headers)
    product = await make_product(("CAP", 5), price=1000)
    cart, access = await cart_with(client, ("CAP", 2))
    variant = product["variants"][0]["id"]
    response = await client.patch(
        f"/v1/variants/{variant}", json={"price_amount": 1040}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    response = await start_checkout(client, cart, access)
    assert response.status_code == 201, response.text
    checkout = response.json()
    assert checkout["lines"][0]["unit_price_amount"] == 1040
    assert checkout["subtotal_amount"] == 2080
    assert checkout["price_changes"] == [
        {"sku": "CAP", "old_price_amount": 1000, "new_price_amount": 1040}
    ]


async def test_price_drift_beyond_the_tolerance_is_refused_then_accepted(
    client, admin, settings, make_product
) -> None:
    settings.price_drift_tolerance_percent = 5.0
    await open_shop(client, admin.headers)
    product = await make_product(("HAT", 5), price=1000)
    cart, access = await cart_with(client, ("HAT", 1))
    variant = product["variants"][0]["id"]
    await client.patch(
        f"/v1/variants/{variant}", json={"price_amount": 1100}, headers=admin.headers
    )
    response = await start_checkout(client, cart, access)
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "price_changed"
    assert body["errors"] == [{"sku": "HAT", "old_price_amount": 1000, "new_price_amount": 1100}]
    assert (await stock(client, "HAT", admin.headers))["reserved"] == 0
    assert (await stats(client, admin))["price_drift_rejections"] == 1
    # The buyer has been shown the new price; checking out again accepts it.
    response = await start_checkout(client, cart, access)
    assert response.status_code == 201, response.text
    assert response.json()["subtotal_amount"] == 1100


async def test_cancel_releases_the_hold_and_unlocks_the_cart(client, admin, make_product) -> None:
    await open_shop(client, admin.headers)
    await make_product(("BAG", 4))
    cart, access = await cart_with(client, ("BAG", 3))
    checkout = (await start_checkout(client, cart, access)).json()
    assert (await stock(client, "BAG", admin.headers))["reserved"] == 3
    response = await client.post(f"/v1/checkouts/{checkout['id']}/cancel", headers=access)
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "cancelled"
    assert response.json()["hold"]["state"] == "released"
    assert (await stock(client, "BAG", admin.headers))["reserved"] == 0
    again = await client.post(f"/v1/checkouts/{checkout['id']}/cancel", headers=access)
    assert again.status_code == 200 and again.json()["state"] == "cancelled"
    changed = await client.post(
        f"/v1/carts/{cart['id']}/items", json={"sku": "BAG", "quantity": 1}, headers=access
    )
    assert changed.status_code == 200, changed.text
    # Only the buyer (or an admin) reaches the checkout.
    client.cookies.clear()  # the cart's cookie is in this client's jar
    stranger = await client.post(f"/v1/checkouts/{checkout['id']}/cancel")
    assert stranger.status_code == 404


async def test_cancelling_a_completed_checkout_is_a_conflict(client, admin, make_product) -> None:
    await open_shop(client, admin.headers)
    await make_product(("BOX", 4))
    cart, access = await cart_with(client, ("BOX", 1))
    checkout = (await start_checkout(client, cart, access)).json()
    await pay(client, checkout["payment"]["id"])
    await deliver(client, admin.headers)
    response = await client.post(f"/v1/checkouts/{checkout['id']}/cancel", headers=access)
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_transition"


async def test_sweeper_expires_checkouts_and_their_holds(client, admin, make_product) -> None:
    await open_shop(client, admin.headers)
    await make_product(("CUP", 2))
    cart, access = await cart_with(client, ("CUP", 2))
    checkout = (await start_checkout(client, cart, access)).json()
    assert 890 <= checkout["seconds_left"] <= 900
    clock.advance(timedelta(seconds=901))
    response = await client.post("/v1/admin/jobs/sweep", headers=admin.headers)
    assert response.json()["expired_checkouts"] == 1
    assert response.json()["released_units"] == 2
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert (seen["state"], seen["seconds_left"], seen["hold"]["state"]) == ("expired", 0, "expired")
    assert (await stock(client, "CUP", admin.headers))["reserved"] == 0
    # The cart is free again and can check out anew.
    assert (await start_checkout(client, cart, access)).status_code == 201
    assert (await stats(client, admin))["expired"] == 1


async def test_a_checkout_past_its_time_does_not_block_its_cart(
    client, admin, make_product
) -> None:
    await open_shop(client, admin.headers)
    await make_product(("JAR", 2))
    cart, access = await cart_with(client, ("JAR", 2))
    first = (await start_checkout(client, cart, access)).json()
    clock.advance(timedelta(seconds=901))  # no sweep has run
    second = await start_checkout(client, cart, access)
    assert second.status_code == 201, second.text
    old = (await client.get(f"/v1/checkouts/{first['id']}", headers=access)).json()
    assert old["state"] == "expired"
    assert (await stock(client, "JAR", admin.headers))["reserved"] == 2


async def test_coupon_use_is_counted_and_given_back(client, admin, make_product) -> None:
    await open_shop(client, admin.headers)
    await make_product(("MAP", 5), price=2000)
    response = await client.post(
        "/v1/admin/coupons",
        json={"code": "ONCE", "kind": "percent", "value": 10, "usage_limit": 1},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    cart1, access1 = await cart_with(client, ("MAP", 1))
    cart2, access2 = await cart_with(client, ("MAP", 1))
    first = await start_checkout(client, cart1, access1, coupon_code="once")
    assert first.status_code == 201, first.text
    assert first.json()["discount_amount"] == 200
    refused = await start_checkout(client, cart2, access2, coupon_code="ONCE")
    assert refused.status_code == 422
    assert (refused.json()["code"], refused.json()["reason"]) == (
        "coupon_not_applicable",
        "used_up",
    )
    await client.post(f"/v1/checkouts/{first.json()['id']}/cancel", headers=access1)
    again = await start_checkout(client, cart2, access2, coupon_code="ONCE")
    assert again.status_code == 201, again.text


async def test_bad_checkout_requests(client, admin, make_product) -> None:
    await open_shop(client, admin.headers)
    await make_product(("RUG", 5))
    empty, empty_access = await cart_with(client)
    response = await start_checkout(client, empty, empty_access)
    assert response.status_code == 422 and response.json()["code"] == "validation_error"
    cart, _ = await cart_with(client, ("RUG", 1))
    client.cookies.clear()
    assert (await start_checkout(client, cart, {})).status_code == 404  # not your cart
    cart, access = await cart_with(client, ("RUG", 1))
    nowhere = await start_checkout(
        client,
        cart,
        access,
        shipping_address={
            "name": "A",
            "line1": "B",
            "city": "C",
            "postal_code": "1",
            "country": "ZZ",
        },
    )
    assert nowhere.status_code == 422
    bad = await client.post(
        "/v1/checkouts",
        json={"cart_id": cart["id"], "email": "not-an-email", "shipping_address": {}},
        headers=access,
    )
    assert bad.status_code == 422
    fields = {e["field"] for e in bad.json()["errors"]}
    assert "email" in fields and "shipping_address.name" in fields


async def test_declined_payment_keeps_the_checkout_open_for_another_card(
    client, admin, make_product
) -> None:
    await open_shop(client, admin.headers)
    await make_product(("KEY", 3))
    cart, access = await cart_with(client, ("KEY", 1))
    checkout = (await start_checkout(client, cart, access)).json()
    payment_id = checkout["payment"]["id"]
    assert (await pay(client, payment_id, DECLINED_CARD)).status_code == 202
    await deliver(client, admin.headers)
    polled = (await client.get(f"/v1/payments/{payment_id}", headers=access)).json()
    assert (polled["status"], polled["failure_code"]) == ("failed", "card_declined")
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert (seen["state"], seen["hold"]["state"]) == ("open", "active")
    assert (await pay(client, payment_id, NO_FUNDS_CARD)).status_code == 202
    await deliver(client, admin.headers)
    polled = (await client.get(f"/v1/payments/{payment_id}", headers=access)).json()
    assert polled["failure_code"] == "insufficient_funds"
    assert (await pay(client, payment_id)).status_code == 202
    await deliver(client, admin.headers)
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "completed" and seen["order_id"]
    assert (await stats(client, admin))["payment_failures"] == 2


async def test_failed_payment_releases_when_configured(
    client, admin, settings, make_product
) -> None:
    settings.release_on_payment_failure = True
    await open_shop(client, admin.headers)
    await make_product(("LID", 3))
    cart, access = await cart_with(client, ("LID", 2))
    checkout = (await start_checkout(client, cart, access)).json()
    await pay(client, checkout["payment"]["id"], DECLINED_CARD)
    await deliver(client, admin.headers)
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert (seen["state"], seen["hold"]["state"]) == ("cancelled", "released")
    assert (await stock(client, "LID", admin.headers))["reserved"] == 0


async def test_hold_is_extended_while_the_payment_is_processing(
    client, admin, make_product
) -> None:
    await open_shop(client, admin.headers)
    await make_product(("FAN", 3))
    cart, access = await cart_with(client, ("FAN", 1))
    checkout = (await start_checkout(client, cart, access)).json()
    clock.advance(timedelta(seconds=600))
    assert (await pay(client, checkout["payment"]["id"])).status_code == 202
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    # Up to the maximum TTL (3,600 s) from when the hold was made.
    assert 2990 <= seen["seconds_left"] <= 3000
    clock.advance(timedelta(seconds=1000))  # past the usual 900 s
    await client.post("/v1/admin/jobs/sweep", headers=admin.headers)
    await deliver(client, admin.headers)
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "completed", seen


async def test_paying_an_expired_checkout_is_refused(client, admin, make_product) -> None:
    await open_shop(client, admin.headers)
    await make_product(("OAR", 3))
    cart, access = await cart_with(client, ("OAR", 1))
    checkout = (await start_checkout(client, cart, access)).json()
    clock.advance(timedelta(seconds=901))
    response = await pay(client, checkout["payment"]["id"])
    assert response.status_code == 409 and response.json()["code"] == "checkout_expired"


async def test_late_payment_holds_the_stock_again_when_it_can(client, admin, make_product) -> None:
    await open_shop(client, admin.headers)
    await make_product(("VAN", 3))
    cart, access = await cart_with(client, ("VAN", 2))
    checkout = (await start_checkout(client, cart, access)).json()
    await pay(client, checkout["payment"]["id"])
    clock.advance(timedelta(seconds=3601))  # past even the extended hold; the webhook is slow
    sweep = await client.post("/v1/admin/jobs/sweep", headers=admin.headers)
    assert sweep.json()["expired_checkouts"] == 1
    assert (await stock(client, "VAN", admin.headers))["reserved"] == 0
    await deliver(client, admin.headers)
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "completed" and seen["order_id"]
    assert "held again" in seen["outcome_reason"]
    van = await stock(client, "VAN", admin.headers)
    assert (van["on_hand"], van["reserved"]) == (1, 0)


async def test_late_payment_without_stock_is_refunded(
    client, admin, make_product, settings
) -> None:
    settings.reconcile_after_seconds = 10**6  # the webhook is late, and nobody asks meanwhile
    await open_shop(client, admin.headers)
    await make_product(("SKI", 2))
    cart, access = await cart_with(client, ("SKI", 2))
    checkout = (await start_checkout(client, cart, access)).json()
    payment_id = checkout["payment"]["id"]
    await pay(client, payment_id)
    clock.advance(timedelta(seconds=3601))
    await client.post("/v1/admin/jobs/sweep", headers=admin.headers)
    # Someone else buys the skis meanwhile.
    other, other_access = await cart_with(client, ("SKI", 1))
    assert (await start_checkout(client, other, other_access)).status_code == 201
    await deliver(client, admin.headers)
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "expired" and seen["order_id"] is None
    assert "stock_unavailable_after_expiry" in seen["outcome_reason"]
    polled = (await client.get(f"/v1/payments/{payment_id}", headers=access)).json()
    assert (polled["status"], polled["refunded_amount"]) == ("refunded", polled["amount"])
    assert (await client.get("/v1/orders", headers=admin.headers)).json()["data"] == []
    assert (await stock(client, "SKI", admin.headers))["reserved"] == 1  # the other buyer's
    assert (await stats(client, admin))["late_payments_refunded"] == 1


async def test_coupon_limit_holds_under_concurrent_checkouts(client, admin, make_product) -> None:
    await open_shop(client, admin.headers)
    await make_product(("COIN", 100), price=1000)
    response = await client.post(
        "/v1/admin/coupons",
        json={"code": "FIVE", "kind": "fixed", "value": 300, "currency": "usd", "usage_limit": 5},
        headers=admin.headers,
    )
    assert response.status_code == 201, response.text
    carts = [await cart_with(client, ("COIN", 1)) for _ in range(30)]
    responses = await asyncio.gather(
        *(start_checkout(client, cart, access, coupon_code="FIVE") for cart, access in carts)
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [201] * 5 + [422] * 25, codes
    assert all(r.json()["discount_amount"] == 300 for r in responses if r.status_code == 201)
    coupons = (await client.get("/v1/admin/coupons", headers=admin.headers)).json()["data"]
    assert [(c["code"], c["times_used"]) for c in coupons] == [("FIVE", 5)]
    assert (await stock(client, "COIN", admin.headers))["reserved"] == 5  # refused ones hold none


async def test_a_cart_changed_after_its_checkout_lapsed_checks_out_again(
    client, admin, make_product
) -> None:
    await open_shop(client, admin.headers)
    await make_product(("PEG", 5))
    await client.post(
        "/v1/admin/coupons",
        json={"code": "ONE", "kind": "percent", "value": 10, "usage_limit": 1},
        headers=admin.headers,
    )
    cart, access = await cart_with(client, ("PEG", 1))
    first = (await start_checkout(client, cart, access, coupon_code="ONE")).json()
    clock.advance(timedelta(seconds=901))  # no sweep runs
    changed = await client.post(
        f"/v1/carts/{cart['id']}/items", json={"sku": "PEG", "quantity": 1}, headers=access
    )
    assert changed.status_code == 200, changed.text
    again = await start_checkout(client, cart, access, coupon_code="ONE")
    assert again.status_code == 201, again.text  # the lapsed one ended, its coupon use back
    assert again.json()["lines"][0]["quantity"] == 2
    old = (await client.get(f"/v1/checkouts/{first['id']}", headers=access)).json()
    assert old["state"] == "expired"


async def test_a_late_payment_does_not_close_a_cart_changed_meanwhile(
    client, admin, make_product
) -> None:
    await open_shop(client, admin.headers)
    await make_product(("NUT", 5))
    cart, access = await cart_with(client, ("NUT", 1))
    checkout = (await start_checkout(client, cart, access)).json()
    await pay(client, checkout["payment"]["id"], access=access)
    clock.advance(timedelta(seconds=3601))
    changed = await client.post(
        f"/v1/carts/{cart['id']}/items", json={"sku": "NUT", "quantity": 2}, headers=access
    )
    assert changed.status_code == 200, changed.text
    await deliver(client, admin.headers)  # the late success: stock held again, an order
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "completed"
    assert (await client.get(f"/v1/carts/{cart['id']}", headers=access)).json()["state"] == "open"
