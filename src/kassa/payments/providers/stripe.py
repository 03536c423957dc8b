"""Stripe, through the official `stripe` package (async `StripeClient` on its httpx client).

PaymentIntents are created with Kassa's payment id as idempotency key and the payment and
checkout ids in `metadata`; the buyer's browser gets the `client_secret` and the publishable key
(Payment Element). Webhooks are verified with the SDK's `WebhookSignature` (300 s tolerance)
against each configured secret in turn, so a secret can be rotated without losing events.
Refunds carry Kassa's refund id as idempotency key and in `metadata`, so a refund notice finds
its refund even before Kassa stored the provider's reference.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import stripe as stripe_sdk

from kassa.payments.providers.base import (
    CreatedPayment,
    EventType,
    InvalidEvent,
    InvalidSignature,
    ProviderEvent,
    ProviderPayment,
    ProviderRefused,
    ProviderUnavailable,
    RefundResult,
    amount_or_none,
    header,
    text_or_none,
)

NAME = "stripe"
TOLERANCE_SECONDS = 300
# Stripe errors that are a real "no" to a refund: the request itself is refused (a charge
# already refunded or disputed, an amount too large). Anything else (no connection, a rate
# limit, Stripe's own failure, a key rotated under us, an idempotent request still in flight)
# is tried again later.
_REFUSALS = (stripe_sdk.InvalidRequestError, stripe_sdk.CardError)


class StripeProvider:
    name = NAME

    def __init__(
        self,
        *,
        secret_key: str,
        publishable_key: str | None,
        webhook_secrets: Sequence[str],
        api_base: str | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._publishable_key = publishable_key
        self._webhook_secrets = [s for s in webhook_secrets if s]
        self._client = stripe_sdk.StripeClient(
            secret_key,
            base_addresses={"api": api_base} if api_base else None,
            http_client=stripe_sdk.HTTPXClient(timeout=timeout_seconds),
            # Kassa retries through its own outbox and sweeper, with the same idempotency keys.
            max_network_retries=0,
        )

    async def create_payment(
        self, *, payment_id: str, checkout_id: str, amount: int, currency: str
    ) -> CreatedPayment:
        try:
            intent = await self._client.v1.payment_intents.create_async(
                params={
                    "amount": amount,
                    "currency": currency,
                    "automatic_payment_methods": {"enabled": True},
                    "metadata": {"kassa_payment_id": payment_id, "kassa_checkout_id": checkout_id},
                },
                options={"idempotency_key": f"kassa-payment-{payment_id}"},
            )
        except stripe_sdk.StripeError as error:
            raise ProviderUnavailable(f"stripe: {type(error).__name__}") from None
        data = {"publishable_key": self._publishable_key} if self._publishable_key else {}
        return CreatedPayment(intent.id, intent.client_secret, data)

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        signature = header(headers, "stripe-signature")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidSignature("the webhook body is not UTF-8") from None
        for secret in self._webhook_secrets:
            try:
                stripe_sdk.WebhookSignature.verify_header(
                    text, signature, secret, TOLERANCE_SECONDS
                )
            except (stripe_sdk.SignatureVerificationError, TypeError, ValueError):
                # TypeError: a signature that is not ASCII (hmac.compare_digest refuses it).
                continue
            break
        else:
            raise InvalidSignature("the Stripe-Signature header is missing, stale or wrong")
        try:
            payload = json.loads(text)
        except ValueError:
            raise InvalidEvent("the signed body is not JSON") from None
        return read_event(payload)

    async def refund(
        self, *, provider_reference: str, amount: int, currency: str, refund_id: str
    ) -> RefundResult:
        try:
            made = await self._client.v1.refunds.create_async(
                params={
                    "payment_intent": provider_reference,
                    "amount": amount,
                    "metadata": {"kassa_refund_id": refund_id},
                },
                options={"idempotency_key": f"kassa-refund-{refund_id}"},
            )
        except _REFUSALS as error:
            raise ProviderRefused(str(error.code or type(error).__name__)) from None
        except stripe_sdk.StripeError as error:
            raise ProviderUnavailable(f"stripe: {type(error).__name__}") from None
        if made.status in ("failed", "canceled"):
            raise ProviderRefused(str(getattr(made, "failure_reason", None) or made.status))
        return RefundResult(made.id, "succeeded" if made.status == "succeeded" else "pending")

    async def fetch_payment(self, provider_reference: str) -> ProviderPayment:
        try:
            intent = await self._client.v1.payment_intents.retrieve_async(provider_reference)
        except stripe_sdk.StripeError as error:
            raise ProviderUnavailable(f"stripe: {type(error).__name__}") from None
        return intent_state(intent.to_dict())


def intent_state(intent: Mapping[str, Any]) -> ProviderPayment:
    """What a PaymentIntent's status means to Kassa."""
    status = intent.get("status")
    error = intent.get("last_payment_error") or {}
    if status == "succeeded":
        verdict = "succeeded"
    elif status == "canceled" or (status == "requires_payment_method" and error):
        verdict = "failed"
    else:
        verdict = "pending"
    return ProviderPayment(
        provider_reference=str(intent.get("id")),
        status=verdict,
        amount=amount_or_none(intent.get("amount_received") or intent.get("amount")),
        currency=text_or_none(intent.get("currency")),
        failure_code=_failure_code(intent) if verdict == "failed" else None,
    )


