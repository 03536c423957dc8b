"""The built-in sandbox provider: no account needed, outcomes decided by test card numbers,
results delivered as Standard-Webhooks-signed events through the outbox, like a real provider.

Its "bank" keeps books (`sandbox_charges`) so that asking it about a payment (reconcile) has an
answer. Its references are derived from Kassa's payment id, so creating a payment twice with the
same id gives the same payment, as an idempotency key does at a real provider.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from kassa import clock
from kassa.db import Database, upsert
from kassa.ids import new_id
from kassa.outbox import service as outbox
from kassa.outbox.service import Claimed, DeliveryFailed
from kassa.payments.models import SandboxCharge
from kassa.payments.providers.base import (
    CreatedPayment,
    EventType,
    InvalidEvent,
    InvalidSignature,
    ProviderEvent,
    ProviderPayment,
    RefundResult,
)

NAME = "sandbox"
SUCCEEDS = "4242424242424242"
# Test cards and what they do; any other 16-digit number is declined like an unknown card.
DECLINES = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
}
WEBHOOK_KIND = "sandbox.webhook"
WEBHOOK_PATH = "/v1/webhooks/sandbox"


@dataclass(frozen=True)
class CardOutcome:
    succeeded: bool
    failure_code: str | None = None


def card_outcome(card_number: str) -> CardOutcome:
    """What the sandbox does with a card (the number is already 16 digits)."""
    if card_number == SUCCEEDS:
        return CardOutcome(True)
    return CardOutcome(False, DECLINES.get(card_number, "card_declined"))


def reference_for(payment_id: str) -> str:
    return "sbx_pi_" + payment_id.removeprefix("pay_")


def event(event_type: str, created: datetime, data: dict[str, Any]) -> dict[str, Any]:
    """A sandbox event as API.md describes it."""
    return {
        "id": new_id("evt"),
        "type": event_type,
        "created": int(created.timestamp()),
        "data": data,
    }


def signed_headers(secret: str, message_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for `body` sent at `at` (each attempt signs afresh)."""
    signature = Webhook(secret).sign(message_id, at, body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def body_of(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)


async def emit(
    session: AsyncSession, event_type: str, data: dict[str, Any], *, event_id: str | None = None
) -> str:
    """The sandbox announces an outcome: a signed webhook, delivered after this commit."""
    payload = event(event_type, clock.now(), dict(data))
    if event_id is not None:
        payload["id"] = event_id
    await outbox.enqueue(session, WEBHOOK_KIND, {"event": payload})
    return str(payload["id"])


async def charge(
    session: AsyncSession,
    *,
    payment_id: str,
    provider_reference: str,
    amount: int,
    currency: str,
    card_number: str,
) -> CardOutcome:
    """The buyer paid at the sandbox's card form: book the outcome and announce it."""
    outcome = card_outcome(card_number)
    status = "succeeded" if outcome.succeeded else "failed"
    await upsert(
        session,
        SandboxCharge.__table__,
        {
            "provider_reference": provider_reference,
            "payment_id": payment_id,
            "amount": amount,
            "currency": currency,
            "status": status,
            "failure_code": outcome.failure_code,
            "updated_at": clock.now(),
        },
        key="provider_reference",
    )
    data: dict[str, Any] = {
        "payment_id": payment_id,
        "provider_reference": provider_reference,
        "amount": amount,
        "currency": currency,
    }
    if not outcome.succeeded:
        data["failure_code"] = outcome.failure_code
    kind = EventType.PAYMENT_SUCCEEDED if outcome.succeeded else EventType.PAYMENT_FAILED
    await emit(session, kind, data)
    return outcome


class SandboxProvider:
    name = NAME

    def __init__(self, webhook_secret: str, db: Database) -> None:
        self._secret = webhook_secret
        self._webhook = Webhook(webhook_secret)
        self._db = db

    async def create_payment(
        self, *, payment_id: str, checkout_id: str, amount: int, currency: str
    ) -> CreatedPayment:
        return CreatedPayment(
            provider_reference=reference_for(payment_id),
            client_secret=f"{payment_id}_secret_sandbox",
        )

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        try:
            payload = self._webhook.verify(body, dict(headers))
        except (WebhookVerificationError, ValueError, binascii.Error, UnicodeDecodeError):
            # ValueError covers a malformed signature header and a body that is not JSON.
            raise InvalidSignature("the webhook signature, id or timestamp is not valid") from None
        return _read_event(payload)

    async def refund(
        self, *, provider_reference: str, amount: int, currency: str, refund_id: str
    ) -> RefundResult:
        # The sandbox "bank" refunds at once and says so by webhook (one refund, one event id:
        # a re-sent event is a duplicate at the receiver).
        reference = f"sbx_re_{refund_id}"

        async def announce(session: AsyncSession) -> None:
            await emit(
                session,
                EventType.REFUND_SUCCEEDED,
                {
                    "provider_reference": provider_reference,
                    "refund_reference": reference,
                    "refund_id": refund_id,
                    "amount": amount,
                    "currency": currency,
                },
                event_id=f"evt_{refund_id}",
            )

        await self._db.run(announce)
        return RefundResult(reference)

    async def fetch_payment(self, provider_reference: str) -> ProviderPayment:
        async with self._db.read() as session:
            found = await session.scalar(
                select(SandboxCharge).where(SandboxCharge.provider_reference == provider_reference)
            )
        if found is None:
            return ProviderPayment(provider_reference, "pending")
        return ProviderPayment(
            provider_reference, found.status, found.amount, found.currency, found.failure_code
        )

    def webhook_sender(self, http: httpx.AsyncClient, url: str | None) -> outbox.Handler:
        """The outbox handler that POSTs the sandbox's events, signed afresh for each attempt
        (same webhook-id every time), to `url` or to this app itself."""

        async def send(message: Claimed) -> None:
            payload = message.payload["event"]
            body = body_of(payload)
            # Signed with the wall clock, not kassa.clock: the receiver checks the timestamp
            # against its own wall clock (a 5-minute tolerance).
            headers = signed_headers(self._secret, payload["id"], body, datetime.now(UTC))
            try:
                response = await http.post(
                    url or WEBHOOK_PATH, content=body, headers=headers, timeout=10.0
                )
            except httpx.HTTPError as error:
                raise DeliveryFailed(f"webhook not delivered: {type(error).__name__}") from None
            if not 200 <= response.status_code < 300:
                raise DeliveryFailed(f"webhook answered {response.status_code}")

        return send


_TYPES = {str(t): t for t in EventType if t is not EventType.OTHER}


def _read_event(payload: Any) -> ProviderEvent:
    """A correctly signed body that is not an event is refused with 422: nothing can be done
    with it, and the provider should hear about it."""
    try:
        data = payload["data"]
        amount = data.get("amount")
        reference = data["provider_reference"]
        return ProviderEvent(
            event_id=str(payload["id"]),
            type=_TYPES.get(str(payload["type"]), EventType.OTHER),
            provider_reference=str(reference),
            payment_id=_text(data.get("payment_id")),
            amount=int(amount) if amount is not None else None,
            currency=_text(data.get("currency")),
            failure_code=_text(data.get("failure_code")),
            refund_reference=_text(data.get("refund_reference")),
            refund_id=_text(data.get("refund_id")),
            raw=payload,
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InvalidEvent("the signed body is not a sandbox event") from None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)[:255]
