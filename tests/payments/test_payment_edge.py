"""The payment edge (API.md "Checkout", "Payments and webhooks"; DESIGN.md promises 5 to 7): no
lock across the provider call, a provider that fails gives the stock back, a success for the
wrong amount never completes, events early or late are neither lost nor applied twice, a refused
refund never counts, interrupted starts and lost webhooks are recovered."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from kassa import clock
from kassa.checkout import recovery
from kassa.orders.models import Order
from kassa.outbox.models import OutboxMessage
from kassa.payments.models import Payment, Refund, WebhookEvent
from kassa.payments.providers import sandbox
from tests.checkout.flow import (
    cart_with,
    count,
    deliver,
    open_shop,
    pay,
    rows,
    start_checkout,
    stock,
)
from tests.payments.edge import app_of, unreliable_sandbox
from tests.payments.test_webhooks import WEBHOOK, paid_checkout, signed


async def test_a_provider_that_is_down_gives_502_and_holds_nothing(
    client, admin, make_product
) -> None:
    provider = unreliable_sandbox(client)
    provider.down = True
    await open_shop(client, admin.headers)
    await make_product(("KEG", 3))
    cart, access = await cart_with(client, ("KEG", 2))
    key = {"Idempotency-Key": "start-1"}
    response = await start_checkout(client, cart, {**access, **key})
    assert response.status_code == 502, response.text
    problem = response.json()
    assert (problem["code"], problem["provider"]) == ("provider_unavailable", "sandbox")
    assert response.headers["content-type"].startswith("application/problem+json")
    keg = await stock(client, "KEG", admin.headers)
    assert (keg["on_hand"], keg["reserved"]) == (3, 0)
    # The cart is free again: it can change, and the same request with the same key is safe.
    provider.down = False
    response = await start_checkout(client, cart, {**access, **key})
    assert response.status_code == 201, response.text
    assert response.headers.get("idempotent-replayed") is None  # a 5xx is never replayed
    again = await start_checkout(client, cart, {**access, **key})
    assert (again.status_code, again.headers["idempotent-replayed"]) == (201, "true")
    assert again.json()["id"] == response.json()["id"]
    assert (await stock(client, "KEG", admin.headers))["reserved"] == 2
    assert len(provider.creates) == 2  # one failed start, one real one; the replay asked no one
    stats = (await client.get("/v1/admin/stats?hours=1", headers=admin.headers)).json()
    assert stats["cancelled"] == 1
    assert stats["failures_by_code"]["provider_unavailable"] == 1


async def test_a_provider_that_does_not_answer_in_time_gives_502(
    client, admin, settings, make_product, db
) -> None:
    provider = unreliable_sandbox(client)
    provider.delay = 5.0
    settings.provider_timeout_seconds = 0.2
    await open_shop(client, admin.headers)
    await make_product(("URN", 1))
    cart, access = await cart_with(client, ("URN", 1))
    response = await start_checkout(client, cart, access)
    assert response.status_code == 502
    assert response.json()["code"] == "provider_unavailable"
    [payment] = await rows(db, Payment)
    assert (payment.status, payment.failure_code) == ("failed", "provider_timeout")
    assert (await stock(client, "URN", admin.headers))["reserved"] == 0
    # The last unit is for the next buyer at once, not after a TTL.
    other, other_access = await cart_with(client, ("URN", 1))
    provider.delay = 0
    assert (await start_checkout(client, other, other_access)).status_code == 201


async def test_no_lock_is_held_while_the_provider_works(client, admin, make_product) -> None:
    """The first buyer's provider call hangs; a second buyer of the same hot SKU gets its hold
    and its payment meanwhile (with the call inside the transaction, it would wait for the
    first one's row lock, or on SQLite for the one writer lock, until the provider answered)."""
    provider = unreliable_sandbox(client)
    await open_shop(client, admin.headers)
    await make_product(("HOT", 10))
    first, first_access = await cart_with(client, ("HOT", 1))
    second, second_access = await cart_with(client, ("HOT", 1))
    gate = asyncio.Event()
    provider.gate = gate
    stuck = asyncio.create_task(start_checkout(client, first, first_access))
    deadline = asyncio.get_running_loop().time() + 10
    while not provider.creates:  # the first buyer is now at the provider, stock held
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    done = await asyncio.wait_for(start_checkout(client, second, second_access), timeout=10)
    assert done.status_code == 201, done.text
    assert not stuck.done()
    assert (await stock(client, "HOT", admin.headers))["reserved"] == 2
    gate.set()
    assert (await stuck).status_code == 201


async def test_a_success_for_another_amount_or_currency_never_completes(
    client, admin, settings, db, make_product
) -> None:
    checkout, access, event = await paid_checkout(client, admin, make_product)
    wrong = sandbox.event(
        "payment.succeeded", datetime.now(UTC), {**event["data"], "amount": 1, "currency": "eur"}
    )
    body, headers = signed(settings, wrong)
    response = await client.post(WEBHOOK, content=body, headers=headers)
    assert response.json()["outcome"] == "processed"
    payment_id = checkout["payment"]["id"]
    payment = (await client.get(f"/v1/payments/{payment_id}", headers=access)).json()
    assert payment["status"] == "requires_review"
    assert "1 eur" in payment["review_reason"] and "usd" in payment["review_reason"]
    assert payment["refunded_amount"] == 0  # the money taken was never counted as paid
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert (seen["state"], seen["order_id"]) == ("cancelled", None)
    assert seen["outcome_reason"] == "payment_requires_review"
    assert (await stock(client, "GEM", admin.headers))["reserved"] == 0
    [refund] = await rows(db, Refund)
    assert (refund.amount, refund.currency, refund.counted) == (1, "eur", False)
    [alert] = await rows(db, OutboxMessage, OutboxMessage.kind == "alert")
    assert alert.payload["type"] == "payment.requires_review"
    # The right success arriving afterwards changes nothing: still no order.
    body, headers = signed(settings, event)
    await client.post(WEBHOOK, content=body, headers=headers)
    await deliver(client, admin.headers)
    assert await count(db, Order) == 0
    [refund] = await rows(db, Refund)
    assert refund.status == "succeeded"  # the sandbox gave the 1 eur back


async def test_a_refund_notice_before_its_reference_is_kept_and_applied(
    client, admin, settings, db, make_product
) -> None:
    checkout, access, event = await paid_checkout(client, admin, make_product)
    body, headers = signed(settings, event)
    await client.post(WEBHOOK, content=body, headers=headers)
    order_id = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()[
        "order_id"
    ]
    response = await client.post(
        f"/v1/orders/{order_id}/refunds",
        json={"amount": 500, "reason": "scratch"},
        headers=admin.headers,
    )
    assert response.status_code in (200, 201), response.text
    [refund] = await rows(db, Refund)
    # The provider's notice overtakes Kassa's own call: only the provider's reference in it.
    early = sandbox.event(
        "refund.succeeded",
        datetime.now(UTC),
        {
            "provider_reference": event["data"]["provider_reference"],
            "refund_reference": f"sbx_re_{refund.id}",
            "amount": 500,
            "currency": "usd",
        },
    )
    body, headers = signed(settings, early)
    response = await client.post(WEBHOOK, content=body, headers=headers)
    assert response.json()["outcome"] == "deferred"
    # A second delivery of the same notice: kept already, counted as a duplicate.
    assert (await client.post(WEBHOOK, content=body, headers=headers)).json()[
        "outcome"
    ] == "duplicate"
    [refund] = await rows(db, Refund)
    assert refund.status == "pending"
    stats = (await client.get("/v1/admin/stats?hours=1", headers=admin.headers)).json()
    assert (stats["webhooks_deferred"], stats["webhooks_duplicated"]) == (1, 1)
    clock.advance(timedelta(seconds=5))
    await deliver(client, admin.headers)  # sends the refund, then applies the kept notice
    clock.advance(timedelta(seconds=5))
    await deliver(client, admin.headers)
    [refund] = await rows(db, Refund)
    assert refund.status == "succeeded"
    [kept] = await rows(db, WebhookEvent, WebhookEvent.event_id == early["id"])
    assert kept.outcome == "processed"
    events = (await client.get(f"/v1/orders/{order_id}/events", headers=admin.headers)).json()
    assert [e["kind"] for e in events].count("refund_succeeded") == 1


async def test_a_refused_refund_fails_shows_on_the_order_and_never_counts(
    client, admin, settings, db, make_product
) -> None:
    provider = unreliable_sandbox(client)
    checkout, access, event = await paid_checkout(client, admin, make_product)
    body, headers = signed(settings, event)
    await client.post(WEBHOOK, content=body, headers=headers)
    order_id = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()[
        "order_id"
    ]
    provider.refuse_refunds = True
    response = await client.post(
        f"/v1/orders/{order_id}/refunds", json={"reason": "broken"}, headers=admin.headers
    )
    assert response.status_code in (200, 201), response.text
    order = (await client.get(f"/v1/orders/{order_id}", headers=admin.headers)).json()
    assert order["payment_status"] == "refunded"  # asked for, not yet answered
    await deliver(client, admin.headers)
    assert len(provider.refunds) == 1  # refused once: not retried
    [refund] = await rows(db, Refund)
    assert (refund.status, refund.failure_code) == ("failed", "charge_disputed")
    order = (await client.get(f"/v1/orders/{order_id}", headers=admin.headers)).json()
    assert (order["payment_status"], order["refunded_amount"]) == ("paid", 0)
    events = (await client.get(f"/v1/orders/{order_id}/events", headers=admin.headers)).json()
    failed = [e for e in events if e["kind"] == "refund_failed"]
    assert len(failed) == 1 and failed[0]["data"]["failure_code"] == "charge_disputed"
    payment = (await client.get(f"/v1/payments/{checkout['payment']['id']}", headers=access)).json()
    assert (payment["status"], payment["refunded_amount"]) == ("succeeded", 0)
    # The money can still be refunded, once the provider agrees.
    provider.refuse_refunds = False
    response = await client.post(
        f"/v1/orders/{order_id}/refunds", json={"reason": "again"}, headers=admin.headers
    )
    assert response.status_code in (200, 201), response.text
    await deliver(client, admin.headers)
    order = (await client.get(f"/v1/orders/{order_id}", headers=admin.headers)).json()
    assert (order["payment_status"], order["refunded_amount"]) == (
        "refunded",
        order["total_amount"],
    )


async def interrupted_start(client, admin, make_product, db, settings) -> tuple[dict, dict]:
    """A start whose process died after holding the stock and recording the payment, before
    the provider's answer was stored: step one runs, nothing after it."""
    from kassa.carts.service import CartAccess
    from kassa.checkout import service
    from kassa.checkout.phases import PhaseLog
    from tests.checkout.flow import ADDRESS

    await open_shop(client, admin.headers)
    await make_product(("OAR", 4))
    cart, access = await cart_with(client, ("OAR", 2))
    made = await db.run(
        lambda s: service.start_checkout(
            s,
            settings,
            PhaseLog(),
            access=CartAccess(None, cart["token"]),
            cart_id=cart["id"],
            email="ada@example.com",
            address=service.Address(**{**ADDRESS, "country": "us"}),
            coupon_code=None,
            provider_name="sandbox",
        )
    )
    assert made.payment is not None and made.payment.status == "creating"
    return {"id": made.checkout.id, "payment_id": made.payment.id}, access


async def test_the_sweeper_finishes_an_interrupted_start(
    client, admin, make_product, db, settings
) -> None:
    provider = unreliable_sandbox(client)
    checkout, access = await interrupted_start(client, admin, make_product, db, settings)
    await client.post("/v1/admin/jobs/sweep", headers=admin.headers)
    assert provider.creates == []  # too young: its request may still be waiting
    clock.advance(recovery.interrupted_after(settings) + timedelta(seconds=1))
    result = (await client.post("/v1/admin/jobs/sweep", headers=admin.headers)).json()
    assert result["finished_starts"] == 1
    assert provider.creates == [checkout["payment_id"]]  # asked again with the same key
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "open"
    assert seen["payment"]["status"] == "pending" and seen["payment"]["client_secret"]
    assert (await pay(client, checkout["payment_id"], access=access)).status_code == 202
    await deliver(client, admin.headers)
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "completed"


async def test_an_interrupted_start_with_the_provider_down_gives_the_stock_back(
    client, admin, make_product, db, settings
) -> None:
    provider = unreliable_sandbox(client)
    provider.down = True
    checkout, access = await interrupted_start(client, admin, make_product, db, settings)
    assert (await stock(client, "OAR", admin.headers))["reserved"] == 2
    clock.advance(recovery.interrupted_after(settings) + timedelta(seconds=1))
    await client.post("/v1/admin/jobs/sweep", headers=admin.headers)
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "cancelled"
    assert seen["payment"]["status"] == "failed"
    assert (await stock(client, "OAR", admin.headers))["reserved"] == 0


async def test_a_lost_webhook_is_found_by_reconcile(
    client, admin, settings, db, make_product
) -> None:
    checkout, access, _ = await paid_checkout(client, admin, make_product)

    # The sandbox's webhook never arrives.
    async def lose(session) -> None:
        from sqlalchemy import delete

        await session.execute(delete(OutboxMessage))

    await db.run(lose)
    reconcile = "/v1/admin/jobs/reconcile"
    result = (await client.post(reconcile, headers=admin.headers)).json()
    assert result == {"checked": 0, "succeeded": 0, "failed": 0, "unchanged": 0}  # too early
    clock.advance(timedelta(seconds=settings.reconcile_after_seconds + 1))
    result = (await client.post(reconcile, headers=admin.headers)).json()
    assert result == {"checked": 1, "succeeded": 1, "failed": 0, "unchanged": 0}
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "completed" and seen["order_id"]
    result = (await client.post(reconcile, headers=admin.headers)).json()
    assert result["checked"] == 0  # nothing pending any more


async def test_webhook_and_reconcile_racing_make_one_order(
    client, admin, settings, db, make_product
) -> None:
    checkout, access, event = await paid_checkout(client, admin, make_product)
    clock.advance(timedelta(seconds=settings.reconcile_after_seconds + 1))
    body, headers = signed(settings, event)
    results = await asyncio.gather(
        client.post("/v1/admin/jobs/reconcile", headers=admin.headers),
        *(client.post(WEBHOOK, content=body, headers=headers) for _ in range(5)),
        client.post("/v1/admin/jobs/reconcile", headers=admin.headers),
        deliver(client, admin.headers),
    )
    assert all(r.status_code == 200 for r in results[:-1])
    assert await count(db, Order) == 1
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "completed"
    gem = await stock(client, "GEM", admin.headers)
    assert (gem["on_hand"], gem["reserved"]) == (4, 0)


async def test_a_refused_refund_of_money_without_an_order_raises_an_alert(
    client, admin, settings, db, make_product
) -> None:
    """The buyer cancelled, then the payment succeeded: Kassa refunds it, the provider says
    no. The money is still taken and no order exists: a person must know."""
    provider = unreliable_sandbox(client)
    provider.refuse_refunds = True
    checkout, access, event = await paid_checkout(client, admin, make_product)
    response = await client.post(f"/v1/checkouts/{checkout['id']}/cancel", headers=access)
    assert response.json()["state"] == "cancelled"
    body, headers = signed(settings, event)
    await client.post(WEBHOOK, content=body, headers=headers)
    await deliver(client, admin.headers)
    [refund] = await rows(db, Refund)
    assert (refund.order_id, refund.status) == (None, "failed")
    alerts = await rows(db, OutboxMessage, OutboxMessage.kind == "alert")
    assert [(a.payload["type"], a.payload["refund_id"]) for a in alerts] == [
        ("refund.failed", refund.id)
    ]


async def test_two_sweepers_ask_the_provider_about_an_interrupted_start_once(
    client, admin, make_product, db, settings
) -> None:
    provider = unreliable_sandbox(client)
    provider.delay = 0.2
    checkout, _ = await interrupted_start(client, admin, make_product, db, settings)
    clock.advance(recovery.interrupted_after(settings) + timedelta(seconds=1))
    providers = app_of(client).state.providers
    finished = await asyncio.gather(
        *(recovery.finish_interrupted_starts(db, settings, providers) for _ in range(3))
    )
    assert sorted(finished) == [0, 0, 1]
    assert provider.creates == [checkout["payment_id"]]


def test_reconcile_waits_longer_the_older_a_payment_is() -> None:
    from datetime import UTC, datetime

    from kassa.payments.service import next_look

    made = datetime(2026, 11, 1, tzinfo=UTC)
    after = 600
    for age, wait in (
        (timedelta(seconds=601), timedelta(seconds=601)),
        (timedelta(seconds=30), timedelta(seconds=600)),  # never sooner than the setting
        (timedelta(hours=2), timedelta(hours=2)),
        (timedelta(days=2), timedelta(hours=6)),  # never later than six hours
    ):
        assert next_look(made, made + age, after_seconds=after) == made + age + wait


async def test_reconcile_asks_about_a_silent_payment_less_and_less_often(
    client, admin, settings, make_product
) -> None:
    await open_shop(client, admin.headers)
    await make_product(("LUTE", 2))
    cart, access = await cart_with(client, ("LUTE", 1))
    assert (await start_checkout(client, cart, access)).status_code == 201  # never paid
    reconcile = "/v1/admin/jobs/reconcile"
    looked = []
    for step in (601, 610, 700, 600, 60):
        clock.advance(timedelta(seconds=step))
        looked.append((await client.post(reconcile, headers=admin.headers)).json()["checked"])
    # At 601 s; at 1,211 s (it had to wait its age then, 601 s); not at 1,911 s (now it waits
    # its age, 1,211 s); at 2,511 s; not a minute later.
    assert looked == [1, 1, 0, 1, 0]
