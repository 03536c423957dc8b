"""The outbox (promise 7): delivered after the commit, retried with backoff, taken over from a
worker that died, and never given up for money."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy import select

from kassa import clock
from kassa.app import create_app
from kassa.payments import outbox
from kassa.payments.delivery import send_refund
from kassa.payments.models import OutboxMessage
from tests.checkout.flow import cart_with, deliver, open_shop, pay, start_checkout


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
    settings.sandbox_webhook_url = "http://127.0.0.1:9/v1/webhooks/sandbox"  # nobody listens
    app = create_app(settings, db=db, background=False)
    ctx = app.state.outbox
    in_process = ctx.http
    async with httpx.AsyncClient() as http:
        ctx.http = http
        assert await outbox.drain(ctx) == 1
    ctx.http = in_process
    [message] = await messages(db)
    assert (message.state, message.attempts) == ("pending", 1)
    assert "ConnectError" in (message.last_error or "")
    assert message.next_attempt_at > clock.now()  # backed off
    assert await outbox.drain(app.state.outbox) == 0  # not due yet
    settings.sandbox_webhook_url = None  # the endpoint is back (in-process)
    clock.advance(timedelta(seconds=2))
    assert await outbox.drain(app.state.outbox) == 1
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
    settings.sandbox_webhook_url = "http://127.0.0.1:9/nowhere"
    settings.outbox_max_attempts = 2
    app = create_app(settings, db=db, background=False)
    async with httpx.AsyncClient() as http:
        app.state.outbox.http = http
        for _ in range(4):
            await outbox.drain(app.state.outbox)
            clock.advance(timedelta(seconds=outbox.MAX_BACKOFF_SECONDS + 1))
    [message] = await messages(db)
    assert (message.state, message.attempts) == ("pending", 4)


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
    [refund_message] = [m for m in await messages(db) if m.kind == "provider_refund"]
    job = outbox.Claimed(refund_message.id, refund_message.kind, refund_message.payload, 1)
    app = create_app(settings, db=db, background=False)
    # Two workers (or one retried after a crash) run the same refund job.
    await send_refund(app.state.outbox, job)
    await send_refund(app.state.outbox, job)
    await deliver(client, admin.headers)
    events = (await client.get(f"/v1/orders/{order_id}/events", headers=access)).json()
    assert [e["kind"] for e in events].count("refund_succeeded") == 1
    webhooks = [m for m in await messages(db) if m.kind == "sandbox_webhook"]
    assert len(webhooks) == 2  # the payment's success and one refund.succeeded
