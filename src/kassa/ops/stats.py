"""Checkout and webhook stats over a time window, from the recorded phases and receipts
(`GET /v1/admin/stats`, `kassa monitor`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.checkout.models import CheckoutPhase
from kassa.payments.models import WebhookReceipt

PHASES = ("validation", "pricing", "hold", "payment", "completion", "cancel", "expiry")


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
    phase_timings: dict[str, PhaseTiming] = field(default_factory=dict)


async def collect(session: AsyncSession, *, hours: int) -> Stats:
    since = clock.now() - timedelta(hours=hours)
    stats = Stats(hours=hours, since=since)
    rows = await session.execute(
        select(
            CheckoutPhase.phase,
            CheckoutPhase.outcome,
            CheckoutPhase.code,
            CheckoutPhase.checkout_id.is_(None),
            func.count(),
            func.avg(CheckoutPhase.duration_ms),
            func.max(CheckoutPhase.duration_ms),
        )
        .where(CheckoutPhase.created_at >= since)
        .group_by(
            CheckoutPhase.phase,
            CheckoutPhase.outcome,
            CheckoutPhase.code,
            CheckoutPhase.checkout_id.is_(None),
        )
    )
    timings: dict[str, tuple[int, float, float]] = {}
    for phase, outcome, code, attempt_failed, count, mean, longest in rows:
        n = int(count)
        if phase == "validation":
            stats.started += n
        if outcome == "ok":
            if phase == "completion":
                stats.completed += n
            elif phase == "expiry":
                stats.expired += n
            elif phase == "cancel":
                stats.cancelled += n
            seen, total, top = timings.get(phase, (0, 0.0, 0.0))
            timings[phase] = (seen + n, total + float(mean or 0) * n, max(top, float(longest or 0)))
            continue
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
    stats.phase_timings = {
        phase: PhaseTiming(n, round(total / n, 3), round(top, 3))
        for phase, (n, total, top) in sorted(timings.items(), key=lambda kv: _order(kv[0]))
    }
    if stats.started:
        stats.success_rate = round(stats.completed / stats.started, 4)
    receipts = await session.execute(
        select(WebhookReceipt.outcome, func.count())
        .where(WebhookReceipt.received_at >= since)
        .group_by(WebhookReceipt.outcome)
    )
    for outcome, count in receipts:
        n = int(count)
        stats.webhooks_received += n
        if outcome == "processed":
            stats.webhooks_processed += n
        elif outcome == "duplicate":
            stats.webhooks_duplicated += n
        elif outcome == "rejected":
            stats.webhooks_rejected += n
        else:
            stats.webhooks_ignored += n
    return stats


def _order(phase: str) -> int:
    return PHASES.index(phase) if phase in PHASES else len(PHASES)
