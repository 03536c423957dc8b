"""Payments, refunds, received webhook events, and the sandbox provider's own books."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from kassa import clock
from kassa.db import Base, UTCDateTime
from kassa.payments.states import PaymentStatus, RefundStatus
from kassa.states import one_of


class Payment(Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint(one_of("status", PaymentStatus), name="status"),
        CheckConstraint("amount >= 0", name="amount_not_negative"),
        # Refunds never exceed what was paid (promise 6), whatever races above this.
        CheckConstraint("refunded_amount >= 0 AND refunded_amount <= amount", name="refund_range"),
        UniqueConstraint("provider", "provider_reference"),
        # Reconcile and the sweeper look payments up by status and age.
        Index("ix_payments_status_updated_at", "status", "updated_at"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    checkout_id: Mapped[str] = mapped_column(ForeignKey("checkouts.id"), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    # The provider's id for the payment; NULL while `creating` (the provider has not answered).
    provider_reference: Mapped[str | None] = mapped_column(String(255))
    client_secret: Mapped[str | None] = mapped_column(String(255))
    # What the buyer's browser needs besides the client secret (publishable key, key id, …).
    client_data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(24), default=PaymentStatus.CREATING)
    amount: Mapped[int] = mapped_column(BigInteger)
    # What refunds have been issued for (counted when a refund is created, before the provider
    # confirms it), so two refunds racing can never both pass the limit.
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    currency: Mapped[str] = mapped_column(String(3))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    # A success for another amount or currency (requires_review): what the provider took, and why
    # the payment is held for review.
    received_amount: Mapped[int | None] = mapped_column(BigInteger)
    received_currency: Mapped[str | None] = mapped_column(String(3))
    review_reason: Mapped[str | None] = mapped_column(String(255))
    # When reconcile may ask the provider about this payment again (NULL: once it is untouched
    # for KASSA_RECONCILE_AFTER_SECONDS). The wait grows with the payment's age.
    recheck_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the buyer last submitted payment details (the provider is working on it).
    processing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class Refund(Base):
    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(one_of("status", RefundStatus), name="status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    order_id: Mapped[str | None] = mapped_column(String(40), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    # NULL: the payment's currency. Set when giving back money taken in another currency.
    currency: Mapped[str | None] = mapped_column(String(3))
    # Counted against the payment's refunded_amount (False for giving back what a payment under
    # review took: that money was never counted as paid).
    counted: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    reason: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=RefundStatus.PENDING)
    provider_reference: Mapped[str | None] = mapped_column(String(255), index=True)
    failure_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    succeeded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


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


class SandboxCharge(Base):
    """The sandbox provider's own books: what its "bank" did with each payment, so that asking
    the sandbox about a payment (reconcile, confirm) has an answer, as with a real provider."""

    __tablename__ = "sandbox_charges"

    provider_reference: Mapped[str] = mapped_column(String(255), primary_key=True)
    payment_id: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16))
    failure_code: Mapped[str | None] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
