"""Payment endpoints: status polling, the sandbox provider's card form, provider webhooks.

They live with checkout, not payments: paying moves a checkout's hold, and what an event does
lands on checkouts and orders (`checkout.events`). `payments` itself stays a leaf.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request

from kassa.carts.deps import Access
from kassa.checkout import events
from kassa.checkout import service as checkouts
from kassa.deps import AppSettings, ReadSession, WriteSession, get_database, get_providers
from kassa.errors import NotFound
from kassa.payments import service as payments
from kassa.payments.models import Payment
from kassa.payments.providers import sandbox
from kassa.payments.schemas import CardIn, PaymentOut, SandboxPayOut, WebhookAck

router = APIRouter(tags=["payments"])

PaymentId = Annotated[str, Path(max_length=64)]


def payment_out(payment: Payment) -> PaymentOut:
    return PaymentOut.model_validate(payment, from_attributes=True)


@router.get("/v1/payments/{payment_id}", response_model=PaymentOut)
async def get_payment(payment_id: PaymentId, access: Access, session: ReadSession) -> PaymentOut:
    """Status polling for the buyer (cart token or sign-in) and admins."""
    try:
        payment = await payments.get_payment(session, payment_id)
        await checkouts.find_checkout(session, payment.checkout_id, access)
    except (payments.PaymentNotFound, checkouts.CheckoutNotFound):
        raise payments.PaymentNotFound(f"no payment {payment_id}") from None
    return payment_out(payment)


@router.post("/v1/sandbox/payments/{payment_id}/pay", status_code=202, response_model=SandboxPayOut)
async def sandbox_pay(
    payment_id: PaymentId,
    body: CardIn,
    access: Access,
    session: WriteSession,
    settings: AppSettings,
) -> SandboxPayOut:
    """The sandbox's card form, for the buyer (cart token or sign-in).

    4242424242424242 succeeds, 4000000000000002 is declined, 4000000000009995 fails with
    insufficient funds (any other 16 digits: declined). The outcome arrives later as a signed
    webhook, like a real provider's; the hold is kept (up to the maximum TTL) meanwhile."""
    # The payment row, then its checkout's: the order a webhook for this payment takes them in.
    try:
        payment = await payments.get_payment(session, payment_id, lock=True)
        await checkouts.find_checkout(session, payment.checkout_id, access)
    except (payments.PaymentNotFound, checkouts.CheckoutNotFound):
        raise payments.PaymentNotFound(f"no payment {payment_id}") from None
    if payment.provider != sandbox.NAME:
        raise payments.PaymentNotFound(f"no sandbox payment {payment_id}")
    checkout = await checkouts.lock_checkout(session, payment.checkout_id)
    await checkouts.payment_processing(session, settings, checkout)
    await payments.start_processing(session, payment)
    assert payment.provider_reference is not None
    await sandbox.charge(
        session,
        payment_id=payment.id,
        provider_reference=payment.provider_reference,
        amount=payment.amount,
        currency=payment.currency,
        card_number=body.card_number,
    )
    return SandboxPayOut(
        payment_id=payment.id,
        status="processing",
        detail="the outcome is delivered as a signed webhook; poll GET /v1/payments/{id}",
    )


@router.post("/v1/webhooks/sandbox", response_model=WebhookAck)
async def sandbox_webhook(request: Request) -> WebhookAck:
    """Sandbox events, verified with Standard Webhooks (`webhook-id`, `webhook-timestamp`,
    `webhook-signature`); each event id takes effect once."""
    return await _receive(request, sandbox.NAME)


@router.post("/v1/webhooks/stripe", response_model=WebhookAck)
async def stripe_webhook(request: Request) -> WebhookAck:
    """Stripe events, verified with the `Stripe-Signature` header (300 s tolerance) by the
    official SDK against each of KASSA_STRIPE_WEBHOOK_SECRET's secrets; each event id takes
    effect once. 404 when Stripe is not enabled."""
    return await _receive(request, "stripe")


@router.post("/v1/webhooks/razorpay", response_model=WebhookAck)
async def razorpay_webhook(request: Request) -> WebhookAck:
    """Razorpay events, verified with `X-Razorpay-Signature` (HMAC-SHA256 of the raw body) by
    the official SDK against each of KASSA_RAZORPAY_WEBHOOK_SECRET's secrets, deduplicated on
    `x-razorpay-event-id`. 404 when Razorpay is not enabled."""
    return await _receive(request, "razorpay")


async def _receive(request: Request, provider_name: str) -> WebhookAck:
    providers = get_providers(request)
    if provider_name not in providers.names:
        raise NotFound(f"{provider_name} is not enabled here")
    body = await request.body()
    outcome = await events.receive(
        get_database(request),
        request.app.state.events,
        providers,
        provider_name,
        body,
        dict(request.headers),
    )
    return WebhookAck(received=True, outcome=outcome)
