"""Pricing as pure rules: subtotal, coupon discount, shipping, tax and total, in minor units.

No I/O here: the checkout service loads the lines, the coupon and the rates, calls `price`, and
stores the result. Every amount is an integer number of minor units of one currency.

Rounding: a percentage (a percent coupon, a tax rate) of an amount is rounded to the nearest minor
unit, halves up (`percent_of`). Order of the steps:

    subtotal = sum(quantity * unit_price_amount)
    discount = coupon on the subtotal, never more than the subtotal
    shipping = the country's rate, or 0 once subtotal - discount reaches its free-above threshold
    tax      = the country's rate on (subtotal - discount + shipping): shipping is taxed
    total    = subtotal - discount + shipping + tax            (never negative)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from kassa.errors import KassaError

BASIS_POINTS = 10_000  # a tax rate of 1_900 basis points is 19 %


class CouponNotApplicable(KassaError):
    status, code, title = 422, "coupon_not_applicable", "Coupon cannot be used"


class NotShippable(KassaError):
    status, code, title = 422, "validation_error", "No shipping to that country"


@dataclass(frozen=True)
class PricedLine:
    sku: str
    quantity: int
    unit_price_amount: int

    @property
    def line_amount(self) -> int:
        return self.quantity * self.unit_price_amount


@dataclass(frozen=True)
class CouponTerms:
    code: str
    kind: Literal["percent", "fixed"]
    value: int  # percent: 1 to 100; fixed: minor units
    currency: str | None = None  # fixed coupons only
    min_subtotal_amount: int = 0
    expires_at: datetime | None = None


@dataclass(frozen=True)
class ShippingTerms:
    country: str
    amount: int
    free_above_amount: int | None = None


@dataclass(frozen=True)
class Totals:
    currency: str
    lines: tuple[PricedLine, ...]
    subtotal_amount: int
    discount_amount: int
    shipping_amount: int
    tax_amount: int
    total_amount: int


def percent_of(amount: int, numerator: int, denominator: int) -> int:
    """amount * numerator / denominator, rounded to the nearest integer, halves up (amount >= 0)."""
    return (2 * amount * numerator + denominator) // (2 * denominator)


def coupon_discount(coupon: CouponTerms, subtotal: int, currency: str, now: datetime) -> int:
    """The discount `coupon` gives on `subtotal`; raises CouponNotApplicable with the reason."""
    if coupon.expires_at is not None and now >= coupon.expires_at:
        raise CouponNotApplicable(f"coupon {coupon.code} has expired", reason="expired")
    if subtotal < coupon.min_subtotal_amount:
        raise CouponNotApplicable(
            f"coupon {coupon.code} needs a subtotal of at least {coupon.min_subtotal_amount}",
            reason="below_minimum",
        )
    if coupon.kind == "percent":
        return percent_of(subtotal, coupon.value, 100)
    if coupon.currency != currency:
        raise CouponNotApplicable(
            f"coupon {coupon.code} is in {coupon.currency}, the cart in {currency}",
            reason="currency",
        )
    return min(coupon.value, subtotal)


def shipping_cost(rate: ShippingTerms | None, country: str, discounted_subtotal: int) -> int:
    if rate is None:
        raise NotShippable(f"no shipping rate for {country}", country=country)
    if rate.free_above_amount is not None and discounted_subtotal >= rate.free_above_amount:
        return 0
    return rate.amount


def price(
    lines: Sequence[PricedLine],
    *,
    currency: str,
    country: str,
    shipping_rate: ShippingTerms | None,
    tax_basis_points: int,
    coupon: CouponTerms | None = None,
    now: datetime,
) -> Totals:
    """The totals of a cart shipped to `country`, following the steps in this module's doc."""
    subtotal = sum(line.line_amount for line in lines)
    discount = coupon_discount(coupon, subtotal, currency, now) if coupon else 0
    shipping = shipping_cost(shipping_rate, country, subtotal - discount)
    tax = percent_of(subtotal - discount + shipping, tax_basis_points, BASIS_POINTS)
    return Totals(
        currency=currency,
        lines=tuple(lines),
        subtotal_amount=subtotal,
        discount_amount=discount,
        shipping_amount=shipping,
        tax_amount=tax,
        total_amount=subtotal - discount + shipping + tax,
    )
