"""Checkout and webhook stats over a time window (`GET /v1/admin/stats`, `kassa monitor`).

Started = checkouts created + attempts refused; completed / expired / cancelled = checkouts that
ended so in the window; phase timings from the checkout rows; failures from checkout_phases;
webhooks from webhook_events (processed, ignored, deferred) and webhook_receipts (duplicate,
rejected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.checkout.models import Checkout, CheckoutPhase
from kassa.payments.models import WebhookEvent, WebhookReceipt


@dataclass
class PhaseTiming:
    count: int
    mean_ms: float
    max_ms: float


@dataclass
class Stats:
    hours: int
    since: datetime
    started: int = 0
    completed: int = 0
    expired: int = 0
    cancelled: int = 0
    failed: int = 0
    success_rate: float | None = None
    failures_by_phase: dict[str, int] = field(default_factory=dict)
    failures_by_code: dict[str, int] = field(default_factory=dict)
    price_drift_rejections: int = 0
    payment_failures: int = 0
    late_payments_refunded: int = 0
    webhooks_received: int = 0
    webhooks_processed: int = 0
    webhooks_duplicated: int = 0
    webhooks_rejected: int = 0
    webhooks_ignored: int = 0
    # Kept until their subject appears (a refund notice before its reference was stored).
    webhooks_deferred: int = 0
    phase_timings: dict[str, PhaseTiming] = field(default_factory=dict)


async def collect(session: AsyncSession, *, hours: int) -> Stats:
    since = clock.now() - timedelta(hours=hours)
    stats = Stats(hours=hours, since=since)
    await _checkouts(session, stats, since)
    await _failures(session, stats, since)
    await _webhooks(session, stats, since)
    attempts = stats.started + stats.failed
    stats.started = attempts
    if attempts:
        stats.success_rate = round(stats.completed / attempts, 4)
    return stats


_TIMED = (
    ("validation", Checkout.validation_ms),
    ("pricing", Checkout.pricing_ms),
    ("hold", Checkout.hold_ms),
    ("payment", Checkout.payment_ms),
    ("completion", Checkout.completion_ms),
)


async def _checkouts(session: AsyncSession, stats: Stats, since: datetime) -> None:
    """Started (created) checkouts and how they ended, with the time each phase took."""
    row = (
        await session.execute(
            select(
                func.count(),
                *(func.avg(column) for _, column in _TIMED),
                *(func.max(column) for _, column in _TIMED),
                *(func.count(column) for _, column in _TIMED),
            ).where(Checkout.created_at >= since)
        )
    ).one()
    stats.started = int(row[0])
    n = len(_TIMED)
    for index, (phase, _) in enumerate(_TIMED):
        mean, longest, count = row[1 + index], row[1 + n + index], row[1 + 2 * n + index]
        if count:
            stats.phase_timings[phase] = PhaseTiming(
                int(count), round(float(mean), 3), round(float(longest), 3)
            )
    ended = await session.execute(
        select(Checkout.state, func.count())
        .where(Checkout.ended_at >= since, Checkout.state != "open")
        .group_by(Checkout.state)
    )
    for state, count in ended:
        if state == "completed":
            stats.completed = int(count)
        elif state == "expired":
            stats.expired = int(count)
        elif state == "cancelled":
            stats.cancelled = int(count)


async def _failures(session: AsyncSession, stats: Stats, since: datetime) -> None:
    rows = await session.execute(
        select(
            CheckoutPhase.phase,
            CheckoutPhase.code,
            CheckoutPhase.checkout_id.is_(None),
            func.count(),
        )
        .where(CheckoutPhase.created_at >= since, CheckoutPhase.outcome == "failed")
        .group_by(CheckoutPhase.phase, CheckoutPhase.code, CheckoutPhase.checkout_id.is_(None))
    )
    for phase, code, attempt_failed, count in rows:
        n = int(count)
        stats.failures_by_phase[phase] = stats.failures_by_phase.get(phase, 0) + n
        if code:
            stats.failures_by_code[code] = stats.failures_by_code.get(code, 0) + n
        if attempt_failed:
            stats.failed += n  # a refused start: exactly one failed phase per attempt
        if code == "price_changed":
            stats.price_drift_rejections += n
        if phase == "payment" and not attempt_failed:
            stats.payment_failures += n
        if phase == "completion":
            stats.late_payments_refunded += n


async def _webhooks(session: AsyncSession, stats: Stats, since: datetime) -> None:
    taken = await session.execute(
        select(WebhookEvent.outcome, func.count())
        .where(WebhookEvent.received_at >= since)
        .group_by(WebhookEvent.outcome)
    )
    for outcome, count in taken:
        if outcome == "processed":
            stats.webhooks_processed += int(count)
        elif outcome == "deferred":
            stats.webhooks_deferred += int(count)
        else:
            stats.webhooks_ignored += int(count)
    refused = await session.execute(
        select(WebhookReceipt.outcome, func.count())
        .where(WebhookReceipt.received_at >= since)
        .group_by(WebhookReceipt.outcome)
    )
    for outcome, count in refused:
        if outcome == "duplicate":
            stats.webhooks_duplicated += int(count)
        else:
            stats.webhooks_rejected += int(count)
    stats.webhooks_received = (
        stats.webhooks_processed
        + stats.webhooks_ignored
        + stats.webhooks_deferred
        + stats.webhooks_duplicated
        + stats.webhooks_rejected
    )
