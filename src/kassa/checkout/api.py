"""Admin endpoints for coupons, shipping rates and tax rates."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from kassa.auth.deps import AdminPrincipal
from kassa.checkout import rates
from kassa.checkout.models import ShippingRate, TaxRate
from kassa.checkout.schemas import (
    CouponCreate,
    CouponOut,
    CouponPatch,
    ShippingRateIn,
    ShippingRateOut,
    TaxRateIn,
    TaxRateOut,
)
from kassa.deps import AppSettings, ReadSession, WriteSession
from kassa.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor

router = APIRouter(prefix="/v1/admin", tags=["pricing"])

Code = Annotated[str, Path(max_length=64)]
Country = Annotated[str, Path(pattern=r"^[a-z]{2}$", description="ISO 3166-1 alpha-2, lowercase")]


@router.post("/coupons", status_code=201, response_model=CouponOut)
async def create_coupon(
    body: CouponCreate, _admin: AdminPrincipal, session: WriteSession
) -> CouponOut:
    coupon = await rates.create_coupon(session, **body.model_dump())
    return CouponOut.model_validate(coupon, from_attributes=True)


@router.get("/coupons", response_model=Page[CouponOut])
async def list_coupons(
    _admin: AdminPrincipal,
    session: ReadSession,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[CouponOut]:
    coupons = await rates.list_coupons(session, limit=limit + 1, after=decode_cursor(cursor))
    page = coupons[:limit]
    return Page(
        data=[CouponOut.model_validate(c, from_attributes=True) for c in page],
        next_cursor=encode_cursor(page[-1].code) if len(coupons) > limit else None,
    )


@router.patch("/coupons/{code}", response_model=CouponOut)
async def update_coupon(
    code: Code, body: CouponPatch, _admin: AdminPrincipal, session: WriteSession
) -> CouponOut:
    coupon = await rates.update_coupon(
        session,
        code,
        active=body.active,
        expires_at=body.expires_at,
        clear_expiry="expires_at" in body.model_fields_set and body.expires_at is None,
        usage_limit=body.usage_limit,
    )
    return CouponOut.model_validate(coupon, from_attributes=True)


@router.get("/shipping-rates", response_model=list[ShippingRateOut])
async def list_shipping_rates(
    _admin: AdminPrincipal, session: ReadSession
) -> list[ShippingRateOut]:
    found = await rates.list_rates(session, ShippingRate)
    return [ShippingRateOut.model_validate(r, from_attributes=True) for r in found]


@router.put("/shipping-rates/{country}", response_model=ShippingRateOut)
async def set_shipping_rate(
    country: Country,
    body: ShippingRateIn,
    _admin: AdminPrincipal,
    session: WriteSession,
    settings: AppSettings,
) -> ShippingRateOut:
    """The rate for `country` in `currency` (default KASSA_CURRENCY): a cart pays the rate of
    its own currency."""
    rate = await rates.set_shipping_rate(
        session,
        country=country,
        currency=body.currency or settings.currency,
        amount=body.amount,
        free_above_amount=body.free_above_amount,
    )
    return ShippingRateOut.model_validate(rate, from_attributes=True)


@router.delete("/shipping-rates/{country}", status_code=204)
async def delete_shipping_rate(
    country: Country,
    _admin: AdminPrincipal,
    session: WriteSession,
    settings: AppSettings,
    currency: Annotated[str | None, Query(pattern=r"^[a-z]{3}$")] = None,
) -> Response:
    await rates.delete_rate(session, ShippingRate, country, currency=currency or settings.currency)
    return Response(status_code=204)


@router.get("/tax-rates", response_model=list[TaxRateOut])
async def list_tax_rates(_admin: AdminPrincipal, session: ReadSession) -> list[TaxRateOut]:
    found = await rates.list_rates(session, TaxRate)
    return [TaxRateOut.model_validate(r, from_attributes=True) for r in found]


@router.put("/tax-rates/{country}", response_model=TaxRateOut)
async def set_tax_rate(
    country: Country, body: TaxRateIn, _admin: AdminPrincipal, session: WriteSession
) -> TaxRateOut:
    rate = await rates.set_tax_rate(session, country=country, basis_points=body.basis_points)
    return TaxRateOut.model_validate(rate, from_attributes=True)


@router.delete("/tax-rates/{country}", status_code=204)
async def delete_tax_rate(
    country: Country, _admin: AdminPrincipal, session: WriteSession
) -> Response:
    await rates.delete_rate(session, TaxRate, country)
    return Response(status_code=204)
