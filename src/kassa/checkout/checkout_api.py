"""Checkout endpoints: start (validate, re-price, hold, create the payment), read, cancel.

Starting a checkout runs its own transaction rather than the request's: when it fails, the
rollback comes first and the failed phases are recorded after it (a transaction of their own),
so that stats see every attempt and what its rollback undid.
"""

from __future__ import annotations

import asyncio
import random
from typing import Annotated

from fastapi import APIRouter, Path, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.carts import service as carts
from kassa.carts.deps import Access
from kassa.checkout import service
from kassa.checkout.phases import PhaseLog
from kassa.checkout.schemas import CheckoutCreate, CheckoutOut
from kassa.db import Database, is_transient
from kassa.deps import AppSettings, ReadSession, WriteSession, get_database
from kassa.errors import KassaError
from kassa.orders import service as orders

router = APIRouter(prefix="/v1/checkouts", tags=["checkout"])

CheckoutId = Annotated[str, Path(max_length=64)]
ATTEMPTS = 4


async def checkout_out(session: AsyncSession, made: service.CheckoutView) -> CheckoutOut:
    checkout = made.checkout
    order = (
        await orders.order_for_checkout(session, checkout.id)
        if checkout.state == "completed"
        else None
    )
    return CheckoutOut.model_validate(
        {
            "id": checkout.id,
            "state": service.effective_state(checkout, clock.now()),
            "cart_id": checkout.cart_id,
            "email": checkout.email,
            "expires_at": checkout.expires_at,
            "seconds_left": made.seconds_left,
            "currency": checkout.currency,
            "lines": checkout.lines,
            "price_changes": checkout.price_changes or [],
            "coupon_code": checkout.coupon_code,
            "subtotal_amount": checkout.subtotal_amount,
            "discount_amount": checkout.discount_amount,
            "shipping_amount": checkout.shipping_amount,
            "tax_amount": checkout.tax_amount,
            "total_amount": checkout.total_amount,
            "shipping_address": checkout.shipping_address,
            "hold": {
                "id": made.hold.id,
                "state": made.hold.state,
                "expires_at": made.hold.expires_at,
                "lines": [{"sku": s, "quantity": q} for s, q in made.hold.lines],
            },
            "payment": made.payment.__dict__ if made.payment else None,
            "order_id": order.id if order else None,
            "outcome_reason": checkout.outcome_reason,
            "created_at": checkout.created_at,
        }
    )


@router.post("", status_code=201, response_model=CheckoutOut)
async def create_checkout(
    body: CheckoutCreate, access: Access, request: Request, settings: AppSettings
) -> CheckoutOut:
    db = get_database(request)
    address = service.Address(**body.shipping_address.model_dump())
    for attempt in range(1, ATTEMPTS + 1):
        log = PhaseLog()
        try:
            async with db.transaction() as session:
                made = await service.start_checkout(
                    session,
                    settings,
                    log,
                    access=access,
                    cart_id=body.cart_id,
                    email=str(body.email),
                    address=address,
                    coupon_code=body.coupon_code,
                    provider_name=body.provider,
                )
                return await checkout_out(session, made)
        except DBAPIError as error:
            if attempt < ATTEMPTS and is_transient(error):
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
                continue
            await _record_failure(db, log, None, body.cart_id)
            raise
        except KassaError as error:
            await _record_failure(db, log, error, body.cart_id)
            raise
    raise AssertionError("unreachable")


async def _record_failure(
    db: Database, log: PhaseLog, error: KassaError | None, cart_id: str
) -> None:
    async def write(session: AsyncSession) -> None:
        await log.save_failure(session)
        if isinstance(error, service.PriceChanged):
            # The buyer has now been shown the new prices: checking out again accepts them.
            await carts.remember_prices(
                session,
                cart_id,
                {e["sku"]: e["new_price_amount"] for e in error.extra.get("errors", [])},
            )

    await db.run(write)


@router.get("/{checkout_id}", response_model=CheckoutOut)
async def get_checkout(
    checkout_id: CheckoutId, access: Access, session: ReadSession
) -> CheckoutOut:
    checkout = await service.find_checkout(session, checkout_id, access)
    return await checkout_out(session, await service.view(session, checkout))


@router.post("/{checkout_id}/cancel", response_model=CheckoutOut)
async def cancel_checkout(
    checkout_id: CheckoutId, access: Access, session: WriteSession
) -> CheckoutOut:
    checkout = await service.find_checkout(session, checkout_id, access)
    checkout = await service.cancel_checkout(session, checkout.id)
    return await checkout_out(session, await service.view(session, checkout))
