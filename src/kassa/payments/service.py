"""Payment and refund records: create, the payment status machine, refunds within what was paid.

`create_refund` counts the refund against the payment in one conditional UPDATE (and a CHECK), so
concurrent refunds can never add up to more than was paid (promise 6). The provider is asked to
refund through the outbox, after the commit (promise 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.errors import Conflict, InvalidInput, InvalidTransition, NotFound
from kassa.ids import new_id
from kassa.payments import outbox
from kassa.payments.models import Payment, Refund
from kassa.payments.providers.base import PaymentProvider


class PaymentNotFound(NotFound):
    title = "Payment not found"


class PaymentNotPayable(Conflict):
    title = "The payment cannot be paid now"


# The payment status machine. Asking for the status a payment is already in changes nothing.
# A failed payment may be tried again (pending) or succeed; once it succeeded, a late
# `payment.failed` is ignored rather than an error (events arrive in any order).
PAYMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"succeeded", "failed"}),
    "failed": frozenset({"pending", "succeeded"}),
    "succeeded": frozenset({"partially_refunded", "refunded"}),
    "partially_refunded": frozenset({"refunded"}),
    "refunded": frozenset(),
}
PAID = frozenset({"succeeded", "partially_refunded", "refunded"})


def payment_may_become(current: str, target: str) -> bool:
    return target == current or target in PAYMENT_TRANSITIONS[current]


@dataclass(frozen=True)
class PaymentView:
    id: str
    checkout_id: str
    status: str
    amount: int
    refunded_amount: int
    currency: str
    provider: str
    provider_reference: str
    client_secret: str | None
    failure_code: str | None


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
    )


async def create_payment(
    session: AsyncSession,
    provider: PaymentProvider,
    *,
    checkout_id: str,
    amount: int,
    currency: str,
) -> Payment:
    payment_id = new_id("pay")
    created = await provider.create_payment(
        payment_id=payment_id, amount=amount, currency=currency, reference=checkout_id
    )
    now = clock.now()
    payment = Payment(
        id=payment_id,
        checkout_id=checkout_id,
        provider=provider.name,
        provider_reference=created.provider_reference,
        client_secret=created.client_secret,
        status="pending",
        amount=amount,
        refunded_amount=0,
        currency=currency,
        created_at=now,
        updated_at=now,
    )
    # Not added to the session: the caller adds it once the checkout row it refers to is in.
    return payment


async def get_payment(session: AsyncSession, payment_id: str, *, lock: bool = False) -> Payment:
    query = select(Payment).where(Payment.id == payment_id)
    if lock and (await session.connection()).dialect.name == "postgresql":
        query = query.with_for_update()
    payment = await session.scalar(query)
    if payment is None:
        raise PaymentNotFound(f"no payment {payment_id}")
    return payment


async def start_processing(session: AsyncSession, payment: Payment) -> None:
    """The buyer submitted payment details: pending again (a retry after a failure)."""
    if payment.status not in ("pending", "failed"):
        raise PaymentNotPayable(f"payment {payment.id} is {payment.status}")
    now = clock.now()
    payment.status = "pending"
    payment.failure_code = None
    payment.processing_since = now
    payment.updated_at = now
    await session.flush()


async def record_outcome(
    session: AsyncSession, payment: Payment, *, succeeded: bool, failure_code: str | None
) -> bool:
    """Apply a provider's verdict; returns False if it changes nothing (a success that was
    already known, or a failure reported after the success)."""
    target = "succeeded" if succeeded else "failed"
    if payment.status in PAID:
        return False
    if not payment_may_become(payment.status, target):
        raise InvalidTransition(
            f"a {payment.status} payment cannot become {target}",
            from_state=payment.status,
            to_state=target,
        )
    if payment.status == target:
        return False
    payment.status = target
    payment.failure_code = failure_code
    payment.updated_at = clock.now()
    await session.flush()
    return True


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
    payment.refunded_amount = refunded
    payment.status = "refunded" if refunded == paid else "partially_refunded"
    refund = Refund(
        id=new_id("ref"),
        payment_id=payment.id,
        order_id=order_id,
        amount=amount,
        reason=reason[:255],
        status="pending",
        created_at=clock.now(),
    )
    session.add(refund)
    await session.flush()
    await outbox.enqueue(session, "provider_refund", {"refund_id": refund.id})
    return refund


async def get_refund(session: AsyncSession, refund_id: str) -> Refund | None:
    return await session.get(Refund, refund_id)


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
    session: AsyncSession, provider_reference: str, *, at: datetime | None = None
) -> Refund | None:
    """The provider confirms a refund. Returns the refund if this call moved it to succeeded;
    None if Kassa does not know it or it had succeeded already (nothing changes)."""
    result = await session.execute(
        update(Refund)
        .where(Refund.provider_reference == provider_reference, Refund.status == "pending")
        .values(status="succeeded", succeeded_at=at or clock.now())
        .returning(Refund.id)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    return None if row is None else await session.get(Refund, row[0])
