"""Orders, their lines, their audit trail and returns."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, ForeignKey, Integer, Sequence, String
from sqlalchemy.orm import Mapped, mapped_column

from kassa import clock
from kassa.db import Base, UTCDateTime
from kassa.orders.states import OrderPaymentStatus, OrderStatus
from kassa.states import one_of

ORDER_NUMBERS = Sequence("order_number_seq", start=1001)


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint(one_of("status", OrderStatus), name="status"),
        CheckConstraint(one_of("payment_status", OrderPaymentStatus), name="payment_status"),
        CheckConstraint(
            "refunded_amount >= 0 AND refunded_amount <= total_amount", name="refund_range"
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # A PostgreSQL sequence hands out numbers; on SQLite (one writer at a time) the insert
    # takes max + 1 (see orders.service.create_order).
    number: Mapped[int] = mapped_column(BigInteger, ORDER_NUMBERS, unique=True)
    # Exactly one order per checkout (promise 6), enforced by the database.
    checkout_id: Mapped[str] = mapped_column(ForeignKey("checkouts.id"), unique=True)
    cart_id: Mapped[str] = mapped_column(String(40), index=True)
    user_id: Mapped[str | None] = mapped_column(String(40), index=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"))
    status: Mapped[str] = mapped_column(String(16))
    payment_status: Mapped[str] = mapped_column(String(24))
    email: Mapped[str] = mapped_column(String(320))
    currency: Mapped[str] = mapped_column(String(3))
    subtotal_amount: Mapped[int] = mapped_column(BigInteger)
    discount_amount: Mapped[int] = mapped_column(BigInteger)
    shipping_amount: Mapped[int] = mapped_column(BigInteger)
    tax_amount: Mapped[int] = mapped_column(BigInteger)
    total_amount: Mapped[int] = mapped_column(BigInteger)
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    shipping_address: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class OrderLine(Base):
    __tablename__ = "order_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "returned_quantity >= 0 AND returned_quantity <= quantity", name="returned_range"
        ),
        {"implicit_returning": False},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    sku: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    vendor_id: Mapped[str | None] = mapped_column(String(40), index=True)
    quantity: Mapped[int] = mapped_column(BigInteger)
    unit_price_amount: Mapped[int] = mapped_column(BigInteger)
    line_amount: Mapped[int] = mapped_column(BigInteger)
    # Units received back through returns (they went back to stock).
    returned_quantity: Mapped[int] = mapped_column(BigInteger, default=0)


class OrderEvent(Base):
    """The order's audit trail: status changes, payment events, refunds, returns and notes."""

    __tablename__ = "order_events"
    __table_args__ = ({"implicit_returning": False},)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(String(1000))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)


class OrderReturn(Base):
    __tablename__ = "order_returns"
    __table_args__ = (CheckConstraint("status IN ('requested', 'received')", name="status"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    lines: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(String(1000))
    status: Mapped[str] = mapped_column(String(16), default="requested")
    requested_by: Mapped[str] = mapped_column(String(64))
    refund_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=clock.now)
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
