"""The outbox (promise 7): delivered after the commit, retried with backoff, taken over from a
worker that died, never given up for money, and knowing no kind of work itself."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from kassa import clock
from kassa.app import create_app
from kassa.outbox import service as outbox
from kassa.outbox.models import OutboxMessage
from kassa.outbox.service import Claimed, DeliveryFailed, Outbox, RetryPolicy
from kassa.payments.providers import sandbox
from kassa.payments.service import REFUND_KIND
from tests.checkout.flow import cart_with, deliver, open_shop, pay, start_checkout

DEAD_URL = "http://127.0.0.1:9/v1/webhooks/sandbox"  # nobody listens on port 9


async def messages(db) -> list[OutboxMessage]:
    async with db.read() as session:
        return list((await session.execute(select(OutboxMessage))).scalars())


async def paid_but_undelivered(client, admin, make_product) -> tuple[dict, dict]:
    await open_shop(client, admin.headers)
    await make_product(("ROPE", 5))
    cart, access = await cart_with(client, ("ROPE", 1))
    checkout = (await start_checkout(client, cart, access)).json()
    assert (await pay(client, checkout["payment"]["id"], access=access)).status_code == 202
    return checkout, access


async def test_a_failed_delivery_is_retried_with_backoff(
    client, admin, settings, db, make_product
) -> None:
    checkout, access = await paid_but_undelivered(client, admin, make_product)
    broken = create_app(settings.model_copy(update={"sandbox_webhook_url": DEAD_URL}), db=db)
    assert await broken.state.outbox.drain() == 1
    [message] = await messages(db)
    assert (message.state, message.attempts) == ("pending", 1)
    assert "ConnectError" in (message.last_error or "")
    assert message.next_attempt_at > clock.now()  # backed off
    working = create_app(settings, db=db, background=False)  # the endpoint is back
    assert await working.state.outbox.drain() == 0  # not due yet
    clock.advance(timedelta(seconds=2))
    assert await working.state.outbox.drain() == 1
    [message] = await messages(db)
    assert (message.state, message.attempts) == ("done", 2)
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "completed"


async def test_a_worker_that_died_mid_delivery_is_taken_over(
    client, admin, settings, db, make_product
) -> None:
    checkout, access = await paid_but_undelivered(client, admin, make_product)
    # A worker claims the message and dies before delivering it.
    claimed = await db.run(lambda s: outbox.claim(s, now=clock.now()))
    assert len(claimed) == 1
    assert await deliver(client, admin.headers) == 0  # leased: nobody else takes it yet
    clock.advance(outbox.LEASE + timedelta(seconds=1))
    assert await deliver(client, admin.headers) == 1
    seen = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()
    assert seen["state"] == "completed"


async def test_money_messages_are_never_given_up(client, admin, settings, db, make_product) -> None:
    await paid_but_undelivered(client, admin, make_product)
    broken = create_app(
        settings.model_copy(update={"sandbox_webhook_url": DEAD_URL, "outbox_max_attempts": 2}),
        db=db,
    )
    for _ in range(4):
        await broken.state.outbox.drain()
        clock.advance(timedelta(seconds=outbox.MAX_BACKOFF_SECONDS + 1))
    [message] = await messages(db)
    assert (message.kind, message.state, message.attempts) == (sandbox.WEBHOOK_KIND, "pending", 4)


async def test_sending_a_refund_twice_refunds_and_reports_once(
    client, admin, settings, db, make_product
) -> None:
    checkout, access = await paid_but_undelivered(client, admin, make_product)
    await deliver(client, admin.headers)
    order_id = (await client.get(f"/v1/checkouts/{checkout['id']}", headers=access)).json()[
        "order_id"
    ]
    response = await client.post(
        f"/v1/orders/{order_id}/cancel", json={"reason": "no"}, headers=access
    )
    assert response.status_code == 200
    [refund_message] = [m for m in await messages(db) if m.kind == REFUND_KIND]
    job = Claimed(refund_message.id, refund_message.kind, refund_message.payload, 1)
    app = create_app(settings, db=db, background=False)
    send_refund = app.state.outbox.registrations[REFUND_KIND].handler
    # Two workers (or one retried after a crash) run the same refund job.
    await send_refund(job)
    await send_refund(job)
    await deliver(client, admin.headers)
    events = (await client.get(f"/v1/orders/{order_id}/events", headers=access)).json()
    assert [e["kind"] for e in events].count("refund_succeeded") == 1
    webhooks = [m for m in await messages(db) if m.kind == sandbox.WEBHOOK_KIND]
    assert len(webhooks) == 2  # the payment's success and one refund.succeeded
    order = (await client.get(f"/v1/orders/{order_id}", headers=access)).json()
    assert (order["payment_status"], order["refunded_amount"]) == (
        "refunded",
        order["total_amount"],
    )


async def test_each_kind_has_its_own_policy_and_an_unknown_kind_waits(db) -> None:
    box = Outbox(db, default_policy=RetryPolicy(max_attempts=2))
    calls: list[str] = []

    async def flaky(message: Claimed) -> None:
        calls.append(message.kind)
        raise DeliveryFailed("not today")

    box.register("test.gives_up", flaky)
    box.register("test.forever", flaky, outbox.FOREVER)
    with pytest.raises(ValueError, match="twice"):
        box.register("test.forever", flaky)

    async def enqueue_all(session) -> None:
        for kind in ("test.gives_up", "test.forever", "test.nobody"):
            await outbox.enqueue(session, kind, {"n": 1})

    await db.run(enqueue_all)
    for _ in range(3):
        await box.drain()
        clock.advance(timedelta(seconds=outbox.MAX_BACKOFF_SECONDS + 1))
    states = {m.kind: (m.state, m.attempts, m.last_error) for m in await messages(db)}
    assert states == {
        "test.gives_up": ("dead", 2, "not today"),
        "test.forever": ("pending", 3, "not today"),
        # Nobody registered it: retried like a failure, never lost, dead after the default.
        "test.nobody": ("dead", 2, "no handler for test.nobody"),
    }
    assert calls.count("test.gives_up") == 2 and calls.count("test.forever") == 3


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(max_attempts=None, max_backoff_seconds=600)
    for attempts, base in ((1, 1), (2, 2), (3, 4), (10, 512), (11, 600), (40, 600)):
        waited = policy.backoff_seconds(attempts)
        assert 0.75 * base <= waited <= base
    assert not policy.gives_up(10**6)
    assert RetryPolicy(max_attempts=3).gives_up(3)
    assert not RetryPolicy(max_attempts=3).gives_up(2)
