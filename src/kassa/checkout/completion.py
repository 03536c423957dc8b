"""What a provider's verdict on a checkout's payment does (promise 6: money and stock agree).

Success for exactly the amount and currency asked: exactly one order (the unique checkout_id),
the hold committed (ledger entries), the cart closed. A success that arrives after the checkout
expired holds the stock again if it can; if it cannot (or the coupon is used up, or the buyer had
cancelled), there is no order and the payment is refunded in full through the provider, with the
reason recorded on the checkout (`states.success_means` decides which). A success for another
amount or currency never completes: the payment is held for review, what was taken is given back,
the checkout ends and an alert goes out.
Failure: the checkout stays open for another card (or ends, KASSA_RELEASE_ON_PAYMENT_FAILURE).
Every path is safe to run twice and in any order with the others: the payment's status machine
and the checkout's state decide what is left to do. Completing is on the query budget
(tests/checkout/test_query_budget.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.carts import service as carts
from kassa.checkout import phases, rates
from kassa.checkout import service as checkouts
from kassa.checkout.models import Checkout
from kassa.checkout.pricing import CouponNotApplicable
from kassa.checkout.states import CHECKOUT, CheckoutState, Success, success_means
from kassa.config import Settings
from kassa.errors import Conflict
from kassa.inventory import holds
from kassa.inventory.states import HoldState
from kassa.orders import service as orders
from kassa.outbox import service as outbox
from kassa.payments import service as payments
from kassa.payments.models import Payment

ALERT_KIND = payments.ALERT_KIND


@dataclass(frozen=True)
class Completion:
    """What became of a payment success: an order, a refund, a review, or nothing new."""

    outcome: str  # "order", "refunded", "review", "already_done"
    order_id: str | None = None
    reason: str | None = None


async def load(
    session: AsyncSession, provider: str, *, reference: str | None, payment_id: str | None
) -> tuple[Payment, Checkout] | None:
    """The payment an event is about (by the provider's reference, or by Kassa's id where the
    provider echoes it) and its checkout, both locked, in one read."""
    conditions = []
    if reference:
        conditions.append(Payment.provider_reference == reference)
    if payment_id:
        conditions.append(Payment.id == payment_id)
    if not conditions:
        return None
    query = (
        select(Payment, Checkout)
        .join(Checkout, Checkout.id == Payment.checkout_id)
        .where(Payment.provider == provider, or_(*conditions))
        .limit(1)
        .execution_options(populate_existing=True)
    )
    if (await session.connection()).dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    return None if row is None else (row[0], row[1])


async def payment_succeeded(
    session: AsyncSession,
    settings: Settings,
    payment: Payment,
    checkout: Checkout,
    *,
    amount: int | None,
    currency: str | None,
    actor: str,
) -> Completion:
    started = time.perf_counter()
    verdict = await payments.record_success(session, payment, amount=amount, currency=currency)
    if verdict is payments.Success.REVIEW:
        return await _hold_for_review(session, payment, checkout, started)
    if verdict is payments.Success.ALREADY:
        # The first success did everything a success does, in its own transaction (an order,
        # or a refund). Another one (a second event id, reconcile, a client confirmation) must
        # not do it again, even where a refund was refused and given back since.
        return await _already_done(session, checkout)
    now = clock.now()
    already_refunded = payment.refunded_amount > 0
    hold_active = (
        checkout.state == CheckoutState.OPEN
        and not already_refunded
        and await holds.commit_if_active(session, checkout.hold_id, now=now)
    )
    means = success_means(
        checkout.state, hold_active=hold_active, already_refunded=already_refunded
    )
    if means is Success.ALREADY_DONE:
        return await _already_done(session, checkout)
    if means is Success.REFUND_CANCELLED:
        return await _refund_all(session, checkout, payment, "checkout_cancelled", started)
    if means is Success.LATE:
        hold = await holds.get_hold(session, checkout.hold_id, now=now)
        if hold.state != HoldState.EXPIRED:
            # A checkout's hold is only committed here or released by a cancel (the hold
            # endpoints refuse checkout holds): anything else is a bug to surface, not hide.
            raise Conflict(
                f"the hold of checkout {checkout.id} is {hold.state}; refusing to complete"
            )
        if checkout.state == CheckoutState.OPEN and await checkouts.expire_checkout(
            session, checkout.id, now
        ):
            checkout.state = CheckoutState.EXPIRED
        why = await _hold_again(session, settings, checkout)
        if why is not None:
            return await _refund_all(session, checkout, payment, why, started)
        await holds.commit_if_active(session, checkout.hold_id, now=now)
        checkout.outcome_reason = "paid after expiry; the stock was held again"
    CHECKOUT.check(checkout.state, CheckoutState.COMPLETED)
    checkout.state = CheckoutState.COMPLETED
    checkout.ended_at = now
    checkout.updated_at = now
    checkout.completion_ms = round(_ms(started), 3)
    order = await orders.create_order(
        session,
        orders.NewOrder(
            checkout_id=checkout.id,
            cart_id=checkout.cart_id,
            user_id=checkout.user_id,
            payment_id=payment.id,
            email=checkout.email,
            currency=checkout.currency,
            lines=checkout.lines,
            subtotal_amount=checkout.subtotal_amount,
            discount_amount=checkout.discount_amount,
            shipping_amount=checkout.shipping_amount,
            tax_amount=checkout.tax_amount,
            total_amount=checkout.total_amount,
            shipping_address=checkout.shipping_address,
        ),
        actor=actor,
    )
    await carts.unlock(session, checkout.cart_id, checkout.id, close=True)
    return Completion("order", order.id)


async def _already_done(session: AsyncSession, checkout: Checkout) -> Completion:
    existing = (
        await orders.order_for_checkout(session, checkout.id)
        if checkout.state == CheckoutState.COMPLETED
        else None
    )
    return Completion(
        "already_done", existing.id if existing else None, reason=checkout.outcome_reason
    )


async def _hold_for_review(
    session: AsyncSession, payment: Payment, checkout: Checkout, started: float
) -> Completion:
    """Another amount or currency was taken: no order; give it back, end the checkout (its
    stock comes back), and tell the shop."""
    refund = await payments.give_back_unmatched(session, payment)
    why = "payment_requires_review"
    if checkout.state == CheckoutState.OPEN:
        await checkouts.end_checkout(session, checkout, why)
    else:
        checkout.outcome_reason = why
        checkout.updated_at = clock.now()
    await phases.record(
        session,
        checkout.id,
        "completion",
        "failed",
        code=why,
        duration_ms=_ms(started),
        detail={"reason": payment.review_reason, "refund_id": refund.id if refund else None},
    )
    await outbox.enqueue(
        session,
        ALERT_KIND,
        {
            "type": "payment.requires_review",
            "payment_id": payment.id,
            "checkout_id": checkout.id,
            "reason": payment.review_reason,
            "refund_id": refund.id if refund else None,
        },
    )
    await session.flush()
    return Completion("review", reason=payment.review_reason)


async def _hold_again(session: AsyncSession, settings: Settings, checkout: Checkout) -> str | None:
    """A late payment: count the coupon again and hold the snapshot's lines again (coupon row
    before stock rows, like a new checkout). Returns None on success, else why not."""
    nested = await session.begin_nested()
    try:
        if checkout.coupon_code:
            await rates.redeem_coupon(session, checkout.coupon_code)
        hold = await holds.hold_stock(
            session,
            [(line["sku"], int(line["quantity"])) for line in checkout.lines],
            ttl_seconds=settings.hold_ttl_seconds,
            reference=checkout.id,
        )
    except holds.InsufficientStock:
        await nested.rollback()
        return "stock_unavailable_after_expiry"
    except holds.UnknownSku:
        await nested.rollback()
        return "sku_gone_after_expiry"
    except CouponNotApplicable:
        await nested.rollback()
        return "coupon_used_up_after_expiry"
    await nested.commit()
    checkout.hold_id = hold.id
    return None


async def _refund_all(
    session: AsyncSession, checkout: Checkout, payment: Payment, why: str, started: float
) -> Completion:
    left = payment.amount - payment.refunded_amount
    if left > 0:
        await payments.create_refund(session, payment, amount=left, reason=why, order_id=None)
    checkout.outcome_reason = f"payment refunded: {why}"
    checkout.updated_at = clock.now()
    await phases.record(
        session,
        checkout.id,
        "completion",
        "failed",
        code="late_payment_refunded" if why != "checkout_cancelled" else "cancelled_then_paid",
        duration_ms=_ms(started),
        detail={"reason": why, "refunded_amount": left},
    )
    await session.flush()
    return Completion("refunded", reason=why)


async def payment_failed(
    session: AsyncSession,
    settings: Settings,
    payment: Payment,
    checkout: Checkout,
    *,
    failure_code: str | None,
) -> bool:
    """Returns False when the verdict changes nothing (e.g. it came after the success)."""
    if not await payments.record_failure(session, payment, failure_code):
        return False
    await phases.record(session, checkout.id, "payment", "failed", code=failure_code or "failed")
    await checkouts.payment_came_back_failed(session, settings, checkout)
    return True


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
