"""Razorpay, through the official `razorpay` package (synchronous: every call runs in a thread,
off the event loop, with a timeout).

A Kassa payment is a Razorpay Order (`receipt` = the checkout id, Kassa's ids in `notes`); the
buyer's browser gets what Checkout.js needs (`key_id`, `order_id`, `amount`, `currency`). Razorpay
has no idempotency keys for orders, so creating looks for the checkout's order by its receipt
first; refunds look for Kassa's refund id in the payment's refunds before asking again.
Webhooks are verified with the SDK (HMAC-SHA256 of the raw body, each configured secret in turn)
and deduplicated on `x-razorpay-event-id`. Amounts are in the minor unit (paise) both ways;
currencies are upper case at Razorpay and lower case in Kassa.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import razorpay as razorpay_sdk
import requests
from razorpay.errors import BadRequestError, SignatureVerificationError

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

NAME = "razorpay"
T = TypeVar("T")


class RazorpayProvider:
    name = NAME

    def __init__(
        self,
        *,
        key_id: str,
        key_secret: str,
        webhook_secrets: Sequence[str],
        api_base: str | None = None,
        timeout_seconds: float = 10.0,
    ) -> None:
        self._key_id = key_id
        self._webhook_secrets = [s for s in webhook_secrets if s]
        self._timeout = timeout_seconds
        options = {"base_url": api_base} if api_base else {}
        self._client = razorpay_sdk.Client(auth=(key_id, key_secret), **options)

    async def _call(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one SDK call in a thread; no answer, a timeout or a server error is
        ProviderUnavailable, a BadRequestError is passed on (the caller decides)."""
        call = functools.partial(work, *args, timeout=self._timeout, **kwargs)
        try:
            return await asyncio.to_thread(call)
        except BadRequestError:
            raise
        except (
            requests.RequestException,
            razorpay_sdk.errors.ServerError,
            razorpay_sdk.errors.GatewayError,
            ValueError,
        ) as error:
            raise ProviderUnavailable(f"razorpay: {type(error).__name__}") from None

    async def create_payment(
        self, *, payment_id: str, checkout_id: str, amount: int, currency: str
    ) -> CreatedPayment:
        try:
            found = await self._call(self._client.order.all, {"receipt": checkout_id})
            orders = [o for o in found.get("items", []) if o.get("receipt") == checkout_id]
            order = (
                orders[0]
                if orders
                else await self._call(
                    self._client.order.create,
                    {
                        "amount": amount,
                        "currency": currency.upper(),
                        "receipt": checkout_id,
                        "notes": {"kassa_payment_id": payment_id, "kassa_checkout_id": checkout_id},
                    },
                )
            )
        except BadRequestError:
            raise ProviderUnavailable("razorpay: the order was refused") from None
        order_id = str(order["id"])
        return CreatedPayment(
            provider_reference=order_id,
            client_data={
                "key_id": self._key_id,
                "order_id": order_id,
            },
        )

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        signature = header(headers, "x-razorpay-signature")
        event_id = header(headers, "x-razorpay-event-id")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidSignature("the webhook body is not UTF-8") from None
        if not signature:
            raise InvalidSignature("the X-Razorpay-Signature header is missing")
        for secret in self._webhook_secrets:
            try:
                self._client.utility.verify_webhook_signature(text, signature, secret)
            except (SignatureVerificationError, TypeError, ValueError):
                # TypeError: a signature that is not ASCII (hmac.compare_digest refuses it).
                continue
            break
        else:
            raise InvalidSignature("the X-Razorpay-Signature header is wrong")
        if not event_id:
            raise InvalidEvent("a signed Razorpay event without x-razorpay-event-id")
        try:
            payload = json.loads(text)
        except ValueError:
            raise InvalidEvent("the signed body is not JSON") from None
        return read_event(event_id, payload)

    def verify_checkout_signature(
        self, *, order_id: str, razorpay_payment_id: str, signature: str
    ) -> None:
        """Checkout.js's `razorpay_signature`, checked by the SDK; raises InvalidSignature."""
        try:
            self._client.utility.verify_payment_signature(
                {
                    "razorpay_order_id": order_id,
                    "razorpay_payment_id": razorpay_payment_id,
                    "razorpay_signature": signature,
                }
            )
        except (SignatureVerificationError, TypeError, ValueError):
            raise InvalidSignature("the Razorpay checkout signature is not valid") from None

    async def confirm(
        self, *, provider_reference: str, attempt_reference: str, signature: str
    ) -> ProviderPayment:
        self.verify_checkout_signature(
            order_id=provider_reference, razorpay_payment_id=attempt_reference, signature=signature
        )
        try:
            attempt = dict(await self._call(self._client.payment.fetch, attempt_reference))
        except BadRequestError:
            raise InvalidSignature("Razorpay does not know this payment") from None
        if attempt.get("order_id") != provider_reference:
            raise InvalidSignature("this Razorpay payment belongs to another order")
        return attempt_state(provider_reference, attempt)

    async def capture(self, razorpay_payment_id: str, amount: int, currency: str) -> None:
        """Capture an authorized payment (accounts without auto-capture). Capturing one that
        is captured already is done, not an error."""
        try:
            await self._call(
                self._client.payment.capture,
                razorpay_payment_id,
                amount,
                {"currency": currency.upper()},
            )
        except BadRequestError as error:
            if "already" in str(error).lower():
                return
            raise ProviderRefused("capture_refused") from None

    async def refund(
        self, *, provider_reference: str, amount: int, currency: str, refund_id: str
    ) -> RefundResult:
        paid = await self._captured_payment(provider_reference)
        if paid is None:
            raise ProviderRefused("no_captured_payment")
        # No idempotency keys at Razorpay: a refund already made for this Kassa refund is found
        # by its notes, so a retry after a crash never refunds twice.
        existing = await self._call(self._client.payment.fetch_multiple_refund, paid["id"])
        for made in existing.get("items", []):
            if (made.get("notes") or {}).get("kassa_refund_id") == refund_id:
                return _refund_result(made)
        try:
            made = await self._call(
                self._client.payment.refund,
                paid["id"],
                {"amount": amount, "notes": {"kassa_refund_id": refund_id}},
            )
        except BadRequestError as error:
            raise ProviderRefused(_code(str(error))) from None
        return _refund_result(made)

    async def fetch_payment(self, provider_reference: str) -> ProviderPayment:
        attempts = await self._attempts(provider_reference)
        for attempt in attempts:
            if attempt.get("status") == "captured":
                return ProviderPayment(
                    provider_reference,
                    "succeeded",
                    amount_or_none(attempt.get("amount")),
                    _currency(attempt.get("currency")),
                )
        if attempts and all(a.get("status") == "failed" for a in attempts):
            last = attempts[0]
            return ProviderPayment(
                provider_reference,
                "failed",
                amount_or_none(last.get("amount")),
                _currency(last.get("currency")),
                text_or_none(last.get("error_reason") or last.get("error_code")),
            )
        return ProviderPayment(provider_reference, "pending")

    async def _attempts(self, order_id: str) -> list[dict[str, Any]]:
        try:
            found = await self._call(self._client.order.payments, order_id)
        except BadRequestError:
            raise ProviderUnavailable("razorpay: no such order") from None
        return [dict(item) for item in found.get("items", [])]

    async def _captured_payment(self, order_id: str) -> dict[str, Any] | None:
        for attempt in await self._attempts(order_id):
            if attempt.get("status") in ("captured", "refunded"):
                return attempt
        return None


