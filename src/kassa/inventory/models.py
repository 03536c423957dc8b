"""Stock levels, holds and their lines, and the append-only stock ledger."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from kassa import clock
from kassa.db import Base, UTCDateTime


class StockLevel(Base):
    """One row per variant. The CHECKs are promise 1: nothing can ever oversell this row."""

    __tablename__ = "stock_levels"
    __table_args__ = (
        CheckConstraint("reserved >= 0", name="reserved_not_negative"),
        CheckConstraint("reserved <= on_hand", name="reserved_within_on_hand"),
        CheckConstraint("low_stock_threshold >= 0", name="threshold_not_negative"),
    )

    variant_id: Mapped[str] = mapped_column(ForeignKey("variants.id"), primary_key=True)
    # Copied from the variant (SKUs never change) so the hot conditional UPDATE needs no join.
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    on_hand: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved: Mapped[int] = mapped_column(BigInteger, default=0)
    low_stock_threshold: Mapped[int] = mapped_column(BigInteger, default=0)


class Hold(Base):
    """A group of lines held together until one expiry time."""

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint("state IN ('active', 'committed', 'released', 'expired')", name="state"),
        # The sweeper's and lazy reclaim's query: active holds by expiry.
        Index(
            "ix_holds_active_expires_at",
            "expires_at",
            postgresql_where=text("state = 'active'"),
            sqlite_where=text("state = 'active'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    state: Mapped[str] = mapped_column(String(16), default="active")
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reference: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class HoldLine(Base):
    __tablename__ = "hold_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        # "Is anything overdue on this SKU?" in one index probe, whatever the number of active
        # holds on it: asked by every one-line hold on PostgreSQL and by lazy reclaim.
        Index(
            "ix_hold_lines_sku_active_until",
            "sku",
            "active_until",
            postgresql_where=text("active_until IS NOT NULL"),
            sqlite_where=text("active_until IS NOT NULL"),
        ),
    )

    hold_id: Mapped[str] = mapped_column(ForeignKey("holds.id"), primary_key=True)
    sku: Mapped[str] = mapped_column(String(64), primary_key=True)
    quantity: Mapped[int] = mapped_column(BigInteger)
    # The hold's expiry while the hold is active; NULL once it has ended.
    active_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StockMovement(Base):
    """The append-only ledger (promise 4): database triggers refuse UPDATE and DELETE.

    `kind` is one of initial, hold, release, expire, commit, restock, adjustment (and return,
    with orders); `reference_type`/`reference_id` name what caused it (variant, hold,
    adjustment)."""

    __tablename__ = "stock_movements"
    __table_args__ = (
        Index("ix_stock_movements_sku_id", "sku", "id"),
        # Nobody reads the new ids back on insert; skip the RETURNING that would fetch them.
        {"implicit_returning": False},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    sku: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    on_hand_delta: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_delta: Mapped[int] = mapped_column(BigInteger, default=0)
    reference_type: Mapped[str] = mapped_column(String(16))
    reference_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(255))
    actor_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
