"""What a provider's event does to checkouts and orders, applied once (promise 5).

Webhooks, the buyer's client-side confirmation and reconcile all come here with a verified
`ProviderEvent`: recorded once in `webhook_events` (the provider, the event id), then applied in
the same transaction. An event whose subject does not exist yet (a refund notice before Kassa
stored the refund's reference and without Kassa's refund id) is not swallowed: it is recorded as
`deferred` and kept in the outbox, which applies it again with backoff until its subject appears.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from kassa.checkout import completion
from kassa.checkout.models import Checkout
from kassa.config import Settings
from kassa.db import Database
from kassa.orders import service as orders
from kassa.outbox import service as outbox
from kassa.outbox.service import Claimed, DeliveryFailed, Handler, RetryPolicy
from kassa.payments import refunds, webhooks
from kassa.payments import service as payments
from kassa.payments.captures import CAPTURE_KIND
from kassa.payments.models import Payment, Refund
from kassa.payments.providers.base import CreatedPayment, EventType, ProviderEvent
from kassa.payments.providers.registry import Providers
from kassa.payments.states import PaymentStatus

DEFERRED_KIND = "payments.deferred_event"
# An event kept for a subject that has not appeared: tried again for about a day (1, 2, 4 … s,
# then every 10 minutes), then set aside as dead, where the outbox backlog shows it.
DEFERRED_POLICY = RetryPolicy(max_attempts=150)


class NotYet(Exception):
    """The event's subject does not exist (yet)."""


@dataclass(frozen=True)
class EventContext:
    settings: Settings
    hooks: refunds.RefundHooks


async def receive(
    db: Database,
    ctx: EventContext,
    providers: Providers,
    provider_name: str,
    body: bytes,
    headers: dict[str, str],
) -> str:
    """One webhook request: verify, then apply once. Returns the outcome for the answer."""
    provider = providers.get(provider_name)
    event = await webhooks.verify(db, provider, body, headers)
    return await db.run(lambda s: apply_once(s, ctx, provider_name, event))


async def apply_once(
    session: AsyncSession, ctx: EventContext, provider_name: str, event: ProviderEvent
) -> str:
    """Record the event once and act on it, in the caller's transaction: processed,
    duplicate, ignored or deferred."""
    if not await webhooks.record_once(session, provider_name, event):
        await webhooks.receipt(session, provider_name, event.event_id, "duplicate")
        return "duplicate"
    try:
        outcome = await apply(session, ctx, provider_name, event)
    except NotYet:
        await outbox.enqueue(
            session,
            DEFERRED_KIND,
            {"provider": provider_name, "event": event.as_json()},
            delay_seconds=1,
        )
        outcome = "deferred"
    if outcome != "processed":
        await webhooks.set_outcome(session, provider_name, event.event_id, outcome)
    return outcome


async def apply(
    session: AsyncSession, ctx: EventContext, provider_name: str, event: ProviderEvent
) -> str:
    """Act on a recorded event. Raises NotYet when its subject is not there, always before
    anything is written (so the caller's transaction can go on to keep the event)."""
    if event.type in (EventType.REFUND_SUCCEEDED, EventType.REFUND_FAILED):
        return await _refund_event(session, ctx, event)
    if event.type not in (
        EventType.PAYMENT_SUCCEEDED,
        EventType.PAYMENT_FAILED,
        EventType.PAYMENT_AUTHORIZED,
        EventType.DISPUTE_OPENED,
    ):
        return "ignored"
    found = await completion.load(
        session, provider_name, reference=event.provider_reference, payment_id=event.payment_id
    )
    if found is None:
        if event.foreign:
            return "ignored"  # a payment of another system on the same account
        raise NotYet(f"payment {event.provider_reference or event.payment_id}")
    payment, checkout = found
    if payment.status == PaymentStatus.CREATING:
        if event.provider_reference is None:
            raise NotYet(f"payment {payment.id} has no provider reference yet")
        # The provider answered "create" but the answer was never stored (a crash in between):
        # the event tells it.
        await payments.store_created(session, payment, CreatedPayment(event.provider_reference))
    if event.type is EventType.PAYMENT_AUTHORIZED:
        await _capture(session, provider_name, payment, event)
    elif event.type is EventType.DISPUTE_OPENED:
        await _dispute(session, provider_name, payment, checkout, event)
    elif event.type is EventType.PAYMENT_SUCCEEDED:
        await completion.payment_succeeded(
            session,
            ctx.settings,
            payment,
            checkout,
            amount=event.amount,
            currency=event.currency,
            actor=provider_name,
        )
    else:
        await completion.payment_failed(
            session, ctx.settings, payment, checkout, failure_code=event.failure_code
        )
    return "processed"


