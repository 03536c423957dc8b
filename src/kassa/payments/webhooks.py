"""Incoming provider events: verified, recorded once, then acted on.

Stats read processed and ignored events from `webhook_events`, duplicates and rejections from
`webhook_receipts`.

The whole of deduplication is one insert into `webhook_events` keyed (provider, event id) with
"on conflict do nothing", in the same transaction as the event's effect: only the request that
inserted the row acts, and if its transaction rolls back the event was never seen (promise 5).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import cast

from sqlalchemy import Table, delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.checkout import completion
from kassa.config import Settings
from kassa.db import Database, insert_new
from kassa.orders import service as orders
from kassa.payments import service as payments
from kassa.payments.models import WebhookEvent, WebhookReceipt
from kassa.payments.providers.base import (
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    REFUND_SUCCEEDED,
    PaymentProvider,
    ProviderEvent,
)

events_table = cast(Table, WebhookEvent.__table__)
receipts_table = cast(Table, WebhookReceipt.__table__)


async def receive(
    db: Database,
    settings: Settings,
    provider: PaymentProvider,
    body: bytes,
    headers: Mapping[str, str],
) -> str:
    """Verify and apply one webhook request; returns processed, duplicate or ignored.
    Raises InvalidSignature (recorded as rejected; nothing else changes)."""
    try:
        event = provider.verify_webhook(body, headers)
    except Exception:
        await db.run(lambda s: _receipt(s, provider.name, None, "rejected"))
        raise
    return await db.run(lambda s: apply(s, settings, provider.name, event))


async def apply(
    session: AsyncSession, settings: Settings, provider_name: str, event: ProviderEvent
) -> str:
    """Record the event once and act on it, in the caller's transaction."""
    first_time = await insert_new(
        session,
        events_table,
        {
            "provider": provider_name,
            "event_id": event.event_id,
            "type": event.type[:64],
            "outcome": "processed",
            "received_at": clock.now(),
        },
    )
    if not first_time:
        await _receipt(session, provider_name, event.event_id, "duplicate")
        return "duplicate"
    outcome = await _act(session, settings, provider_name, event)
    if outcome != "processed":
        await session.execute(
            update(events_table)
            .where(
                events_table.c.provider == provider_name,
                events_table.c.event_id == event.event_id,
            )
            .values(outcome=outcome)
        )
    return outcome


async def _act(
    session: AsyncSession, settings: Settings, provider_name: str, event: ProviderEvent
) -> str:
    if event.type == REFUND_SUCCEEDED:
        if event.refund_reference is None:
            return "ignored"
        refund = await payments.refund_succeeded(session, event.refund_reference)
        if refund is None:
            return "ignored"
        if refund.order_id is not None:
            order = await orders.get_order(session, refund.order_id)
            await orders.record_event(
                session, order, "refund_succeeded", provider_name, refund_id=refund.id
            )
        return "processed"
    if event.type not in (PAYMENT_SUCCEEDED, PAYMENT_FAILED):
        return "ignored"
    found = await completion.load(session, provider_name, event.provider_reference)
    if found is None:
        return "ignored"
    payment, checkout = found
    if event.type == PAYMENT_SUCCEEDED:
        await completion.payment_succeeded(
            session, settings, payment, checkout, actor=provider_name
        )
    else:
        await completion.payment_failed(
            session, settings, payment, checkout, failure_code=event.failure_code
        )
    return "processed"


# Long past any provider's retries (Stripe: 3 days) and any signature's 5-minute tolerance, and
# as far back as stats look (90 days).
RETENTION = timedelta(days=90)


async def forget_old(session: AsyncSession) -> int:
    """Forget webhook events and receipts older than RETENTION (the sweeper calls this; each
    run finds only what aged out since the last one)."""
    cutoff = clock.now() - RETENTION
    forgotten = 0
    for table in (events_table, receipts_table):
        result = await session.execute(delete(table).where(table.c.received_at < cutoff))
        forgotten += int(result.rowcount or 0)  # type: ignore[attr-defined]
    return forgotten


async def _receipt(
    session: AsyncSession, provider: str, event_id: str | None, outcome: str
) -> None:
    await session.execute(
        insert(receipts_table),
        {
            "provider": provider,
            "event_id": event_id[:255] if event_id else None,
            "outcome": outcome,
            "received_at": clock.now(),
        },
    )
