"""Payment and refund records: every status change through its table, refunds within what was
paid, a success checked against what was asked.

`create_refund` counts the refund against the payment in one conditional UPDATE (and a CHECK), so
concurrent refunds can never add up to more than was paid (promise 6). The provider is asked to
refund through the outbox, after the commit (promise 7); a refund it refuses is given back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.errors import Conflict, InvalidInput, NotFound
from kassa.ids import new_id
from kassa.outbox import service as outbox
from kassa.payments.models import Payment, Refund
from kassa.payments.providers.base import CreatedPayment
from kassa.payments.states import (
    PAID,
    PAYMENT,
    REFUND,
    PaymentStatus,
    RefundStatus,
    refunded_status,
)

REFUND_KIND = "payments.refund"
# Outbox messages for the shop's staff (ops/alerts.py delivers them): money that needs a person.
ALERT_KIND = "alert"
# Reconcile stops asking about a payment this long after it was made (providers give up
# retrying their webhooks after about three days; a buyer who never paid never will).
RECONCILE_WINDOW = timedelta(days=3)


class PaymentNotFound(NotFound):
    title = "Payment not found"


class PaymentNotPayable(Conflict):
    title = "The payment cannot be paid now"


@dataclass(frozen=True)
class PaymentView:
    id: str
    checkout_id: str
    status: str
    amount: int
    refunded_amount: int
    currency: str
    provider: str
    provider_reference: str | None
    client_secret: str | None
    failure_code: str | None
    client_data: Mapping[str, Any] | None = None


def payment_view(payment: Payment) -> PaymentView:
    return PaymentView(
        id=payment.id,
        checkout_id=payment.checkout_id,
        status=payment.status,
        amount=payment.amount,
        refunded_amount=payment.refunded_amount,
        currency=payment.currency,
        provider=payment.provider,
        provider_reference=payment.provider_reference,
        client_secret=payment.client_secret,
        failure_code=payment.failure_code,
        client_data=payment.client_data,
    )


def new_payment(*, checkout_id: str, provider: str, amount: int, currency: str) -> Payment:
    """A payment in `creating`: recorded before the provider is asked (the caller adds it once
    the checkout row it refers to is in)."""
    now = clock.now()
    return Payment(
        id=new_id("pay"),
        checkout_id=checkout_id,
        provider=provider,
        provider_reference=None,
        status=PaymentStatus.CREATING,
        amount=amount,
        refunded_amount=0,
        currency=currency,
        created_at=now,
        updated_at=now,
    )


async def get_payment(session: AsyncSession, payment_id: str, *, lock: bool = False) -> Payment:
    query = (
        select(Payment).where(Payment.id == payment_id).execution_options(populate_existing=True)
    )
    if lock and (await session.connection()).dialect.name == "postgresql":
        query = query.with_for_update()
    payment = await session.scalar(query)
    if payment is None:
        raise PaymentNotFound(f"no payment {payment_id}")
    return payment


async def store_created(session: AsyncSession, payment: Payment, created: CreatedPayment) -> None:
    """The provider's answer to "create": its reference and what the buyer's browser needs.
    A payment that already moved on (failed by the sweeper meanwhile) keeps its status but
    learns its reference, so that the provider's events still find it."""
    now = clock.now()
    if payment.provider_reference is None:
        payment.provider_reference = created.provider_reference
    if payment.provider_reference == created.provider_reference:
        # Only the answer about the payment Kassa keeps: a second payment made at the provider
        # (a provider without idempotency keys, asked twice) never replaces the first.
        payment.client_secret = created.client_secret
        payment.client_data = dict(created.client_data) or None
    payment.updated_at = now
    if payment.status == PaymentStatus.CREATING:
        PAYMENT.check(payment.status, PaymentStatus.PENDING)
        payment.status = PaymentStatus.PENDING
    await session.flush()


async def creation_failed(session: AsyncSession, payment: Payment, code: str) -> bool:
    """The provider never answered "create": the payment fails. False if it had moved on."""
    if payment.status != PaymentStatus.CREATING:
        return False
    PAYMENT.check(payment.status, PaymentStatus.FAILED)
    payment.status = PaymentStatus.FAILED
    payment.failure_code = code
    payment.updated_at = clock.now()
    await session.flush()
    return True


async def claim_interrupted(
    session: AsyncSession, *, older_than: datetime, limit: int
) -> list[Payment]:
    """Payments whose start was interrupted (a process died between recording the payment and
    storing the provider's answer), untouched since `older_than`. Claimed: their `updated_at`
    moves to now in the same statement, so of several sweepers only one takes each, and
    nobody takes it again before `older_than` has passed once more."""
    due = (
        select(Payment.id)
        .where(Payment.status == PaymentStatus.CREATING, Payment.updated_at <= older_than)
        .order_by(Payment.updated_at)
        .limit(limit)
    )
    if (await session.connection()).dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    ids = [row[0] for row in await session.execute(due)]
    if not ids:
        return []
    result = await session.execute(
        update(Payment)
        .where(
            Payment.id.in_(ids),
            Payment.status == PaymentStatus.CREATING,
            Payment.updated_at <= older_than,
        )
        .values(updated_at=clock.now())
        .returning(Payment)
        .execution_options(synchronize_session=False)
    )
    return list(result.scalars())


