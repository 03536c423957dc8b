"""Finishing what a crash interrupted, and reconcile: asking the provider instead of waiting.

A checkout start records the payment as `creating`, then asks the provider, then stores the
answer. A process that dies in between leaves a `creating` payment holding stock: the sweeper
asks the provider again with the same idempotency key (the same payment comes back, nothing is
created twice) and stores the answer, or, if the provider still does not answer, ends the
checkout so that its stock comes back.

Reconcile asks the provider about payments still pending after KASSA_RECONCILE_AFTER_SECONDS and
applies what it says exactly as a webhook would (`events.apply_once`), so a lost webhook never
loses an order, and a verdict that arrives both ways takes effect once.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from kassa import clock
from kassa.checkout import events
from kassa.checkout import service as checkouts
from kassa.config import Settings
from kassa.db import Database
from kassa.payments import service as payments
from kassa.payments.providers.base import EventType, ProviderEvent
from kassa.payments.providers.registry import Providers
from kassa.payments.states import PaymentStatus

log = structlog.get_logger("kassa.recovery")

# Interrupted starts asked about per sweep (together), and payments reconciled per sweep.
BATCH = 20


def interrupted_after(settings: Settings) -> timedelta:
    """How old a `creating` payment must be before the sweeper takes it over: well past the
    longest the request that made it could still be waiting for the provider."""
    return timedelta(seconds=2 * settings.provider_timeout_seconds + 30)


async def finish_interrupted_starts(db: Database, settings: Settings, providers: Providers) -> int:
    """Returns how many interrupted starts were finished (stored or given up). Each is claimed
    first (several sweepers never ask the provider about the same one at once), and a batch is
    asked about together, so a provider that does not answer costs one timeout per sweep."""
    older_than = clock.now() - interrupted_after(settings)
    claimed = await db.run(
        lambda s: payments.claim_interrupted(s, older_than=older_than, limit=BATCH)
    )
    outcomes = await asyncio.gather(
        *(_finish(db, settings, providers, payment) for payment in claimed)
    )
    return sum(outcomes)


async def _finish(db: Database, settings: Settings, providers: Providers, payment: Any) -> int:
    try:
        provider = providers.get(payment.provider)
        created = await asyncio.wait_for(
            provider.create_payment(
                payment_id=payment.id,
                checkout_id=payment.checkout_id,
                amount=payment.amount,
                currency=payment.currency,
            ),
            timeout=settings.provider_timeout_seconds,
        )
    except Exception as error:
        log.warning(
            "interrupted_start_given_up", payment_id=payment.id, error_type=type(error).__name__
        )
        await db.run(lambda s: checkouts.abandon_start(s, payment.id, "provider_unavailable"))
        return 1
    await db.run(lambda s: checkouts.payment_created(s, payment.id, created, payment_ms=0.0))
    log.info("interrupted_start_finished", payment_id=payment.id)
    return 1


async def _look_later(db: Database, payment: Any, settings: Settings) -> None:
    after = settings.reconcile_after_seconds
    await db.run(lambda s: payments.asked_provider(s, payment, after_seconds=after))


@dataclass
class ReconcileResult:
    checked: int = 0
    succeeded: int = 0
    failed: int = 0
    unchanged: int = 0


async def reconcile(
    db: Database, ctx: events.EventContext, providers: Providers, settings: Settings
) -> ReconcileResult:
    """Ask the provider about every payment still pending after RECONCILE_AFTER_SECONDS."""
    older_than = clock.now() - timedelta(seconds=settings.reconcile_after_seconds)
    async with db.read() as session:
        pending = await payments.pending_at_provider(session, older_than=older_than, limit=BATCH)
    result = ReconcileResult()
    for payment in pending:
        result.checked += 1
        verdict = await _reconcile_one(db, ctx, providers, settings, payment)
        setattr(result, verdict, getattr(result, verdict) + 1)
    if result.checked:
        log.info("reconcile", **result.__dict__)
    return result


async def _reconcile_one(
    db: Database,
    ctx: events.EventContext,
    providers: Providers,
    settings: Settings,
    payment: Any,
) -> str:
    """Ask about one payment and apply a new verdict; returns succeeded, failed or unchanged."""
    assert payment.provider_reference is not None
    try:
        provider = providers.get(payment.provider)
        said = await asyncio.wait_for(
            provider.fetch_payment(payment.provider_reference),
            timeout=settings.provider_timeout_seconds,
        )
    except Exception as error:
        log.warning(
            "reconcile_lookup_failed", payment_id=payment.id, error_type=type(error).__name__
        )
        await _look_later(db, payment, settings)
        return "unchanged"
    known_failure = said.status == "failed" and payment.status == PaymentStatus.FAILED
    if said.status not in ("succeeded", "failed") or known_failure:
        await _look_later(db, payment, settings)
        return "unchanged"
    # One id per verdict on one attempt: the same verdict found twice is a duplicate, and a
    # webhook carrying it too changes nothing more (the payment's status machine).
    attempt = int(payment.processing_since.timestamp()) if payment.processing_since else 0
    event = ProviderEvent(
        event_id=f"reconcile_{payment.id}_{said.status}_{attempt}",
        type=EventType.PAYMENT_SUCCEEDED
        if said.status == "succeeded"
        else EventType.PAYMENT_FAILED,
        provider_reference=payment.provider_reference,
        payment_id=payment.id,
        amount=said.amount,
        currency=said.currency,
        failure_code=said.failure_code,
    )
    outcome = await db.run(lambda s: events.apply_once(s, ctx, payment.provider, event))
    return str(said.status) if outcome == "processed" else "unchanged"
