"""Carts and their items."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from kassa import clock
from kassa.db import Base, UTCDateTime


class Cart(Base):
    __tablename__ = "carts"
    __table_args__ = (
        CheckConstraint("state IN ('open', 'closed')", name="state"),
        # One open cart per signed-in user, enforced by the database.
        Index(
            "uq_carts_open_per_user",
            "user_id",
            unique=True,
            postgresql_where=text("state = 'open' AND user_id IS NOT NULL"),
            sqlite_where=text("state = 'open' AND user_id IS NOT NULL"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # SHA-256 of the cart token: the token itself is shown once, at creation.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(16), default="open")
    currency: Mapped[str] = mapped_column(String(3))
    # Bumped by every change, under the row lock: concurrent changes queue, none is lost, and a
    # client that sends the version it saw gets 409 when someone else changed the cart since.
    version: Mapped[int] = mapped_column(BigInteger, default=1)
    # Set while a checkout of this cart is open (until it ends or its time is up): changes are
    # then refused with 409 cart_locked.
    locked_by_checkout: Mapped[str | None] = mapped_column(String(40))
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class CartItem(Base):
    __tablename__ = "cart_items"
    __table_args__ = (
        UniqueConstraint("cart_id", "sku"),
        CheckConstraint("quantity > 0 AND quantity <= 1000", name="quantity_range"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    cart_id: Mapped[str] = mapped_column(ForeignKey("carts.id"), index=True)
    sku: Mapped[str] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(BigInteger)
    # The unit price the buyer last saw for this line (set when it was added or changed):
    # checkout compares today's price with it (KASSA_PRICE_DRIFT_TOLERANCE_PERCENT).
    seen_unit_price_amount: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
