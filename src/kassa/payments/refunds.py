"""Sending refunds to the provider: the outbox handler for `payments.refund`.

The provider is called outside any transaction, with the refund id as its idempotency key, so a
retry after a crash or a timeout never refunds twice. A refund the provider refuses becomes
`failed` and is given back (to the payment here, to the order through `on_failed`); one it did
not answer is tried again, forever: money is never given up on.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from kassa.db import Database
from kassa.outbox.service import Claimed, DeliveryFailed, Handler
from kassa.payments import service as payments
from kassa.payments.models import Refund
from kassa.payments.providers.base import ProviderRefused, ProviderUnavailable
from kassa.payments.providers.registry import Providers
from kassa.payments.states import RefundStatus

RefundHook = Callable[[AsyncSession, Refund], Awaitable[None]]


async def _nothing(_session: AsyncSession, _refund: Refund) -> None:
    return None


@dataclass(frozen=True)
class RefundHooks:
    """What the domains above payments do when a refund ends (orders record it)."""

    on_succeeded: RefundHook = _nothing
    on_failed: RefundHook = _nothing
    # Called before a refusal touches the payment row: the order row must be locked first,
    # the order in which refunds and cancels take them (order, then payment), or two of them
    # could deadlock on PostgreSQL.
    lock_first: RefundHook = _nothing


async def settle(
    session: AsyncSession, refund: Refund, *, succeeded: bool, code: str, hooks: RefundHooks
) -> bool:
    """The provider's last word on a refund (webhook or direct answer); False if known."""
    if succeeded:
        if await payments.refund_succeeded(session, refund):
            await hooks.on_succeeded(session, refund)
            return True
        return False
    await hooks.lock_first(session, refund)
    if await payments.refund_failed(session, refund, code):
        await hooks.on_failed(session, refund)
        return True
    return False


def refund_sender(db: Database, providers: Providers, hooks: RefundHooks) -> Handler:
    async def send(message: Claimed) -> None:
        refund_id = str(message.payload["refund_id"])
        async with db.read() as session:
            refund = await payments.get_refund(session, refund_id)
            if refund is None or refund.status != RefundStatus.PENDING:
                return
            if refund.provider_reference is not None:
                return  # sent already; the provider's webhook settles it
            payment = await payments.get_payment(session, refund.payment_id)
            provider_name, reference = payment.provider, payment.provider_reference
            amount, currency = refund.amount, refund.currency or payment.currency
        if reference is None:
            raise DeliveryFailed(f"payment {payment.id} has no provider reference yet")
        provider = providers.get(provider_name)
        try:
            # No outer timeout: every adapter bounds each of its calls itself. One around
            # several calls (Razorpay: look for the refund, then make it) could give up while a
            # call it cannot stop (a thread) still makes the refund, and the retry would find
            # nothing yet and refund again.
            result = await provider.refund(
                provider_reference=reference,
                amount=amount,
                currency=currency,
                refund_id=refund_id,
            )
        except ProviderRefused as refused:
            code = refused.code

            async def fail(session: AsyncSession) -> None:
                found = await payments.find_refund(session, reference=None, refund_id=refund_id)
                if found is not None:
                    await settle(session, found, succeeded=False, code=code, hooks=hooks)

            await db.run(fail)
            return
        except ProviderUnavailable as error:
            raise DeliveryFailed(f"refund not sent: {type(error).__name__}") from None

        async def record(session: AsyncSession) -> None:
            await payments.refund_sent(session, refund_id, result.provider_reference)
            if result.status == "succeeded":
                found = await payments.find_refund(session, reference=None, refund_id=refund_id)
                if found is not None:
                    await settle(session, found, succeeded=True, code="", hooks=hooks)

        await db.run(record)

    return send
