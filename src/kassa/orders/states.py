"""The order status machine and the order's payment status machine."""

from __future__ import annotations

from enum import StrEnum

from kassa.states import Machine


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    PROCESSING = "processing"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    RETURNED = "returned"


OS = OrderStatus
ORDER = Machine(
    "order",
    OrderStatus,
    {
        OS.PENDING: frozenset({OS.PAID, OS.CANCELLED}),
        OS.PAID: frozenset({OS.PROCESSING, OS.CANCELLED}),
        OS.PROCESSING: frozenset({OS.SHIPPED, OS.CANCELLED}),
        OS.SHIPPED: frozenset({OS.DELIVERED}),
        OS.DELIVERED: frozenset({OS.RETURNED}),
        OS.CANCELLED: frozenset(),
        OS.RETURNED: frozenset(),
    },
)
# What a vendor may move an order with its lines to; an admin may make any allowed move.
VENDOR_TARGETS = frozenset({OS.PROCESSING, OS.SHIPPED})
# Statuses in which the buyer may still cancel.
BUYER_CANCELS_FROM = frozenset({OS.PENDING, OS.PAID})


class OrderPaymentStatus(StrEnum):
    UNPAID = "unpaid"
    PAID = "paid"
    PARTIALLY_REFUNDED = "partially_refunded"
    REFUNDED = "refunded"


OP = OrderPaymentStatus
# A refund moves the order's payment status when it is asked for; one the provider refuses
# moves it back.
ORDER_PAYMENT = Machine(
    "order payment",
    OrderPaymentStatus,
    {
        OP.UNPAID: frozenset({OP.PAID}),
        OP.PAID: frozenset({OP.PARTIALLY_REFUNDED, OP.REFUNDED}),
        OP.PARTIALLY_REFUNDED: frozenset({OP.PARTIALLY_REFUNDED, OP.REFUNDED, OP.PAID}),
        OP.REFUNDED: frozenset({OP.PARTIALLY_REFUNDED, OP.PAID}),
    },
)


def order_payment_status(total_amount: int, refunded_amount: int) -> OrderPaymentStatus:
    """A paid order's payment status once `refunded_amount` of it is refunded (or asked for)."""
    if refunded_amount <= 0:
        return OP.PAID
    return OP.REFUNDED if refunded_amount >= total_amount else OP.PARTIALLY_REFUNDED
