"""Pricing rules: worked examples, and the invariants hypothesis tries to break."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kassa.checkout.pricing import (
    CouponNotApplicable,
    CouponTerms,
    NotShippable,
    PricedLine,
    ShippingTerms,
    percent_of,
    price,
)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DE = ShippingTerms("de", amount=495, free_above_amount=5000)


def test_a_worked_example() -> None:
    totals = price(
        [PricedLine("MUG", 2, 1250), PricedLine("TEE", 1, 1999)],
        currency="eur",
        country="de",
        shipping_rate=DE,
        tax_basis_points=1900,
        coupon=CouponTerms("TEN", "percent", 10),
        now=NOW,
    )
    assert totals.subtotal_amount == 4499
    assert totals.discount_amount == 450  # 449.9 rounds to 450
    assert totals.shipping_amount == 495  # 4049 is under the free-shipping threshold
    assert totals.tax_amount == 863  # 19 % of 4544 = 863.36
    assert totals.total_amount == 4499 - 450 + 495 + 863


def test_rounding_is_half_up() -> None:
    assert percent_of(5, 10, 100) == 1  # 0.5 → 1
    assert percent_of(4, 10, 100) == 0  # 0.4 → 0
    assert percent_of(15, 10, 100) == 2  # 1.5 → 2
    assert percent_of(0, 1900, 10_000) == 0


def test_free_shipping_from_the_threshold_after_discount() -> None:
    def shipping(subtotal: int, coupon: CouponTerms | None = None) -> int:
        totals = price(
            [PricedLine("A", 1, subtotal)],
            currency="eur",
            country="de",
            shipping_rate=DE,
            tax_basis_points=0,
            coupon=coupon,
            now=NOW,
        )
        return totals.shipping_amount

    assert shipping(4999) == 495
    assert shipping(5000) == 0
    assert shipping(5500, CouponTerms("OFF", "fixed", 600, currency="eur")) == 495


def test_coupon_rules() -> None:
    lines = [PricedLine("A", 1, 1000)]

    def discount(coupon: CouponTerms, currency: str = "eur") -> int:
        return price(
            lines,
            currency=currency,
            country="de",
            shipping_rate=DE,
            tax_basis_points=0,
            coupon=coupon,
            now=NOW,
        ).discount_amount

    assert discount(CouponTerms("ALL", "percent", 100)) == 1000
    assert discount(CouponTerms("BIG", "fixed", 5000, currency="eur")) == 1000  # never beyond
    for coupon, reason in [
        (CouponTerms("OLD", "percent", 10, expires_at=NOW), "expired"),
        (CouponTerms("MIN", "percent", 10, min_subtotal_amount=1001), "below_minimum"),
        (CouponTerms("USD", "fixed", 100, currency="usd"), "currency"),
    ]:
        with pytest.raises(CouponNotApplicable) as caught:
            discount(coupon)
        assert caught.value.extra["reason"] == reason
    assert (
        discount(CouponTerms("SOON", "percent", 10, expires_at=NOW + timedelta(seconds=1))) == 100
    )


def test_no_rate_no_shipping() -> None:
    with pytest.raises(NotShippable):
        price(
            [PricedLine("A", 1, 1)],
            currency="eur",
            country="xx",
            shipping_rate=None,
            tax_basis_points=0,
            now=NOW,
        )


amounts = st.integers(min_value=0, max_value=10**12)
lines_st = st.lists(
    st.builds(PricedLine, st.text(min_size=1, max_size=8), st.integers(1, 1000), amounts),
    min_size=1,
    max_size=20,
)
coupons = st.one_of(
    st.none(),
    st.builds(CouponTerms, st.just("P"), st.just("percent"), st.integers(1, 100)),
    st.builds(CouponTerms, st.just("F"), st.just("fixed"), amounts, st.just("eur")),
)
rates = st.builds(ShippingTerms, st.just("de"), amounts, st.one_of(st.none(), amounts))


@given(lines_st, coupons, rates, st.integers(0, 10_000))
def test_invariants(lines, coupon, rate, tax_bp) -> None:
    totals = price(
        lines,
        currency="eur",
        country="de",
        shipping_rate=rate,
        tax_basis_points=tax_bp,
        coupon=coupon,
        now=NOW,
    )
    values = (
        totals.subtotal_amount,
        totals.discount_amount,
        totals.shipping_amount,
        totals.tax_amount,
        totals.total_amount,
    )
    assert all(isinstance(v, int) for v in values)
    assert totals.subtotal_amount == sum(line.quantity * line.unit_price_amount for line in lines)
    assert 0 <= totals.discount_amount <= totals.subtotal_amount
    assert totals.shipping_amount in (0, rate.amount)
    taxable = totals.subtotal_amount - totals.discount_amount + totals.shipping_amount
    exact = Fraction(taxable * tax_bp, 10_000)
    assert abs(totals.tax_amount - exact) <= Fraction(1, 2)
    assert totals.total_amount == taxable + totals.tax_amount >= 0


@given(amounts, st.integers(0, 10_000), st.integers(1, 10_000))
def test_percent_of_is_the_nearest_integer(amount, numerator, denominator) -> None:
    exact = Fraction(amount * numerator, denominator)
    result = percent_of(amount, numerator, denominator)
    assert abs(result - exact) <= Fraction(1, 2)
    if exact - int(exact) == Fraction(1, 2):
        assert result == int(exact) + 1  # halves go up
