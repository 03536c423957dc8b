"""Coupons, shipping and tax rates (what pricing reads), checkouts and their phase records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from kassa import clock
from kassa.db import Base, UTCDateTime


class Coupon(Base):
    __tablename__ = "coupons"
    __table_args__ = (
        CheckConstraint("kind IN ('percent', 'fixed')", name="kind"),
        CheckConstraint(
            "(kind = 'percent' AND value BETWEEN 1 AND 100) OR (kind = 'fixed' AND value > 0)",
            name="value",
        ),
        # The usage limit holds in the database itself, whatever races above it.
        CheckConstraint("usage_limit IS NULL OR times_used <= usage_limit", name="within_limit"),
        CheckConstraint("times_used >= 0", name="times_used_not_negative"),
    )

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    value: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    min_subtotal_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    usage_limit: Mapped[int | None] = mapped_column(BigInteger)
    times_used: Mapped[int] = mapped_column(BigInteger, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class ShippingRate(Base):
    """What shipping to a country costs, in one currency: a cart pays the rate of its own
    currency, never another currency's amount as if it were its own."""

    __tablename__ = "shipping_rates"
    __table_args__ = (CheckConstraint("amount >= 0", name="amount_not_negative"),)

    country: Mapped[str] = mapped_column(String(2), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    free_above_amount: Mapped[int | None] = mapped_column(BigInteger)


class TaxRate(Base):
    __tablename__ = "tax_rates"
    __table_args__ = (
        CheckConstraint("basis_points BETWEEN 0 AND 10000", name="basis_points_range"),
    )

    country: Mapped[str] = mapped_column(String(2), primary_key=True)
    basis_points: Mapped[int] = mapped_column(Integer)


_OPEN = text("state = 'open'")


class Checkout(Base):
    """A cart turned into held stock, a price snapshot and a payment."""

    __tablename__ = "checkouts"
    __table_args__ = (
        CheckConstraint("state IN ('open', 'completed', 'cancelled', 'expired')", name="state"),
        CheckConstraint("total_amount >= 0", name="total_not_negative"),
        # One open checkout per cart, enforced by the database (API.md: 409 checkout_active).
        Index(
            "uq_checkouts_open_per_cart",
            "cart_id",
            unique=True,
            postgresql_where=_OPEN,
            sqlite_where=_OPEN,
        ),
        Index(
            "ix_checkouts_open_expires_at", "expires_at", postgresql_where=_OPEN, sqlite_where=_OPEN
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    cart_id: Mapped[str] = mapped_column(ForeignKey("carts.id"), index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(16), default="open")
    email: Mapped[str] = mapped_column(String(320))
    shipping_address: Mapped[dict[str, Any]] = mapped_column(JSON)
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    # The price snapshot: [{"sku", "name", "vendor_id", "quantity", "unit_price_amount",
    # "line_amount"}], honoured until the checkout ends.
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    price_changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    subtotal_amount: Mapped[int] = mapped_column(BigInteger)
    discount_amount: Mapped[int] = mapped_column(BigInteger)
    shipping_amount: Mapped[int] = mapped_column(BigInteger)
    tax_amount: Mapped[int] = mapped_column(BigInteger)
    total_amount: Mapped[int] = mapped_column(BigInteger)
    hold_id: Mapped[str] = mapped_column(ForeignKey("holds.id"))
    payment_id: Mapped[str | None] = mapped_column(String(40))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Why the checkout ended without an order, or what a late payment came to.
    outcome_reason: Mapped[str | None] = mapped_column(String(255))
    # How long each phase of this checkout took (a failed attempt's phases are in
    # checkout_phases instead, since its checkout row was rolled back).
    validation_ms: Mapped[float | None] = mapped_column(Float)
    pricing_ms: Mapped[float | None] = mapped_column(Float)
    hold_ms: Mapped[float | None] = mapped_column(Float)
    payment_ms: Mapped[float | None] = mapped_column(Float)
    completion_ms: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CheckoutPhase(Base):
    """A phase that failed (validation, pricing, hold, payment creation, a payment the provider
    refused, a completion that ended in a refund), with its timing and what was rolled back.
    Successful phases are timed on the checkout row itself."""

    __tablename__ = "checkout_phases"
    __table_args__ = (
        CheckConstraint("outcome IN ('ok', 'failed')", name="outcome"),
        Index("ix_checkout_phases_created_at", "created_at"),
        {"implicit_returning": False},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    checkout_id: Mapped[str | None] = mapped_column(String(40), index=True)
    phase: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[str] = mapped_column(String(8))
    code: Mapped[str | None] = mapped_column(String(64))
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    # For a failure: what was rolled back; for a late payment: what became of it.
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