async def start_processing(session: AsyncSession, payment: Payment) -> None:
    """The buyer submitted payment details: the provider is working on it."""
    if payment.provider_reference is None or not PAYMENT.allows(
        payment.status, PaymentStatus.PROCESSING
    ):
        raise PaymentNotPayable(f"payment {payment.id} is {payment.status}")
    now = clock.now()
    payment.status = PaymentStatus.PROCESSING
    payment.failure_code = None
    payment.processing_since = now
    payment.updated_at = now
    await session.flush()


class Success(StrEnum):
    NEW = "new"  # the payment succeeded just now
    ALREADY = "already"  # known already: nothing changes
    REVIEW = "review"  # another amount or currency was taken: held for review


def success_matches(payment: Payment, amount: int | None, currency: str | None) -> bool:
    """A success completes a purchase only for exactly the amount and currency asked for."""
    return (
        amount is not None
        and currency is not None
        and amount == payment.amount
        and currency.lower() == payment.currency.lower()
    )


async def record_success(
    session: AsyncSession, payment: Payment, *, amount: int | None, currency: str | None
) -> Success:
    if not PAYMENT.plan(payment.status, PaymentStatus.SUCCEEDED):
        return Success.ALREADY
    if not success_matches(payment, amount, currency):
        PAYMENT.check(payment.status, PaymentStatus.REQUIRES_REVIEW)
        payment.status = PaymentStatus.REQUIRES_REVIEW
        payment.received_amount = amount
        payment.received_currency = currency.lower()[:3] if currency else None
        payment.review_reason = (
            f"the provider reported {amount} {currency} for a payment of "
            f"{payment.amount} {payment.currency}"
        )[:255]
        payment.updated_at = clock.now()
        await session.flush()
        return Success.REVIEW
    payment.status = PaymentStatus.SUCCEEDED
    payment.failure_code = None
    payment.updated_at = clock.now()
    await session.flush()
    return Success.NEW


async def record_failure(session: AsyncSession, payment: Payment, failure_code: str | None) -> bool:
    """Returns False when the verdict changes nothing (already failed, or after the success)."""
    if not PAYMENT.plan(payment.status, PaymentStatus.FAILED):
        return False
    payment.status = PaymentStatus.FAILED
    payment.failure_code = (failure_code or "failed")[:64]
    payment.updated_at = clock.now()
    await session.flush()
    return True


async def pending_at_provider(
    session: AsyncSession, *, older_than: datetime, limit: int
) -> list[Payment]:
    """Payments the provider has, with no verdict, untouched since `older_than` and due for a
    look (`recheck_at`), made in the last RECONCILE_WINDOW."""
    now = clock.now()
    result = await session.execute(
        select(Payment)
        .where(
            # Failed too: the buyer may have paid again in the provider's own form (Stripe's
            # Payment Element, Razorpay's Checkout.js) and that webhook may be the lost one.
            Payment.status.in_(
                [PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.FAILED]
            ),
            Payment.provider_reference.is_not(None),
            Payment.updated_at <= older_than,
            or_(Payment.recheck_at.is_(None), Payment.recheck_at <= now),
            Payment.created_at >= now - RECONCILE_WINDOW,
        )
        .order_by(Payment.created_at)
        .limit(limit)
    )
    return list(result.scalars())