def read_event(payload: Any) -> ProviderEvent:
    """A verified Stripe event in Kassa's words; events Kassa does not act on are OTHER."""
    try:
        event_id = str(payload["id"])
        kind = str(payload["type"])
        thing = payload["data"]["object"]
        if not isinstance(thing, dict):
            raise TypeError("data.object")
    except (KeyError, TypeError):
        raise InvalidEvent("the signed body is not a Stripe event") from None
    metadata = thing.get("metadata") or {}
    if kind in (
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "payment_intent.canceled",
    ):
        state = intent_state(thing)
        return ProviderEvent(
            event_id=event_id,
            type=EventType.PAYMENT_SUCCEEDED
            if kind == "payment_intent.succeeded"
            else EventType.PAYMENT_FAILED,
            provider_reference=text_or_none(thing.get("id")),
            payment_id=text_or_none(metadata.get("kassa_payment_id")),
            amount=state.amount,
            currency=state.currency,
            failure_code=None
            if kind == "payment_intent.succeeded"
            else (_failure_code(thing) or "canceled"),
            foreign="kassa_payment_id" not in metadata,
            raw=payload,
        )
    if kind in ("refund.created", "refund.updated", "refund.failed"):
        return _refund_event(event_id, kind, thing, payload)
    if kind == "charge.refunded":
        refunds = (thing.get("refunds") or {}).get("data") or []
        if refunds and isinstance(refunds[0], dict):
            return _refund_event(event_id, kind, refunds[0], payload)
        return ProviderEvent(event_id=event_id, type=EventType.OTHER, raw=payload)
    if kind == "charge.dispute.created":
        return ProviderEvent(
            event_id=event_id,
            type=EventType.DISPUTE_OPENED,
            provider_reference=text_or_none(thing.get("payment_intent")),
            amount=amount_or_none(thing.get("amount")),
            currency=text_or_none(thing.get("currency")),
            failure_code=text_or_none(thing.get("reason")),
            raw=payload,
        )
    return ProviderEvent(event_id=event_id, type=EventType.OTHER, raw=payload)


def _refund_event(
    event_id: str, kind: str, refund: Mapping[str, Any], payload: Any
) -> ProviderEvent:
    status = refund.get("status")
    if kind == "refund.failed" or status in ("failed", "canceled"):
        event_type = EventType.REFUND_FAILED
    elif status == "succeeded":
        event_type = EventType.REFUND_SUCCEEDED
    else:
        event_type = EventType.OTHER  # pending: the final word comes later
    return ProviderEvent(
        event_id=event_id,
        type=event_type,
        provider_reference=text_or_none(refund.get("payment_intent")),
        amount=amount_or_none(refund.get("amount")),
        currency=text_or_none(refund.get("currency")),
        failure_code=text_or_none(refund.get("failure_reason")),
        refund_reference=text_or_none(refund.get("id")),
        refund_id=text_or_none((refund.get("metadata") or {}).get("kassa_refund_id")),
        foreign="kassa_refund_id" not in (refund.get("metadata") or {}),
        raw=payload,
    )


def _failure_code(intent: Mapping[str, Any]) -> str | None:
    error = intent.get("last_payment_error") or {}
    code = error.get("decline_code") or error.get("code")
    if code is None and intent.get("status") == "canceled":
        code = intent.get("cancellation_reason") or "canceled"
    return text_or_none(code)
