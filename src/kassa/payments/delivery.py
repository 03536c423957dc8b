"""The outbox's handlers for payments: the sandbox's webhook deliveries and provider refunds."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.config import Settings
from kassa.db import Database
from kassa.payments import outbox
from kassa.payments import service as payments
from kassa.payments.outbox import Claimed, DeliveryFailed, OutboxContext
from kassa.payments.providers import sandbox
from kassa.payments.providers.base import REFUND_SUCCEEDED
from kassa.payments.providers.registry import get_provider

SANDBOX_WEBHOOK = "sandbox_webhook"
PROVIDER_REFUND = "provider_refund"
WEBHOOK_PATH = "/v1/webhooks/sandbox"


async def emit_sandbox_event(
    session: AsyncSession, event_type: str, data: dict[str, object], *, event_id: str | None = None
) -> str:
    """The sandbox announces an outcome: a signed webhook, delivered after this commit."""
    event = sandbox.event(event_type, clock.now(), dict(data))
    if event_id is not None:
        event["id"] = event_id
    await outbox.enqueue(session, SANDBOX_WEBHOOK, {"event": event})
    return str(event["id"])


async def deliver_sandbox_webhook(ctx: OutboxContext, message: Claimed) -> None:
    """POST the event, signed afresh for this attempt (same webhook-id every time)."""
    event = message.payload["event"]
    body = sandbox.body_of(event)
    # Signed with the wall clock, not kassa.clock: the receiver checks the timestamp against
    # its own wall clock (a 5-minute tolerance), whatever time the shop's logic runs on.
    headers = sandbox.signed_headers(
        ctx.settings.sandbox_webhook_secret.get_secret_value(), event["id"], body, datetime.now(UTC)
    )
    url = ctx.settings.sandbox_webhook_url or WEBHOOK_PATH
    try:
        response = await ctx.http.post(url, content=body, headers=headers, timeout=10.0)
    except httpx.HTTPError as error:
        raise DeliveryFailed(f"webhook not delivered: {type(error).__name__}") from None
    if not 200 <= response.status_code < 300:
        raise DeliveryFailed(f"webhook answered {response.status_code}")


async def send_refund(ctx: OutboxContext, message: Claimed) -> None:
    refund_id = str(message.payload["refund_id"])
    async with ctx.db.read() as session:
        refund = await payments.get_refund(session, refund_id)
        if refund is None:
            return
        payment = await payments.get_payment(session, refund.payment_id)
        provider_name, reference = payment.provider, payment.provider_reference
        amount, currency = refund.amount, payment.currency
        already = refund.provider_reference
    provider = get_provider(ctx.settings, provider_name)
    refund_reference = already or await provider.refund(
        provider_reference=reference, amount=amount, currency=currency, refund_id=refund_id
    )

    async def record(session: AsyncSession) -> None:
        first_time = await payments.refund_sent(session, refund_id, refund_reference)
        if first_time and provider_name == sandbox.NAME:
            await emit_sandbox_event(
                session,
                REFUND_SUCCEEDED,
                {
                    "payment_id": refund.payment_id,
                    "provider_reference": reference,
                    "refund_reference": refund_reference,
                    "amount": amount,
                    "currency": currency,
                },
                # One refund, one event id: a re-sent event is a duplicate at the receiver.
                event_id=f"evt_{refund_id}",
            )

    await ctx.db.run(record)


HANDLERS = {SANDBOX_WEBHOOK: deliver_sandbox_webhook, PROVIDER_REFUND: send_refund}


def outbox_context(db: Database, settings: Settings, http: httpx.AsyncClient) -> OutboxContext:
    return OutboxContext(db=db, settings=settings, http=http, handlers=dict(HANDLERS))