async def create_refund(
    session: AsyncSession,
    payment: Payment,
    *,
    amount: int,
    reason: str,
    order_id: str | None,
) -> Refund:
    """Count `amount` against what was paid and ask the provider (through the outbox)."""
    if payment.status not in PAID:
        raise Conflict(f"payment {payment.id} is {payment.status}; nothing to refund")
    if amount <= 0:
        raise InvalidInput("amount", "a refund is for at least one minor unit")
    result = await session.execute(
        update(Payment)
        .where(Payment.id == payment.id, Payment.refunded_amount + amount <= Payment.amount)
        .values(refunded_amount=Payment.refunded_amount + amount, updated_at=clock.now())
        .returning(Payment.refunded_amount, Payment.amount)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    if row is None:
        await session.refresh(payment)
        left = payment.amount - payment.refunded_amount
        raise InvalidInput("amount", f"at most {left} of this payment can still be refunded")
    refunded, paid = row
    target = refunded_status(paid, refunded)
    PAYMENT.check(payment.status, target)
    payment.refunded_amount = refunded
    payment.status = target
    return await _new_refund(
        session, payment, amount=amount, reason=reason, order_id=order_id, counted=True
    )


async def give_back_unmatched(session: AsyncSession, payment: Payment) -> Refund | None:
    """Refund what a payment under review took (another amount or currency than asked). Not
    counted against the payment: that money never counted as paid."""
    taken = payment.received_amount or 0
    if payment.status != PaymentStatus.REQUIRES_REVIEW or taken <= 0:
        return None
    return await _new_refund(
        session,
        payment,
        amount=taken,
        currency=payment.received_currency,
        reason="payment_requires_review: amount or currency differs",
        order_id=None,
        counted=False,
    )


async def _new_refund(
    session: AsyncSession,
    payment: Payment,
    *,
    amount: int,
    reason: str,
    order_id: str | None,
    counted: bool,
    currency: str | None = None,
) -> Refund:
    refund = Refund(
        id=new_id("ref"),
        payment_id=payment.id,
        order_id=order_id,
        amount=amount,
        currency=currency,
        counted=counted,
        reason=reason[:255],
        status=RefundStatus.PENDING,
        created_at=clock.now(),
    )
    session.add(refund)
    await session.flush()
    await outbox.enqueue(session, REFUND_KIND, {"refund_id": refund.id})
    return refund


async def get_refund(session: AsyncSession, refund_id: str) -> Refund | None:
    return await session.get(Refund, refund_id)


async def find_refund(
    session: AsyncSession, *, reference: str | None, refund_id: str | None, lock: bool = True
) -> Refund | None:
    """The refund a provider event is about: by its reference, or by Kassa's id (metadata)."""
    conditions = []
    if reference:
        conditions.append(Refund.provider_reference == reference)
    if refund_id:
        conditions.append(Refund.id == refund_id)
    if not conditions:
        return None
    query = (
        select(Refund).where(or_(*conditions)).limit(1).execution_options(populate_existing=True)
    )
    if lock and (await session.connection()).dialect.name == "postgresql":
        query = query.with_for_update()
    return await session.scalar(query)


async def refund_sent(session: AsyncSession, refund_id: str, provider_reference: str) -> bool:
    """Remember the provider's reference; True the first time only."""
    result = await session.execute(
        update(Refund)
        .where(Refund.id == refund_id, Refund.provider_reference.is_(None))
        .values(provider_reference=provider_reference)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def refund_succeeded(
    session: AsyncSession, refund: Refund, *, at: datetime | None = None
) -> bool:
    """The provider confirms a refund; False if that changes nothing (known already). A
    success for a refund Kassa had recorded as refused (and given back) changes nothing either,
    but a person must look: the money may have gone back twice."""
    if refund.status == RefundStatus.FAILED:
        await _alert(session, "refund.succeeded_after_failing", refund)
        return False
    if not REFUND.plan(refund.status, RefundStatus.SUCCEEDED):
        return False
    refund.status = RefundStatus.SUCCEEDED
    refund.succeeded_at = at or clock.now()
    await session.flush()
    return True


async def refund_failed(session: AsyncSession, refund: Refund, failure_code: str) -> bool:
    """The provider refused a refund: it never counts as refunded. The amount goes back to the
    payment (its status with it); the caller gives it back to the order. False if known."""
    if not REFUND.plan(refund.status, RefundStatus.FAILED):
        return False
    refund.status = RefundStatus.FAILED
    refund.failure_code = failure_code[:64]
    refund.failed_at = clock.now()
    if refund.counted:
        payment = await get_payment(session, refund.payment_id, lock=True)
        payment.refunded_amount -= refund.amount
        target = refunded_status(payment.amount, payment.refunded_amount)
        PAYMENT.check(payment.status, target)
        payment.status = target
        payment.updated_at = clock.now()
    # Money that should have gone back did not (for an order, or for a payment that has none:
    # a late or cancelled checkout's, or one under review): a person must act on it.
    await _alert(session, "refund.failed", refund)
    await session.flush()
    return True


async def _alert(session: AsyncSession, kind: str, refund: Refund) -> None:
    await outbox.enqueue(
        session,
        ALERT_KIND,
        {
            "type": kind,
            "refund_id": refund.id,
            "payment_id": refund.payment_id,
            "order_id": refund.order_id,
            "amount": refund.amount,
            "failure_code": refund.failure_code,
        },
    )


# The longest reconcile waits between two looks at one payment.
RECHECK_AT_MOST_EVERY = timedelta(hours=6)


def next_look(created_at: datetime, now: datetime, *, after_seconds: int) -> datetime:
    """When to ask about a payment again: after as long as it has existed, at least
    KASSA_RECONCILE_AFTER_SECONDS and at most six hours. So an abandoned payment is asked
    about some twenty times in its three days, not every interval."""
    wait = min(max(now - created_at, timedelta(seconds=after_seconds)), RECHECK_AT_MOST_EVERY)
    return now + wait


async def asked_provider(session: AsyncSession, payment: Payment, *, after_seconds: int) -> None:
    """Reconcile asked about this payment and learned nothing new (or could not ask)."""
    now = clock.now()
    await session.execute(
        update(Payment)
        .where(Payment.id == payment.id)
        .values(
            updated_at=now,
            recheck_at=next_look(payment.created_at, now, after_seconds=after_seconds),
        )
        .execution_options(synchronize_session=False)
    )
