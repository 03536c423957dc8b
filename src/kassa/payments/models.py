"""Payments, refunds, received webhook events and the outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from kassa import clock
from kassa.db import Base, UTCDateTime


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'refunded', 'partially_refunded')",
            name="status",
        ),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        # Refunds never exceed what was paid (promise 6), whatever races above this.
        CheckConstraint("refunded_amount >= 0 AND refunded_amount <= amount", name="refund_range"),
        UniqueConstraint("provider", "provider_reference"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    checkout_id: Mapped[str] = mapped_column(ForeignKey("checkouts.id"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    provider_reference: Mapped[str] = mapped_column(String(255))
    client_secret: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(24), default="pending")
    amount: Mapped[int] = mapped_column(BigInteger)
    # What refunds have been issued for (counted when a refund is created, before the provider
    # confirms it), so two refunds racing can never both pass the limit.
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    # When the buyer last submitted payment details (the provider is working on it).
    processing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("status IN ('pending', 'succeeded', 'failed')", name="status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    order_id: Mapped[str | None] = mapped_column(String(40), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    provider_reference: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookEvent(Base):
    """Every provider event that took effect: the primary key makes it once (promise 5)."""

    __tablename__ = "webhook_events"

    provider: Mapped[str] = mapped_column(String(16), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    # processed, or ignored (an event Kassa has nothing to do with)
    outcome: Mapped[str] = mapped_column(String(16), default="processed")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now, index=True)


class WebhookReceipt(Base):
    """Webhook requests that did not take effect (duplicate, rejected), for stats; the ones that
    did are the webhook_events rows."""

    __tablename__ = "webhook_receipts"
    __table_args__ = (
        CheckConstraint("outcome IN ('duplicate', 'rejected')", name="outcome"),
        Index("ix_webhook_receipts_received_at", "received_at"),
        {"implicit_returning": False},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    provider: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str | None] = mapped_column(String(255))
    outcome: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


_PENDING = text("state = 'pending'")


class OutboxMessage(Base):
    """Work that must happen after a commit (promise 7): written in the same transaction as the
    change that calls for it, delivered by the outbox loop with retries and backoff."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint("state IN ('pending', 'done', 'dead')", name="state"),
        Index(
            "ix_outbox_pending_due",
            "next_attempt_at",
            postgresql_where=_PENDING,
            sqlite_where=_PENDING,
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(8), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Due time; while a worker is delivering, its lease (a worker that dies is retried then).
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
