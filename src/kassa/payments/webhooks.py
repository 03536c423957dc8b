"""Incoming provider events: verified, and recorded once.

Stats read processed, ignored and deferred events from `webhook_events`, duplicates and
rejections from `webhook_receipts`.

The whole of deduplication is one insert into `webhook_events` keyed (provider, event id) with
"on conflict do nothing", in the same transaction as the event's effect: only the request that
inserted the row acts, and if its transaction rolls back the event was never seen (promise 5).
What an event does to checkouts and orders lives with them (`kassa.checkout.events`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import cast

import structlog
from sqlalchemy import Table, delete, insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.db import Database, insert_new
from kassa.errors import KassaError
from kassa.payments.models import WebhookEvent, WebhookReceipt
from kassa.payments.providers.base import InvalidSignature, PaymentProvider, ProviderEvent

log = structlog.get_logger("kassa.webhooks")
events_table = cast(Table, WebhookEvent.__table__)
receipts_table = cast(Table, WebhookReceipt.__table__)


async def verify(
    db: Database, provider: PaymentProvider, body: bytes, headers: Mapping[str, str]
) -> ProviderEvent:
    """The verified event; a bad one is recorded as rejected (nothing else changes) and the
    provider's InvalidSignature or InvalidEvent raised."""
    try:
        return provider.verify_webhook(body, headers)
    except KassaError:
        await db.run(lambda s: receipt(s, provider.name, None, "rejected"))
        raise
    except Exception as error:
        # Anything else an SDK raised on a request nobody has authenticated yet is a bad
        # signature to the sender, never a 500 (the error's type is logged, not its text).
        log.warning("webhook_unreadable", provider=provider.name, error_type=type(error).__name__)
        await db.run(lambda s: receipt(s, provider.name, None, "rejected"))
        raise InvalidSignature("the webhook could not be verified") from None


async def record_once(session: AsyncSession, provider_name: str, event: ProviderEvent) -> bool:
    """Remember the event; True if this is the first time (the caller then acts on it)."""
    return await insert_new(
        session,
        events_table,
        {
            "provider": provider_name,
            "event_id": event.event_id[:255],
            "type": str(event.type)[:64],
            "outcome": "processed",
            "received_at": clock.now(),
        },
    )


async def set_outcome(
    session: AsyncSession, provider_name: str, event_id: str, outcome: str
) -> None:
    await session.execute(
        update(events_table)
        .where(
            events_table.c.provider == provider_name,
            events_table.c.event_id == event_id[:255],
        )
        .values(outcome=outcome)
    )


async def receipt(session: AsyncSession, provider: str, event_id: str | None, outcome: str) -> None:
    await session.execute(
        insert(receipts_table),
        {
            "provider": provider,
            "event_id": event_id[:255] if event_id else None,
            "outcome": outcome,
            "received_at": clock.now(),
        },
    )


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
