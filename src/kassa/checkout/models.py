"""Coupons, shipping rates and tax rates: what pricing reads."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Integer, String
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
    __tablename__ = "shipping_rates"
    __table_args__ = (CheckConstraint("amount >= 0", name="amount_not_negative"),)

    country: Mapped[str] = mapped_column(String(2), primary_key=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    free_above_amount: Mapped[int | None] = mapped_column(BigInteger)


class TaxRate(Base):
    __tablename__ = "tax_rates"
    __table_args__ = (
        CheckConstraint("basis_points BETWEEN 0 AND 10000", name="basis_points_range"),
    )

    country: Mapped[str] = mapped_column(String(2), primary_key=True)
    basis_points: Mapped[int] = mapped_column(Integer)
