"""Coupons, shipping rates and tax rates: managed by admins, read by pricing, redeemed once each.

`redeem_coupon` is the one place a coupon's use is counted: one conditional UPDATE that succeeds
only while the coupon is active, unexpired and under its limit, so concurrent checkouts can
never use it more often than the limit (the table's CHECK refuses it as well).
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeVar

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.checkout.models import Coupon, ShippingRate, TaxRate
from kassa.checkout.pricing import CouponNotApplicable, CouponTerms, ShippingTerms
from kassa.db import upsert
from kassa.errors import Conflict, InvalidInput, NotFound

R = TypeVar("R", ShippingRate, TaxRate)


class CouponNotFound(NotFound):
    title = "Coupon not found"


class CouponExists(Conflict):
    title = "Coupon code already in use"


class RateNotFound(NotFound):
    title = "No rate for that country"


def normalize_code(code: str) -> str:
    return code.strip().upper()


async def create_coupon(
    session: AsyncSession,
    *,
    code: str,
    kind: str,
    value: int,
    currency: str | None,
    min_subtotal_amount: int,
    expires_at: datetime | None,
    usage_limit: int | None,
) -> Coupon:
    if kind == "percent" and not 1 <= value <= 100:
        raise InvalidInput("value", "a percent coupon takes 1 to 100")
    if kind == "fixed" and currency is None:
        raise InvalidInput("currency", "a fixed coupon needs the currency of its amount")
    coupon = Coupon(
        code=normalize_code(code),
        kind=kind,
        value=value,
        currency=currency if kind == "fixed" else None,
        min_subtotal_amount=min_subtotal_amount,
        expires_at=expires_at,
        usage_limit=usage_limit,
        times_used=0,
        active=True,
        created_at=clock.now(),
    )
    session.add(coupon)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        raise CouponExists(f"coupon {coupon.code} already exists") from None
    return coupon


async def list_coupons(session: AsyncSession, *, limit: int, after: str | None) -> list[Coupon]:
    query = select(Coupon).order_by(Coupon.code).limit(limit)
    if after is not None:
        query = query.where(Coupon.code > after)
    return list(await session.scalars(query))


async def update_coupon(
    session: AsyncSession,
    code: str,
    *,
    active: bool | None,
    expires_at: datetime | None,
    clear_expiry: bool,
    usage_limit: int | None,
) -> Coupon:
    coupon = await session.get(Coupon, normalize_code(code), with_for_update=True)
    if coupon is None:
        raise CouponNotFound(f"no coupon {code}")
    if usage_limit is not None and usage_limit < coupon.times_used:
        raise InvalidInput("usage_limit", f"it has been used {coupon.times_used} times already")
    if active is not None:
        coupon.active = active
    if expires_at is not None or clear_expiry:
        coupon.expires_at = expires_at
    if usage_limit is not None:
        coupon.usage_limit = usage_limit
    await session.flush()
    return coupon


def coupon_terms(coupon: Coupon) -> CouponTerms:
    return CouponTerms(
        code=coupon.code,
        kind="percent" if coupon.kind == "percent" else "fixed",
        value=coupon.value,
        currency=coupon.currency,
        min_subtotal_amount=coupon.min_subtotal_amount,
        expires_at=coupon.expires_at,
    )


async def find_coupon(session: AsyncSession, code: str) -> CouponTerms:
    """The terms of an active coupon, for pricing; unknown or inactive → not applicable."""
    coupon = await session.get(Coupon, normalize_code(code))
    if coupon is None or not coupon.active:
        raise CouponNotApplicable(f"no coupon {normalize_code(code)}", reason="unknown")
    return coupon_terms(coupon)


async def redeem_coupon(
    session: AsyncSession, code: str, *, now: datetime | None = None
) -> CouponTerms:
    """Count one use and return the coupon's terms, or raise CouponNotApplicable (`reason`:
    used_up, expired or unknown). One conditional UPDATE decides (see the module doc)."""
    at = now or clock.now()
    result = await session.execute(
        update(Coupon)
        .where(
            Coupon.code == normalize_code(code),
            Coupon.active.is_(True),
            or_(Coupon.expires_at.is_(None), Coupon.expires_at > at),
            or_(Coupon.usage_limit.is_(None), Coupon.times_used < Coupon.usage_limit),
        )
        .values(times_used=Coupon.times_used + 1)
        .returning(
            Coupon.code,
            Coupon.kind,
            Coupon.value,
            Coupon.currency,
            Coupon.min_subtotal_amount,
            Coupon.expires_at,
        )
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    if row is not None:
        return CouponTerms(
            code=row.code,
            kind=row.kind,
            value=row.value,
            currency=row.currency,
            min_subtotal_amount=row.min_subtotal_amount,
            expires_at=row.expires_at,
        )
    coupon = await session.get(Coupon, normalize_code(code))
    if coupon is None or not coupon.active:
        raise CouponNotApplicable(f"no coupon {normalize_code(code)}", reason="unknown")
    if coupon.expires_at is not None and coupon.expires_at <= at:
        raise CouponNotApplicable(f"coupon {coupon.code} has expired", reason="expired")
    raise CouponNotApplicable(f"coupon {coupon.code} has been used up", reason="used_up")


async def release_coupon(session: AsyncSession, code: str, *, uses: int = 1) -> None:
    """Give back `uses` uses (their checkouts were cancelled or expired)."""
    await session.execute(
        update(Coupon)
        .where(Coupon.code == code, Coupon.times_used >= uses)
        .values(times_used=Coupon.times_used - uses)
        .execution_options(synchronize_session=False)
    )


async def set_shipping_rate(
    session: AsyncSession,
    *,
    country: str,
    currency: str,
    amount: int,
    free_above_amount: int | None,
) -> ShippingRate:
    values = {
        "country": country,
        "currency": currency,
        "amount": amount,
        "free_above_amount": free_above_amount,
    }
    await upsert(session, ShippingRate, values, key=("country", "currency"))
    result = await session.execute(
        select(ShippingRate)
        .where(ShippingRate.country == country, ShippingRate.currency == currency)
        .execution_options(populate_existing=True)
    )
    return result.scalar_one()


async def set_tax_rate(session: AsyncSession, *, country: str, basis_points: int) -> TaxRate:
    await upsert(
        session, TaxRate, {"country": country, "basis_points": basis_points}, key="country"
    )
    return await _rate(session, TaxRate, country)


async def shipping_terms(
    session: AsyncSession, country: str, currency: str
) -> ShippingTerms | None:
    rate = await session.get(ShippingRate, (country, currency))
    if rate is None:
        return None
    return ShippingTerms(rate.country, rate.amount, rate.free_above_amount)


async def tax_basis_points(session: AsyncSession, country: str) -> int:
    """The country's tax rate; a country without one is taxed at 0."""
    rate = await session.get(TaxRate, country)
    return rate.basis_points if rate else 0


async def list_rates(session: AsyncSession, model: type[R]) -> list[R]:
    return list(await session.scalars(select(model).order_by(model.country)))


async def delete_rate(
    session: AsyncSession,
    model: type[ShippingRate] | type[TaxRate],
    country: str,
    *,
    currency: str | None = None,
) -> None:
    query = delete(model).where(model.country == country)
    if currency is not None and model is ShippingRate:
        query = query.where(ShippingRate.currency == currency)
    result = await session.execute(query)
    if result.rowcount == 0:  # type: ignore[attr-defined]
        raise RateNotFound(f"no rate for {country}" + (f" in {currency}" if currency else ""))


async def _rate(session: AsyncSession, model: type[R], country: str) -> R:
    result = await session.execute(
        select(model).where(model.country == country).execution_options(populate_existing=True)
    )
    return result.scalar_one()