async def _refund_event(session: AsyncSession, ctx: EventContext, event: ProviderEvent) -> str:
    refund = await payments.find_refund(
        session, reference=event.refund_reference, refund_id=event.refund_id
    )
    if refund is None:
        if event.foreign:
            return "ignored"  # a refund Kassa never made
        raise NotYet(f"refund {event.refund_reference or event.refund_id}")
    if refund.provider_reference is None and event.refund_reference:
        await payments.refund_sent(session, refund.id, event.refund_reference)
    await refunds.settle(
        session,
        refund,
        succeeded=event.type is EventType.REFUND_SUCCEEDED,
        code=event.failure_code or "refund_failed",
        hooks=ctx.hooks,
    )
    return "processed"


async def _capture(
    session: AsyncSession, provider_name: str, payment: Payment, event: ProviderEvent
) -> None:
    """Reserved on the card, not taken: capture it (outside this transaction), unless it is for
    another amount or currency (then it is left to lapse) or the payment is settled."""
    if (
        event.attempt_reference
        and payments.success_matches(payment, event.amount, event.currency)
        and payment.status
        in (PaymentStatus.PENDING, PaymentStatus.PROCESSING, PaymentStatus.FAILED)
    ):
        await outbox.enqueue(
            session,
            CAPTURE_KIND,
            {
                "provider": provider_name,
                "attempt_reference": event.attempt_reference,
                "amount": payment.amount,
                "currency": payment.currency,
            },
        )


async def _dispute(
    session: AsyncSession,
    provider_name: str,
    payment: Payment,
    checkout: Checkout,
    event: ProviderEvent,
) -> None:
    order = await orders.order_for_checkout(session, checkout.id)
    if order is not None:
        await orders.record_event(
            session, order, "dispute_opened", provider_name, reason=event.failure_code
        )
    await outbox.enqueue(
        session,
        completion.ALERT_KIND,
        {
            "type": "payment.disputed",
            "payment_id": payment.id,
            "order_id": order.id if order else None,
            "reason": event.failure_code,
        },
    )


def deferred_applier(db: Database, ctx: EventContext) -> Handler:
    """The outbox handler that applies a kept event again once its subject exists."""

    async def again(message: Claimed) -> None:
        provider_name = str(message.payload["provider"])
        event = ProviderEvent.from_json(message.payload["event"])

        async def work(session: AsyncSession) -> None:
            try:
                await apply(session, ctx, provider_name, event)
            except NotYet as missing:
                raise DeliveryFailed(f"still waiting for {missing}") from None
            await webhooks.set_outcome(session, provider_name, event.event_id, "processed")

        await db.run(work)

    return again


async def order_refund_succeeded(session: AsyncSession, refund: Refund) -> None:
    if refund.order_id is not None:
        order = await orders.get_order(session, refund.order_id)
        await orders.record_event(
            session, order, "refund_succeeded", "provider", refund_id=refund.id
        )


async def order_refund_failed(session: AsyncSession, refund: Refund) -> None:
    if refund.order_id is not None and refund.counted:
        await orders.refund_failed(session, refund)


async def lock_order_of(session: AsyncSession, refund: Refund) -> None:
    if refund.order_id is not None:
        await orders.lock_order(session, refund.order_id)


REFUND_HOOKS = refunds.RefundHooks(
    on_succeeded=order_refund_succeeded,
    on_failed=order_refund_failed,
    lock_first=lock_order_of,
)
