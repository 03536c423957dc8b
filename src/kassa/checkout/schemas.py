"""Request and response bodies: coupons, shipping and tax rates (admin) and checkouts."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, EmailStr, Field, StringConstraints

from kassa.fields import MAX_AMOUNT, Amount, Input, Timestamp

CouponCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[a-z]{3}$")]


class CouponCreate(Input):
    code: CouponCode
    kind: Literal["percent", "fixed"]
    value: Annotated[
        int, Field(ge=1, le=MAX_AMOUNT, description="percent: 1-100; fixed: minor units")
    ]
    currency: Currency | None = None
    min_subtotal_amount: Amount = 0
    expires_at: Timestamp | None = None
    usage_limit: Annotated[int, Field(ge=1, le=10**9)] | None = None


class CouponPatch(Input):
    active: bool | None = None
    expires_at: Timestamp | None = Field(default=None, description="null clears the expiry")
    usage_limit: Annotated[int, Field(ge=1, le=10**9)] | None = None


class CouponOut(BaseModel):
    code: str
    kind: str
    value: int
    currency: str | None
    min_subtotal_amount: int
    expires_at: datetime | None
    usage_limit: int | None
    times_used: int
    active: bool


class ShippingRateIn(Input):
    amount: Amount
    free_above_amount: Amount | None = None
    currency: Currency | None = Field(default=None, description="default: KASSA_CURRENCY")


class ShippingRateOut(BaseModel):
    country: str
    currency: str
    amount: int
    free_above_amount: int | None


class TaxRateIn(Input):
    basis_points: Annotated[int, Field(ge=0, le=10_000, description="1900 is 19 %")]


class TaxRateOut(BaseModel):
    country: str
    basis_points: int


Country2 = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2}$", to_lower=True)]
Line = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]


class AddressIn(Input):
    name: Line
    line1: Line
    line2: Line | None = None
    city: Line
    postal_code: Annotated[str, StringConstraints(min_length=1, max_length=20)]
    country: Country2 = Field(description="ISO 3166-1 alpha-2 (any case)")


class CheckoutCreate(Input):
    cart_id: Annotated[str, StringConstraints(max_length=64)]
    email: EmailStr
    shipping_address: AddressIn
    coupon_code: CouponCode | None = None
    provider: Literal["sandbox", "stripe", "razorpay"] | None = None


class ConfirmIn(Input):
    """Razorpay Checkout.js's handler arguments: `razorpay_payment_id` and
    `razorpay_signature`."""

    provider_payment_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    signature: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None


class SnapshotLineOut(BaseModel):
    sku: str
    name: str
    quantity: int
    unit_price_amount: int
    line_amount: int


class PriceChangeOut(BaseModel):
    sku: str
    old_price_amount: int
    new_price_amount: int


class CheckoutHoldOut(BaseModel):
    id: str
    state: str
    expires_at: datetime
    lines: list[dict[str, int | str]]


class CheckoutPaymentOut(BaseModel):
    """What the buyer's browser needs to pay: for Stripe `client_secret` and `publishable_key`,
    for Razorpay `key_id`, `order_id`, `amount` and `currency` (Checkout.js)."""

    id: str
    provider: str
    status: str
    amount: int
    currency: str
    client_secret: str | None = None
    provider_reference: str | None
    publishable_key: str | None = None
    key_id: str | None = None
    order_id: str | None = None


class CheckoutOut(BaseModel):
    id: str
    state: Literal["open", "completed", "cancelled", "expired"]
    cart_id: str
    email: str
    expires_at: datetime
    seconds_left: int
    currency: str
    lines: list[SnapshotLineOut]
    price_changes: list[PriceChangeOut]
    coupon_code: str | None
    subtotal_amount: int
    discount_amount: int
    shipping_amount: int
    tax_amount: int
    total_amount: int
    shipping_address: dict[str, str]
    hold: CheckoutHoldOut
    payment: CheckoutPaymentOut | None
    order_id: str | None = None
    outcome_reason: str | None = None
    created_at: datetime
