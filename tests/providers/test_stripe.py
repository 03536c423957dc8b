"""Stripe through the official SDK, against a local stand-in of its API (fake_stripe.py: the
secret key checked, idempotency keys honoured) and webhooks signed with Stripe's own scheme:
purchase, decline, refunds (full, partial), cancel, dispute, refund failure, events out of order
and replayed, forgeries, a wrong amount, the provider down or slow, reconcile."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from kassa import clock
from kassa.orders.models import Order
from kassa.outbox.models import OutboxMessage
from kassa.payments.models import Payment, Refund, WebhookEvent
from tests.checkout.flow import cart_with, count, deliver, open_shop, rows, start_checkout, stock
from tests.providers.fake_stripe import PUBLISHABLE_KEY, WEBHOOK_SECRETS, FakeStripe, signed

WEBHOOK = "/v1/webhooks/stripe"


async def stripe_checkout(client, admin, make_product, sku: str = "BOOT", quantity: int = 1):
    await open_shop(client, admin.headers)
    await make_product((sku, 5), price=4000)
    cart, access = await cart_with(client, (sku, quantity))
    response = await start_checkout(client, cart, access, provider="stripe")
    assert response.status_code == 201, response.text
    return response.json(), access


async def send(client, event: dict, secret: str = WEBHOOK_SECRETS[1]) -> dict:
    body, headers = signed(event, secret)
    response = await client.post(WEBHOOK, content=body, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def order_of(client, checkout: dict, access: dict) -> dict:
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["order_id"], seen
    return (await client.get(f"/v1/orders/{seen['order_id']}", headers=access)).json()


async def test_a_purchase_with_the_payment_element(
    client, admin, make_product, fake_stripe_api: FakeStripe, db
) -> None:
    checkout, access = await stripe_checkout(client, admin, make_product)
    payment = checkout["payment"]
    assert payment["provider"] == "stripe" and payment["status"] == "pending"
    assert payment["provider_reference"].startswith("pi_")
    assert payment["client_secret"] == f"{payment['provider_reference']}_secret_local"
    assert payment["publishable_key"] == PUBLISHABLE_KEY
    intent = fake_stripe_api.intents[payment["provider_reference"]]
    assert (intent["amount"], intent["currency"]) == (checkout["total_amount"], "usd")
    assert intent["metadata"] == {
        "kassa_payment_id": payment["id"],
        "kassa_checkout_id": checkout["id"],
    }
    assert ("POST", "/v1/payment_intents", f"kassa-payment-{payment['id']}") in (
        fake_stripe_api.requests
    )
    assert (await send(client, fake_stripe_api.pay(intent["id"])))["outcome"] == "processed"
    order = await order_of(client, checkout, access)
    assert (order["status"], order["payment_status"]) == ("paid", "paid")
    boot = await stock(client, "BOOT", admin.headers)
    assert (boot["on_hand"], boot["reserved"]) == (4, 0)


async def test_a_decline_leaves_the_checkout_open_for_another_card(
    client, admin, make_product, fake_stripe_api: FakeStripe
) -> None:
    checkout, access = await stripe_checkout(client, admin, make_product)
    intent_id = checkout["payment"]["provider_reference"]
    await send(client, fake_stripe_api.decline(intent_id, "insufficient_funds"))
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert (seen["state"], seen["payment"]["status"]) == ("open", "failed")
    polled = (await client.get(f"/v1/payments/{checkout['payment']['id']}", headers=access)).json()
    assert (polled["status"], polled["failure_code"]) == ("failed", "insufficient_funds")
    await send(client, fake_stripe_api.pay(intent_id))
    assert (await order_of(client, checkout, access))["status"] == "paid"


async def test_refunds_partial_then_full_and_cancel(
    client, admin, make_product, fake_stripe_api: FakeStripe, db
) -> None:
    checkout, access = await stripe_checkout(client, admin, make_product)
    intent_id = checkout["payment"]["provider_reference"]
    await send(client, fake_stripe_api.pay(intent_id))
    order = await order_of(client, checkout, access)
    response = await client.post(
        f"/v1/orders/{order['id']}/refunds",
        json={"amount": 1000, "reason": "scuffed"},
        headers=admin.headers,
    )
    assert response.status_code in (200, 201), response.text
    await deliver(client, admin.headers)
    [partial] = fake_stripe_api.refunds.values()
    assert (partial["amount"], partial["payment_intent"]) == (1000, intent_id)
    [refund] = await rows(db, Refund)
    assert partial["metadata"] == {"kassa_refund_id": refund.id}
    assert ("POST", "/v1/refunds", f"kassa-refund-{refund.id}") in fake_stripe_api.requests
    assert (refund.status, refund.provider_reference) == ("succeeded", partial["id"])
    response = await client.post(
        f"/v1/orders/{order['id']}/cancel", json={"reason": "changed my mind"}, headers=access
    )
    assert response.status_code == 200, response.text
    await deliver(client, admin.headers)
    amounts = sorted(r["amount"] for r in fake_stripe_api.refunds.values())
    assert amounts == sorted([1000, order["total_amount"] - 1000])
    order = (await client.get(f"/v1/orders/{order['id']}", headers=access)).json()
    assert (order["status"], order["payment_status"]) == ("cancelled", "refunded")
    assert await count(db, Refund, Refund.status == "succeeded") == 2
    assert (await stock(client, "BOOT", admin.headers))["on_hand"] == 5


async def test_a_refund_confirmed_later_by_webhook_even_before_its_reference(
    client, admin, make_product, fake_stripe_api: FakeStripe, db
) -> None:
    fake_stripe_api.refund_status = "pending"
    checkout, access = await stripe_checkout(client, admin, make_product)
    intent_id = checkout["payment"]["provider_reference"]
    await send(client, fake_stripe_api.pay(intent_id))
    order = await order_of(client, checkout, access)
    await client.post(
        f"/v1/orders/{order['id']}/refunds", json={"reason": "late"}, headers=admin.headers
    )
    [refund] = await rows(db, Refund)
    # Stripe's refund.updated overtakes Kassa's own call: it carries Kassa's refund id.
    early = fake_stripe_api.event(
        "refund.updated",
        {
            "id": "re_early",
            "object": "refund",
            "amount": order["total_amount"],
            "currency": "usd",
            "payment_intent": intent_id,
            "status": "succeeded",
            "metadata": {"kassa_refund_id": refund.id},
        },
    )
    assert (await send(client, early))["outcome"] == "processed"
    [refund] = await rows(db, Refund)
    assert (refund.status, refund.provider_reference) == ("succeeded", "re_early")
    await deliver(client, admin.headers)
    assert fake_stripe_api.refunds == {}  # settled already: never asked twice


async def test_a_refund_stripe_refuses_fails_and_never_counts(
    client, admin, make_product, fake_stripe_api: FakeStripe, db
) -> None:
    checkout, access = await stripe_checkout(client, admin, make_product)
    await send(client, fake_stripe_api.pay(checkout["payment"]["provider_reference"]))
    order = await order_of(client, checkout, access)
    fake_stripe_api.refuse_refunds = "charge_disputed"
    await client.post(
        f"/v1/orders/{order['id']}/refunds", json={"reason": "no"}, headers=admin.headers
    )
    await deliver(client, admin.headers)
    [refund] = await rows(db, Refund)
    assert (refund.status, refund.failure_code) == ("failed", "charge_disputed")
    order = (await client.get(f"/v1/orders/{order['id']}", headers=admin.headers)).json()
    assert (order["payment_status"], order["refunded_amount"]) == ("paid", 0)
    # And a refund.failed webhook for a refund that was accepted first.
    fake_stripe_api.refuse_refunds = None
    fake_stripe_api.refund_status = "pending"
    await client.post(
        f"/v1/orders/{order['id']}/refunds", json={"reason": "again"}, headers=admin.headers
    )
    await deliver(client, admin.headers)
    [sent] = fake_stripe_api.refunds.values()
    failed = fake_stripe_api.event(
        "refund.failed", {**sent, "status": "failed", "failure_reason": "expired_or_canceled_card"}
    )
    assert (await send(client, failed))["outcome"] == "processed"
    order = (await client.get(f"/v1/orders/{order['id']}", headers=admin.headers)).json()
    assert (order["payment_status"], order["refunded_amount"]) == ("paid", 0)
    events = (await client.get(f"/v1/orders/{order['id']}/events", headers=admin.headers)).json()
    assert [e["kind"] for e in events].count("refund_failed") == 2


async def test_a_dispute_is_recorded_on_the_order(
    client, admin, make_product, fake_stripe_api: FakeStripe, db
) -> None:
    checkout, access = await stripe_checkout(client, admin, make_product)
    intent_id = checkout["payment"]["provider_reference"]
    await send(client, fake_stripe_api.pay(intent_id))
    assert (await send(client, fake_stripe_api.dispute(intent_id)))["outcome"] == "processed"
    order = await order_of(client, checkout, access)
    events = (await client.get(f"/v1/orders/{order['id']}/events", headers=admin.headers)).json()
    [dispute] = [e for e in events if e["kind"] == "dispute_opened"]
    assert dispute["data"] == {"reason": "fraudulent"}
    [alert] = await rows(db, OutboxMessage, OutboxMessage.kind == "alert")
    assert alert.payload["type"] == "payment.disputed"


async def test_the_same_event_fifty_times_at_once_and_events_out_of_order(
    client, admin, make_product, fake_stripe_api: FakeStripe, db
) -> None:
    checkout, access = await stripe_checkout(client, admin, make_product)
    intent_id = checkout["payment"]["provider_reference"]
    failure = fake_stripe_api.decline(intent_id)
    success = fake_stripe_api.pay(intent_id)
    body, headers = signed(success)
    answers = await asyncio.gather(
        *(client.post(WEBHOOK, content=body, headers=headers) for _ in range(50))
    )
    outcomes = sorted(a.json()["outcome"] for a in answers)
    assert outcomes == ["duplicate"] * 49 + ["processed"]
    await send(client, failure)  # the decline arrives after the success: no effect
    assert await count(db, Order) == 1
    polled = (await client.get(f"/v1/payments/{checkout['payment']['id']}", headers=access)).json()
    assert polled["status"] == "succeeded"


async def test_forged_stale_tampered_and_rotated_signatures(
    client, admin, make_product, fake_stripe_api: FakeStripe, db
) -> None:
    checkout, _ = await stripe_checkout(client, admin, make_product)
    event = fake_stripe_api.pay(checkout["payment"]["provider_reference"])
    body, headers = signed(event)
    stale_body, stale = signed(event, at=int(time.time()) - 301)
    attempts = [
        (body, {}),
        (body, {"stripe-signature": "t=1,v1=deadbeef"}),
        (body.replace(b'"succeeded"', b'"succeeded "'), headers),
        (stale_body, stale),
        signed(event, "whsec_someone_else"),
        (b"\xff\xfe", headers),
    ]
    for content, sent in attempts:
        response = await client.post(WEBHOOK, content=content, headers=sent)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "invalid_signature"
    assert await count(db, WebhookEvent) == 0 and await count(db, Order) == 0
    # Both the secret being retired and the new one are accepted while both are configured.
    assert (await send(client, event, WEBHOOK_SECRETS[0]))["outcome"] == "processed"
    assert (await send(client, event, WEBHOOK_SECRETS[1]))["outcome"] == "duplicate"
    assert await count(db, Order) == 1


async def test_a_success_for_a_wrong_amount_is_held_for_review(
    client, admin, make_product, fake_stripe_api: FakeStripe, db
) -> None:
    checkout, access = await stripe_checkout(client, admin, make_product)
    intent_id = checkout["payment"]["provider_reference"]
    await send(client, fake_stripe_api.pay(intent_id, amount=1))
    polled = (await client.get(f"/v1/payments/{checkout['payment']['id']}", headers=access)).json()
    assert polled["status"] == "requires_review"
    assert await count(db, Order) == 0
    await deliver(client, admin.headers)
    [given_back] = fake_stripe_api.refunds.values()
    assert (given_back["amount"], given_back["payment_intent"]) == (1, intent_id)
    assert (await stock(client, "BOOT", admin.headers))["reserved"] == 0


async def test_stripe_down_or_slow_gives_502_and_holds_nothing(
    client, admin, make_product, fake_stripe_api: FakeStripe, stripe_settings, db
) -> None:
    await open_shop(client, admin.headers)
    await make_product(("BOOT", 5), price=4000)
    cart, access = await cart_with(client, ("BOOT", 2))
    fake_stripe_api.down = True
    response = await start_checkout(client, cart, access, provider="stripe")
    assert (response.status_code, response.json()["code"]) == (502, "provider_unavailable")
    assert (await stock(client, "BOOT", admin.headers))["reserved"] == 0
    fake_stripe_api.down = False
    fake_stripe_api.delay = 1.0
    stripe_settings.provider_timeout_seconds = 0.3
    response = await start_checkout(client, cart, access, provider="stripe")
    assert (response.status_code, response.json()["code"]) == (502, "provider_unavailable")
    assert (await stock(client, "BOOT", admin.headers))["reserved"] == 0
    # Stripe made the PaymentIntent after Kassa stopped waiting: Kassa still knows it (its
    # metadata names a payment, failed, whose checkout gave its stock back).
    deadline = time.monotonic() + 10
    while not fake_stripe_api.intents:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    for intent in fake_stripe_api.intents.values():
        [payment] = await rows(db, Payment, Payment.id == intent["metadata"]["kassa_payment_id"])
        assert payment.status == "failed"


async def test_a_wrong_secret_key_is_a_502_not_a_500(
    client, admin, make_product, fake_stripe_api: FakeStripe, stripe_settings, db
) -> None:
    from tests.providers import fake_stripe

    fake_stripe.SECRET_KEY, original = "sk_test_other", fake_stripe.SECRET_KEY
    try:
        await open_shop(client, admin.headers)
        await make_product(("BOOT", 5))
        cart, access = await cart_with(client, ("BOOT", 1))
        response = await start_checkout(client, cart, access, provider="stripe")
        assert response.status_code == 502
        assert "sk_test" not in response.text
    finally:
        fake_stripe.SECRET_KEY = original


async def test_reconcile_asks_stripe_about_a_lost_webhook(
    client, admin, make_product, fake_stripe_api: FakeStripe, stripe_settings, db
) -> None:
    checkout, access = await stripe_checkout(client, admin, make_product)
    fake_stripe_api.pay(checkout["payment"]["provider_reference"])  # its webhook is lost
    clock.advance(timedelta(seconds=stripe_settings.reconcile_after_seconds + 1))
    result = (await client.post("/v1/admin/jobs/reconcile", headers=admin.headers)).json()
    assert result == {"checked": 1, "succeeded": 1, "failed": 0, "unchanged": 0}
    assert (await order_of(client, checkout, access))["status"] == "paid"
    assert (
        "GET",
        f"/v1/payment_intents/{checkout['payment']['provider_reference']}",
        None,
    ) in fake_stripe_api.requests


async def test_stripe_is_404_where_it_is_not_enabled(settings, db) -> None:
    import httpx

    from kassa.app import create_app

    app = create_app(settings, db=db, background=False)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kassa.test") as http:
        body, headers = signed({"id": "evt_1", "type": "x", "data": {"object": {}}})
        response = await http.post(WEBHOOK, content=body, headers=headers)
        assert response.status_code == 404


pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


async def test_events_about_what_kassa_never_made_are_ignored(
    client, admin, make_product, fake_stripe_api: FakeStripe, db
) -> None:
    """Another system on the same Stripe account, or a refund made by hand in the dashboard:
    no Kassa metadata, so nothing to keep waiting for."""
    checkout, _ = await stripe_checkout(client, admin, make_product)
    intent_id = checkout["payment"]["provider_reference"]
    foreign_intent = {
        "id": "pi_not_kassas",
        "object": "payment_intent",
        "amount": 100,
        "currency": "usd",
        "status": "succeeded",
        "amount_received": 100,
        "metadata": {},
    }
    by_hand = {
        "id": "re_by_hand",
        "object": "refund",
        "amount": 100,
        "currency": "usd",
        "payment_intent": intent_id,
        "status": "succeeded",
        "metadata": {},
    }
    for event in (
        fake_stripe_api.event("payment_intent.succeeded", foreign_intent),
        fake_stripe_api.event("refund.updated", by_hand),
    ):
        assert (await send(client, event))["outcome"] == "ignored"
    assert await count(db, OutboxMessage) == 0  # nothing kept for later
    assert await count(db, Order) == 0


async def test_a_refund_that_fails_after_it_succeeded_is_given_back(
    client, admin, make_product, fake_stripe_api: FakeStripe, db
) -> None:
    checkout, access = await stripe_checkout(client, admin, make_product)
    await send(client, fake_stripe_api.pay(checkout["payment"]["provider_reference"]))
    order = await order_of(client, checkout, access)
    await client.post(
        f"/v1/orders/{order['id']}/refunds", json={"reason": "wet"}, headers=admin.headers
    )
    await deliver(client, admin.headers)
    [refund] = await rows(db, Refund)
    assert refund.status == "succeeded"  # Stripe said so at once
    [sent] = fake_stripe_api.refunds.values()
    later = fake_stripe_api.event(
        "refund.failed", {**sent, "status": "failed", "failure_reason": "lost_or_stolen_card"}
    )
    assert (await send(client, later))["outcome"] == "processed"
    [refund] = await rows(db, Refund)
    assert (refund.status, refund.failure_code) == ("failed", "lost_or_stolen_card")
    order = (await client.get(f"/v1/orders/{order['id']}", headers=admin.headers)).json()
    assert (order["payment_status"], order["refunded_amount"]) == ("paid", 0)
    alerts = await rows(db, OutboxMessage, OutboxMessage.kind == "alert")
    assert [a.payload["type"] for a in alerts] == ["refund.failed"]


async def test_reconcile_finds_a_second_attempt_after_a_decline(
    client, admin, make_product, fake_stripe_api: FakeStripe, stripe_settings, db
) -> None:
    """The card is declined (webhook delivered), the buyer pays with another card in the
    Payment Element, and that webhook is lost: reconcile asks about failed payments too."""
    checkout, access = await stripe_checkout(client, admin, make_product)
    intent_id = checkout["payment"]["provider_reference"]
    await send(client, fake_stripe_api.decline(intent_id))
    fake_stripe_api.pay(intent_id)  # its webhook never arrives
    clock.advance(timedelta(seconds=stripe_settings.reconcile_after_seconds + 1))
    result = (await client.post("/v1/admin/jobs/reconcile", headers=admin.headers)).json()
    assert (result["checked"], result["succeeded"]) == (1, 1)
    assert (await order_of(client, checkout, access))["status"] == "paid"


async def test_a_key_stripe_rejects_is_retried_not_a_refused_refund(
    client, admin, make_product, fake_stripe_api: FakeStripe, db
) -> None:
    from tests.providers import fake_stripe

    checkout, access = await stripe_checkout(client, admin, make_product)
    await send(client, fake_stripe_api.pay(checkout["payment"]["provider_reference"]))
    order = await order_of(client, checkout, access)
    await client.post(
        f"/v1/orders/{order['id']}/refunds", json={"reason": "x"}, headers=admin.headers
    )
    fake_stripe.SECRET_KEY, original = "sk_test_rotated", fake_stripe.SECRET_KEY
    try:
        await deliver(client, admin.headers)  # 401: an AuthenticationError, tried again later
    finally:
        fake_stripe.SECRET_KEY = original
    [refund] = await rows(db, Refund)
    assert refund.status == "pending"
    [job] = await rows(db, OutboxMessage, OutboxMessage.kind == "payments.refund")
    assert (job.state, job.last_error) == ("pending", "refund not sent: ProviderUnavailable")


async def test_a_signature_that_is_not_ascii_is_a_400(
    client, admin, make_product, fake_stripe_api: FakeStripe
) -> None:
    checkout, _ = await stripe_checkout(client, admin, make_product)
    body, _ = signed(fake_stripe_api.pay(checkout["payment"]["provider_reference"]))
    header = f"t={int(time.time())},v1=\u00e9\u00e9".encode()  # not ASCII on the wire
    response = await client.post(WEBHOOK, content=body, headers={"stripe-signature": header})
    assert (response.status_code, response.json()["code"]) == (400, "invalid_signature")
