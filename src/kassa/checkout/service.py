"""Checkout: a cart becomes held stock, a price snapshot and a payment; cancel and expiry.

Lock order. Starting a checkout: the cart row, the coupon row, hold rows, stock rows in SKU
order. Completion, cancel and expiry: the checkout row (with its payment), the coupon, hold rows,
stock rows, and the cart row last. The two meet only when a new checkout of a cart ends that
cart's lapsed, unswept checkout while a late payment for it arrives at the same moment; on
PostgreSQL one of them is then picked as a deadlock victim and run again (both retry transient
errors). A checkout does not end its hold when it expires: the hold has the same expiry, and
the hold engine (sweeper or lazy reclaim) gives the units back in its own lock order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.carts import service as carts
from kassa.carts.models import CartItem
from kassa.carts.service import CartAccess
from kassa.catalog.models import Product, Variant
from kassa.checkout import pricing, rates
from kassa.checkout.models import Checkout, ShippingRate, TaxRate
from kassa.checkout.phases import PhaseLog
from kassa.checkout.states import CHECKOUT, CheckoutState
from kassa.config import Settings
from kassa.errors import Conflict, InvalidInput, KassaError, NotFound
from kassa.ids import new_id
from kassa.inventory import holds
from kassa.payments import service as payments
from kassa.payments.providers.base import CreatedPayment


class CheckoutNotFound(NotFound):
    title = "Checkout not found"


class CheckoutActive(KassaError):
    status, code, title = 409, "checkout_active", "The cart already has an open checkout"


class CheckoutExpired(KassaError):
    status, code, title = 409, "checkout_expired", "The checkout has expired"


class PriceChanged(KassaError):
    status, code, title = 409, "price_changed", "Prices changed since the cart was last seen"


class NotForSale(Conflict):
    title = "Some items are no longer for sale"


class EmptyCart(KassaError):
    status, code, title = 422, "validation_error", "The cart is empty"


class ProviderUnavailableError(KassaError):
    status, code, title = 502, "provider_unavailable", "The payment provider did not answer"


@dataclass(frozen=True)
class Address:
    name: str
    line1: str
    city: str
    postal_code: str
    country: str
    line2: str | None = None


@dataclass(frozen=True)
class CheckoutView:
    checkout: Checkout
    hold: holds.HoldView
    payment: payments.PaymentView | None
    seconds_left: int


def drifted(old: int, new: int, tolerance_percent: float) -> bool:
    """Did a price move by more than the tolerance (either way)?"""
    if old == new:
        return False
    if old == 0:
        return True
    return abs(new - old) * 100 > tolerance_percent * old


@dataclass(frozen=True)
class _InputLine:
    sku: str
    quantity: int
    seen_unit_price_amount: int | None
    name: str | None
    price_amount: int | None
    currency: str | None
    for_sale: bool
    vendor_id: str | None


async def _pricing_input(
    session: AsyncSession, cart_id: str, country: str, currency: str
) -> tuple[list[_InputLine], pricing.ShippingTerms | None, int]:
    """The cart's lines with today's prices and the destination's rates, in ONE read (this is
    on the query budget, so it joins across the cart, catalog and rate tables directly)."""
    # The rate in the cart's own currency only.
    rate_of = (ShippingRate.country == country, ShippingRate.currency == currency)
    shipping_amount = select(ShippingRate.amount).where(*rate_of).scalar_subquery()
    free_above = select(ShippingRate.free_above_amount).where(*rate_of).scalar_subquery()
    tax = select(TaxRate.basis_points).where(TaxRate.country == country).scalar_subquery()
    result = await session.execute(
        select(
            CartItem.sku,
            CartItem.quantity,
            CartItem.seen_unit_price_amount,
            Variant.name,
            Variant.price_amount,
            Variant.currency,
            Variant.is_active,
            Product.is_active,
            Product.vendor_id,
            shipping_amount.label("shipping_amount"),
            free_above.label("free_above"),
            tax.label("tax"),
        )
        .select_from(CartItem)
        .outerjoin(Variant, Variant.sku == CartItem.sku)
        .outerjoin(Product, Product.id == Variant.product_id)
        .where(CartItem.cart_id == cart_id)
        .order_by(CartItem.id)
    )
    rows = result.all()
    lines = [
        _InputLine(
            sku=row[0],
            quantity=row[1],
            seen_unit_price_amount=row[2],
            name=row[3],
            price_amount=row[4],
            currency=row[5],
            for_sale=bool(row[6] and row[7]),
            vendor_id=row[8],
        )
        for row in rows
    ]
    if not rows:
        return [], None, 0
    first = rows[0]
    shipping = (
        None
        if first.shipping_amount is None
        else pricing.ShippingTerms(country, first.shipping_amount, first.free_above)
    )
    return lines, shipping, int(first.tax or 0)


async def start_checkout(
    session: AsyncSession,
    settings: Settings,
    log: PhaseLog,
    *,
    access: CartAccess,
    cart_id: str,
    email: str,
    address: Address,
    coupon_code: str | None,
    provider_name: str,
) -> CheckoutView:
    """Validate, re-price, hold every line and record the payment as `creating`; all in the
    caller's transaction, which holds the cart, coupon and stock locks. The provider is asked
    only after it commits (`payment_created` / `abandon_start` store its answer).

    Raises (and the caller's rollback undoes everything): CheckoutActive, PriceChanged with
    the lines, InsufficientStock, CouponNotApplicable, NotShippable, EmptyCart, NotForSale.
    Statements are counted (tests/checkout/test_query_budget.py): mind them here."""
    now = clock.now()
    checkout_id = new_id("chk")
    log.checkout_id = checkout_id
    ttl = min(settings.hold_ttl_seconds, settings.hold_max_ttl_seconds)
    expires_at = now + timedelta(seconds=ttl)
    with log.phase("validation"):
        cart = await carts.lock_for_checkout(
            session, cart_id, access, checkout_id=checkout_id, until=expires_at
        )
        if isinstance(cart, str):
            raise CheckoutActive(f"cart {cart_id} has an open checkout", checkout_id=cart or None)
        if cart.had_lapsed_lock:
            # An earlier checkout whose time is up but that no sweep has ended yet.
            await _expire_open_checkouts_of(session, cart.id, now)
        lines, shipping_rate, tax_basis_points = await _pricing_input(
            session, cart.id, address.country, cart.currency
        )
        if not lines:
            raise EmptyCart("add items to the cart before checking out")
    with log.phase("pricing"):
        unavailable = [ln.sku for ln in lines if not ln.for_sale or ln.price_amount is None]
        if unavailable:
            raise NotForSale(f"no longer for sale: {', '.join(unavailable)}", skus=unavailable)
        changes: list[dict[str, Any]] = []
        refused: list[dict[str, Any]] = []
        for line in lines:
            old, new = line.seen_unit_price_amount, line.price_amount
            assert new is not None
            if old is None or old == new:
                continue
            change = {"sku": line.sku, "old_price_amount": old, "new_price_amount": new}
            too_far = drifted(old, new, settings.price_drift_tolerance_percent)
            (refused if too_far else changes).append(change)
        if refused:
            raise PriceChanged(
                "prices changed beyond the tolerance; the cart now shows the new prices, "
                "check out again to accept them",
                errors=refused,
            )
        coupon = await rates.redeem_coupon(session, coupon_code, now=now) if coupon_code else None
        totals = pricing.price(
            [pricing.PricedLine(ln.sku, ln.quantity, ln.price_amount or 0) for ln in lines],
            currency=cart.currency,
            country=address.country,
            shipping_rate=shipping_rate,
            tax_basis_points=tax_basis_points,
            coupon=coupon,
            now=now,
        )
    with log.phase("hold"):
        hold = await holds.hold_stock(
            session,
            [(ln.sku, ln.quantity) for ln in lines],
            ttl_seconds=ttl,
            reference=checkout_id,
            now=now,
        )
    by_sku = {ln.sku: ln for ln in lines}
    snapshot = [
        {
            "sku": ln.sku,
            "name": by_sku[ln.sku].name,
            "vendor_id": by_sku[ln.sku].vendor_id,
            "quantity": ln.quantity,
            "unit_price_amount": ln.unit_price_amount,
            "line_amount": ln.line_amount,
        }
        for ln in totals.lines
    ]
    payment = payments.new_payment(
        checkout_id=checkout_id,
        provider=provider_name,
        amount=totals.total_amount,
        currency=cart.currency,
    )
    timings = log.timings()
    checkout = Checkout(
        id=checkout_id,
        cart_id=cart.id,
        # The cart's owner; a signed-in buyer checking out a guest cart; never an admin
        # acting on someone's cart.
        user_id=cart.user_id
        or (
            access.principal.user_id if access.principal and not access.principal.is_admin else None
        ),
        state=CheckoutState.OPEN,
        email=email,
        shipping_address=_address_dict(address),
        coupon_code=coupon.code if coupon else None,
        currency=cart.currency,
        lines=snapshot,
        price_changes=changes,
        subtotal_amount=totals.subtotal_amount,
        discount_amount=totals.discount_amount,
        shipping_amount=totals.shipping_amount,
        tax_amount=totals.tax_amount,
        total_amount=totals.total_amount,
        hold_id=hold.id,
        payment_id=payment.id,
        expires_at=expires_at,
        validation_ms=timings.get("validation"),
        pricing_ms=timings.get("pricing"),
        hold_ms=timings.get("hold"),
        created_at=now,
        updated_at=now,
    )
    # The payment row refers to the checkout row: add the checkout first (one flush at commit
    # writes both; the cart lock above is what keeps a second open checkout out).
    session.add(checkout)
    session.add(payment)
    return CheckoutView(checkout, hold, payments.payment_view(payment), ttl)


def _address_dict(address: Address) -> dict[str, Any]:
    return {k: v for k, v in address.__dict__.items() if v is not None}


async def _expire_open_checkouts_of(session: AsyncSession, cart_id: str, now: datetime) -> None:
    result = await session.execute(
        select(Checkout.id).where(
            Checkout.cart_id == cart_id,
            Checkout.state == CheckoutState.OPEN,
            Checkout.expires_at <= now,
        )
    )
    for (checkout_id,) in result.all():
        await expire_checkout(session, checkout_id, now)


async def expire_checkout(session: AsyncSession, checkout_id: str, now: datetime) -> bool:
    """Mark a due open checkout expired and give its coupon use back. Exactly once: the
    conditional UPDATE decides among racing sweepers. The hold expires on its own."""
    CHECKOUT.check(CheckoutState.OPEN, CheckoutState.EXPIRED)
    result = await session.execute(
        update(Checkout)
        .where(
            Checkout.id == checkout_id,
            Checkout.state == CheckoutState.OPEN,
            Checkout.expires_at <= now,
        )
        .values(state=CheckoutState.EXPIRED, ended_at=now, updated_at=now)
        .returning(Checkout.coupon_code)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    if row is None:
        return False
    if row.coupon_code:
        await rates.release_coupon(session, row.coupon_code)
    return True


async def expire_due_checkouts(session: AsyncSession, *, now: datetime, limit: int) -> int:
    """One sweeper batch: expire up to `limit` due open checkouts (SKIP LOCKED on PostgreSQL)."""
    CHECKOUT.check(CheckoutState.OPEN, CheckoutState.EXPIRED)
    query = (
        select(Checkout.id)
        .where(Checkout.state == CheckoutState.OPEN, Checkout.expires_at <= now)
        .order_by(Checkout.expires_at)
        .limit(limit)
    )
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    due = [row[0] for row in (await session.execute(query)).all()]
    if not due:
        return 0
    result = await session.execute(
        update(Checkout)
        .where(
            Checkout.id.in_(due), Checkout.state == CheckoutState.OPEN, Checkout.expires_at <= now
        )
        .values(state=CheckoutState.EXPIRED, ended_at=now, updated_at=now)
        .returning(Checkout.coupon_code)
        .execution_options(synchronize_session=False)
    )
    codes = [row.coupon_code for row in result.all()]
    # Coupon rows in code order, each once: concurrent sweeps cannot deadlock on them.
    for code in sorted({c for c in codes if c}):
        await rates.release_coupon(session, code, uses=codes.count(code))
    return len(codes)


async def find_checkout(session: AsyncSession, checkout_id: str, access: CartAccess) -> Checkout:
    """The checkout if the caller may see it (its buyer, the cart's token, an admin)."""
    checkout = await session.get(Checkout, checkout_id)
    if checkout is None or not await may_access(session, checkout, access):
        raise CheckoutNotFound(f"no checkout {checkout_id}")
    return checkout


async def may_access(session: AsyncSession, checkout: Checkout, access: CartAccess) -> bool:
    principal = access.principal
    if principal is not None and (principal.is_admin or checkout.user_id == principal.user_id):
        return True
    return await carts.token_opens(session, checkout.cart_id, access.token)


async def view(session: AsyncSession, checkout: Checkout) -> CheckoutView:
    now = clock.now()
    hold = await holds.get_hold(session, checkout.hold_id, now=now)
    payment = (
        payments.payment_view(await payments.get_payment(session, checkout.payment_id))
        if checkout.payment_id
        else None
    )
    left = (
        max(0, int((checkout.expires_at - now).total_seconds()))
        if checkout.state == CheckoutState.OPEN
        else 0
    )
    return CheckoutView(checkout, hold, payment, left)


def effective_state(checkout: Checkout, now: datetime) -> str:
    if checkout.state == CheckoutState.OPEN and checkout.expires_at <= now:
        return CheckoutState.EXPIRED
    return checkout.state


async def lock_checkout(session: AsyncSession, checkout_id: str) -> Checkout:
    """The checkout row, locked (SQLite's writer lock covers it already)."""
    query = (
        select(Checkout).where(Checkout.id == checkout_id).execution_options(populate_existing=True)
    )
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    checkout = await session.scalar(query)
    if checkout is None:
        raise CheckoutNotFound(f"no checkout {checkout_id}")
    return checkout


async def cancel_checkout(session: AsyncSession, checkout_id: str) -> Checkout:
    """Release every hold now; 409 once completed. Cancelling twice is not an error."""
    checkout = await lock_checkout(session, checkout_id)
    now = clock.now()
    if checkout.state == CheckoutState.OPEN and checkout.expires_at <= now:
        await expire_checkout(session, checkout.id, now)
        await session.refresh(checkout)
    if checkout.state == CheckoutState.EXPIRED:
        raise CheckoutExpired(f"checkout {checkout.id} has expired; its stock is already back")
    if CHECKOUT.plan(checkout.state, CheckoutState.CANCELLED):
        await end_checkout(session, checkout, "cancelled by the buyer")
    return checkout


async def end_checkout(session: AsyncSession, checkout: Checkout, why: str) -> None:
    """Cancel an open checkout: its coupon use, its stock and its cart come back now."""
    CHECKOUT.check(checkout.state, CheckoutState.CANCELLED)
    now = clock.now()
    checkout.state = CheckoutState.CANCELLED
    checkout.ended_at = now
    checkout.updated_at = now
    checkout.outcome_reason = why[:255]
    # The coupon row before hold and stock rows: the order a new checkout takes them in.
    if checkout.coupon_code:
        await rates.release_coupon(session, checkout.coupon_code)
    await holds.release_hold(session, checkout.hold_id)
    await carts.unlock(session, checkout.cart_id, checkout.id)
    await session.flush()


async def payment_created(
    session: AsyncSession, payment_id: str, created: CreatedPayment, *, payment_ms: float
) -> payments.PaymentView:
    """Step three of a start: store the provider's answer (a short transaction of its own,
    which locks only the payment row)."""
    payment = await payments.get_payment(session, payment_id, lock=True)
    await payments.store_created(session, payment, created)
    await session.execute(
        update(Checkout)
        .where(Checkout.id == payment.checkout_id)
        .values(payment_ms=round(payment_ms, 3))
        .execution_options(synchronize_session=False)
    )
    return payments.payment_view(payment)


async def abandon_start(session: AsyncSession, payment_id: str, code: str) -> bool:
    """The provider never answered "create": the payment fails and the checkout ends, so its
    stock comes back now. False if the payment had moved on already (nothing to do)."""
    payment = await payments.get_payment(session, payment_id, lock=True)
    checkout = await lock_checkout(session, payment.checkout_id)
    if not await payments.creation_failed(session, payment, code):
        return False
    if checkout.state == CheckoutState.OPEN:
        await end_checkout(session, checkout, f"payment not created: {code}")
    return True


async def payment_processing(session: AsyncSession, settings: Settings, checkout: Checkout) -> None:
    """The buyer paid at the provider: keep the stock (up to the maximum TTL) while it works."""
    now = clock.now()
    if effective_state(checkout, now) == CheckoutState.EXPIRED:
        raise CheckoutExpired(f"checkout {checkout.id} has expired; start a new one")
    if checkout.state != CheckoutState.OPEN:
        raise Conflict(f"checkout {checkout.id} is {checkout.state}")
    hold = await holds.get_hold(session, checkout.hold_id, now=now)
    longest = hold.created_at + timedelta(seconds=settings.hold_max_ttl_seconds)
    if longest > checkout.expires_at:
        await _move_expiry(session, checkout, longest)


async def payment_came_back_failed(
    session: AsyncSession, settings: Settings, checkout: Checkout
) -> None:
    """A failed payment: the checkout stays open for another card, back on its normal time
    (plus a little to type the card in), or ends at once if so configured."""
    now = clock.now()
    if checkout.state != CheckoutState.OPEN:
        return
    if settings.release_on_payment_failure:
        await end_checkout(session, checkout, "payment failed (KASSA_RELEASE_ON_PAYMENT_FAILURE)")
        return
    hold = await holds.get_hold(session, checkout.hold_id, now=now)
    usual = hold.created_at + timedelta(seconds=settings.hold_ttl_seconds)
    target = min(checkout.expires_at, max(usual, now + RETRY_GRACE))
    if target != checkout.expires_at:
        await _move_expiry(session, checkout, target)


RETRY_GRACE = timedelta(seconds=120)


async def _move_expiry(session: AsyncSession, checkout: Checkout, expires_at: datetime) -> None:
    if await holds.extend_hold(session, checkout.hold_id, expires_at):
        checkout.expires_at = expires_at
        checkout.updated_at = clock.now()
        await carts.extend_lock(session, checkout.cart_id, checkout.id, expires_at)
        await session.flush()


def validate_address(raw: dict[str, Any]) -> Address:
    try:
        return Address(**raw)
    except TypeError as error:
        raise InvalidInput("shipping_address", str(error)) from None
