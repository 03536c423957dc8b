"""Request and response bodies of the order endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from kassa.fields import MAX_AMOUNT, Input, Sku

OrderStatus = Literal[
    "pending", "paid", "processing", "shipped", "delivered", "cancelled", "returned"
]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class OrderLineOut(BaseModel):
    sku: str
    name: str
    quantity: int
    unit_price_amount: int
    line_amount: int
    vendor_id: str | None
    returned_quantity: int


class OrderOut(BaseModel):
    id: str
    number: int
    status: OrderStatus
    payment_status: Literal["unpaid", "paid", "partially_refunded", "refunded"]
    checkout_id: str
    payment_id: str
    email: str
    currency: str
    lines: list[OrderLineOut]
    subtotal_amount: int
    discount_amount: int
    shipping_amount: int
    tax_amount: int
    total_amount: int
    refunded_amount: int
    shipping_address: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class OrderEventOut(BaseModel):
    kind: str
    from_status: str | None
    to_status: str | None
    actor: str
    note: str | None
    data: dict[str, Any] | None
    created_at: datetime


class TransitionIn(Input):
    to: OrderStatus
    note: Annotated[str, StringConstraints(max_length=1000)] | None = None


class CancelIn(Input):
    reason: Reason


class RefundIn(Input):
    amount: Annotated[int, Field(ge=1, le=MAX_AMOUNT)] | None = None
    reason: Reason


class RefundOut(BaseModel):
    id: str
    payment_id: str
    order_id: str | None
    amount: int
    reason: str
    status: str
    created_at: datetime


class ReturnLineIn(Input):
    sku: Sku
    quantity: Annotated[int, Field(ge=1, le=1_000_000)]


class ReturnIn(Input):
    lines: Annotated[list[ReturnLineIn], Field(min_length=1, max_length=100)]
    reason: Reason


class ReturnOut(BaseModel):
    id: str
    order_id: str
    lines: list[dict[str, Any]]
    reason: str
    status: Literal["requested", "received"]
    refund_id: str | None
    created_at: datetime
    received_at: datetime | None
