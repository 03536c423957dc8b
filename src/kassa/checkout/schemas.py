"""Request and response bodies of the coupon, shipping-rate and tax-rate admin endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

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


class ShippingRateOut(BaseModel):
    country: str
    amount: int
    free_above_amount: int | None


class TaxRateIn(Input):
    basis_points: Annotated[int, Field(ge=0, le=10_000, description="1900 is 19 %")]


class TaxRateOut(BaseModel):
    country: str
    basis_points: int