def read_event(event_id: str, payload: Any) -> ProviderEvent:
    """A verified Razorpay event in Kassa's words; events Kassa does not act on are OTHER."""
    try:
        kind = str(payload["event"])
        entities = payload["payload"]
        if not isinstance(entities, dict):
            raise TypeError("payload")
    except (KeyError, TypeError):
        raise InvalidEvent("the signed body is not a Razorpay event") from None
    payment = _entity(entities, "payment")
    if kind in ("payment.captured", "order.paid", "payment.authorized", "payment.failed"):
        if payment is None:
            raise InvalidEvent(f"a {kind} event without its payment")
        order = _entity(entities, "order") or {}
        types = {
            "payment.captured": EventType.PAYMENT_SUCCEEDED,
            "order.paid": EventType.PAYMENT_SUCCEEDED,
            "payment.authorized": EventType.PAYMENT_AUTHORIZED,
            "payment.failed": EventType.PAYMENT_FAILED,
        }
        return ProviderEvent(
            event_id=event_id,
            type=types[kind],
            provider_reference=text_or_none(payment.get("order_id") or order.get("id")),
            payment_id=text_or_none((order.get("notes") or {}).get("kassa_payment_id")),
            amount=amount_or_none(payment.get("amount")),
            currency=_currency(payment.get("currency")),
            failure_code=text_or_none(payment.get("error_reason") or payment.get("error_code"))
            if kind == "payment.failed"
            else None,
            attempt_reference=text_or_none(payment.get("id")),
            raw=payload,
        )
    if kind in ("refund.processed", "refund.failed"):
        refund = _entity(entities, "refund")
        if refund is None:
            raise InvalidEvent(f"a {kind} event without its refund")
        return ProviderEvent(
            event_id=event_id,
            type=EventType.REFUND_SUCCEEDED
            if kind == "refund.processed"
            else EventType.REFUND_FAILED,
            amount=amount_or_none(refund.get("amount")),
            currency=_currency(refund.get("currency")),
            failure_code="refund_failed" if kind == "refund.failed" else None,
            refund_reference=text_or_none(refund.get("id")),
            refund_id=text_or_none((refund.get("notes") or {}).get("kassa_refund_id")),
            raw=payload,
        )
    return ProviderEvent(event_id=event_id, type=EventType.OTHER, raw=payload)


def attempt_state(order_id: str, attempt: Mapping[str, Any]) -> ProviderPayment:
    """What one Razorpay payment says about its order."""
    status = attempt.get("status")
    verdict = {"captured": "succeeded", "failed": "failed", "authorized": "authorized"}.get(
        str(status), "pending"
    )
    return ProviderPayment(
        order_id,
        verdict,
        amount_or_none(attempt.get("amount")),
        _currency(attempt.get("currency")),
        text_or_none(attempt.get("error_reason") or attempt.get("error_code"))
        if verdict == "failed"
        else None,
    )


def _refund_result(made: Mapping[str, Any]) -> RefundResult:
    if made.get("status") == "failed":
        raise ProviderRefused("refund_failed")
    return RefundResult(
        str(made["id"]), "succeeded" if made.get("status") == "processed" else "pending"
    )


def _entity(entities: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    wrapper = entities.get(name)
    if isinstance(wrapper, dict) and isinstance(wrapper.get("entity"), dict):
        return dict(wrapper["entity"])
    return None


def _code(message: str) -> str:
    return "_".join(message.lower().split())[:64] or "refund_refused"


def _currency(value: Any) -> str | None:
    return None if value is None else str(value).lower()[:3]
