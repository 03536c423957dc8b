"""Checkout endpoints: start (hold, then ask the provider outside any lock), read, cancel.

Starting a checkout runs its own transaction rather than the request's: when it fails, the
rollback comes first and the failed phases are recorded after it (a transaction of their own),
so that stats see every attempt and what its rollback undid.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.carts import service as carts
from kassa.carts.deps import Access
from kassa.carts.service import CartAccess
from kassa.checkout import events, phases, service
from kassa.checkout.phases import PhaseLog
from kassa.checkout.schemas import CheckoutCreate, CheckoutOut, ConfirmIn
from kassa.config import Settings
from kassa.db import Database, is_transient
from kassa.deps import AppSettings, ReadSession, WriteSession, get_database, get_providers
from kassa.errors import InvalidInput, KassaError
from kassa.orders import service as orders
from kassa.payments import service as payments
from kassa.payments.providers.base import (
    ConfirmsOnClient,
    EventType,
    InvalidSignature,
    ProviderEvent,
    ProviderUnavailable,
)
from kassa.payments.service import PaymentView

log = structlog.get_logger("kassa.checkout")
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
            "payment": _payment_for_buyer(made.payment),
            "order_id": order.id if order else None,
            "outcome_reason": checkout.outcome_reason,
            "created_at": checkout.created_at,
        }
    )


@router.post(
    "",
    status_code=201,
    response_model=CheckoutOut,
    responses={
        502: {
            "description": "provider_unavailable: the payment provider did not answer; "
            "nothing is held, and retrying with the same Idempotency-Key is safe"
        }
    },
)
async def create_checkout(
    body: CheckoutCreate, access: Access, request: Request, settings: AppSettings
) -> CheckoutOut:
    """Three steps, so that no lock is held while the provider works: hold the stock and record
    the payment as `creating` (one transaction), ask the provider with the payment id as its
    idempotency key (no transaction), store its answer (a short transaction). A provider that
    fails or does not answer in KASSA_PROVIDER_TIMEOUT_SECONDS gives 502 provider_unavailable,
    and the stock comes back at once."""
    db = get_database(request)
    provider = get_providers(request).get(body.provider)
    made = await _hold_and_record(db, settings, body, access, provider.name)
    assert made.payment is not None
    payment = made.payment
    started = time.perf_counter()
    try:
        created = await asyncio.wait_for(
            provider.create_payment(
                payment_id=payment.id,
                checkout_id=made.checkout.id,
                amount=payment.amount,
                currency=payment.currency,
            ),
            timeout=settings.provider_timeout_seconds,
        )
    except Exception as error:
        code = "provider_timeout" if isinstance(error, TimeoutError) else "provider_unavailable"
        # The error's type only: an SDK's error text can carry request details.
        log.warning(
            "payment_not_created",
            provider=provider.name,
            checkout_id=made.checkout.id,
            error_type=type(error).__name__,
        )
        took = (time.perf_counter() - started) * 1000

        async def give_up(session: AsyncSession) -> None:
            # Always True here: only the sweeper moves a `creating` payment on, and it waits
            # 2 x KASSA_PROVIDER_TIMEOUT_SECONDS + 30 s, long after this request gave up.
            await service.abandon_start(session, payment.id, code)
            await phases.record(
                session, made.checkout.id, "payment", "failed", code=code, duration_ms=took
            )

        await db.run(give_up)
        raise service.ProviderUnavailableError(
            f"the payment provider {provider.name!r} did not answer; nothing is held, "
            "try again (the same Idempotency-Key is safe)",
            provider=provider.name,
        ) from None
    took = (time.perf_counter() - started) * 1000

    async def store(session: AsyncSession) -> CheckoutOut:
        stored = await service.payment_created(session, payment.id, created, payment_ms=took)
        view = service.CheckoutView(made.checkout, made.hold, stored, made.seconds_left)
        return await checkout_out(session, view)

    return await db.run(store)


async def _hold_and_record(
    db: Database,
    settings: Settings,
    body: CheckoutCreate,
    access: CartAccess,
    provider_name: str,
) -> service.CheckoutView:
    address = service.Address(**body.shipping_address.model_dump())
    for attempt in range(1, ATTEMPTS + 1):
        log_ = PhaseLog()
        try:
            async with db.transaction() as session:
                return await service.start_checkout(
                    session,
                    settings,
                    log_,
                    access=access,
                    cart_id=body.cart_id,
                    email=str(body.email),
                    address=address,
                    coupon_code=body.coupon_code,
                    provider_name=provider_name,
                )
        except DBAPIError as error:
            if attempt < ATTEMPTS and is_transient(error):
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
                continue
            await _record_failure(db, log_, None, body.cart_id)
            raise
        except KassaError as error:
            await _record_failure(db, log_, error, body.cart_id)
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


def _payment_for_buyer(payment: PaymentView | None) -> dict[str, Any] | None:
    if payment is None:
        return None
    fields = {
        "id": payment.id,
        "provider": payment.provider,
        "status": payment.status,
        "amount": payment.amount,
        "currency": payment.currency,
        "client_secret": payment.client_secret,
        "provider_reference": payment.provider_reference,
    }
    for name, value in (payment.client_data or {}).items():
        if name in ("publishable_key", "key_id", "order_id"):
            fields[name] = value
    return fields


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


@router.post(
    "/{checkout_id}/confirm",
    response_model=CheckoutOut,
    responses={
        400: {"description": "invalid_signature: the checkout signature is not valid"},
        502: {"description": "provider_unavailable: the provider did not answer"},
    },
)
async def confirm_checkout(
    checkout_id: CheckoutId, body: ConfirmIn, access: Access, request: Request
) -> CheckoutOut:
    """The buyer's browser confirms a payment (Razorpay's Checkout.js hands it
    `razorpay_payment_id` and `razorpay_signature`). The signature is verified with the official
    SDK, then the payment is fetched from the provider to confirm its status and amount, then
    applied exactly as its webhook would be: confirming twice, or after the webhook, changes
    nothing more. A bad signature is 400 invalid_signature."""
    db = get_database(request)
    async with db.read() as session:
        checkout = await service.find_checkout(session, checkout_id, access)
        if checkout.payment_id is None:
            raise service.CheckoutNotFound(f"no payment for checkout {checkout_id}")
        payment = await payments.get_payment(session, checkout.payment_id)
    provider = get_providers(request).get(payment.provider)
    if not isinstance(provider, ConfirmsOnClient) or payment.provider_reference is None:
        raise InvalidInput(
            "provider_payment_id", f"{payment.provider} payments are not confirmed by the client"
        )
    if body.signature is None:
        raise InvalidSignature("the checkout signature is missing")
    try:
        said = await provider.confirm(
            provider_reference=payment.provider_reference,
            attempt_reference=body.provider_payment_id,
            signature=body.signature,
        )
    except ProviderUnavailable:
        raise service.ProviderUnavailableError(
            f"the payment provider {payment.provider!r} did not answer; confirm again, or wait "
            "for its webhook",
            provider=payment.provider,
        ) from None
    kinds = {
        "succeeded": EventType.PAYMENT_SUCCEEDED,
        "failed": EventType.PAYMENT_FAILED,
        "authorized": EventType.PAYMENT_AUTHORIZED,
    }
    if said.status in kinds:
        event = ProviderEvent(
            # One id per attempt and verdict: the same confirmation twice is a duplicate.
            event_id=f"confirm_{body.provider_payment_id}_{said.status}",
            type=kinds[said.status],
            provider_reference=payment.provider_reference,
            payment_id=payment.id,
            amount=said.amount,
            currency=said.currency,
            failure_code=said.failure_code,
            attempt_reference=body.provider_payment_id,
        )
        await db.run(
            lambda s: events.apply_once(s, request.app.state.events, payment.provider, event)
        )
    async with db.read() as session:
        checkout = await service.find_checkout(session, checkout_id, access)
        return await checkout_out(session, await service.view(session, checkout))
