"""The built-in sandbox provider: no account needed, outcomes decided by test card numbers,
results delivered as Standard-Webhooks-signed events through the outbox, like a real provider.
"""

from __future__ import annotations

import binascii
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from kassa.ids import new_id
from kassa.payments.providers.base import (
    PAYMENT_FAILED,
    PAYMENT_SUCCEEDED,
    REFUND_SUCCEEDED,
    CreatedPayment,
    InvalidEvent,
    InvalidSignature,
    ProviderEvent,
)

NAME = "sandbox"
SUCCEEDS = "4242424242424242"
# Test cards and what they do; any other 16-digit number is declined like an unknown card.
DECLINES = {
    "4000000000000002": "card_declined",
    "4000000000009995": "insufficient_funds",
}
EVENT_TYPES = {PAYMENT_SUCCEEDED, PAYMENT_FAILED, REFUND_SUCCEEDED}


@dataclass(frozen=True)
class CardOutcome:
    succeeded: bool
    failure_code: str | None = None


def card_outcome(card_number: str) -> CardOutcome:
    """What the sandbox does with a card (the number is already 16 digits)."""
    if card_number == SUCCEEDS:
        return CardOutcome(True)
    return CardOutcome(False, DECLINES.get(card_number, "card_declined"))


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


class SandboxProvider:
    name = NAME

    def __init__(self, webhook_secret: str) -> None:
        self._webhook = Webhook(webhook_secret)

    async def create_payment(
        self, *, payment_id: str, amount: int, currency: str, reference: str
    ) -> CreatedPayment:
        return CreatedPayment(
            provider_reference=new_id("sbx_pi"),
            client_secret=f"{payment_id}_secret_{secrets.token_urlsafe(12)}",
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
    ) -> str:
        # The sandbox "bank" refunds at once; the outbox handler then emits refund.succeeded.
        return f"sbx_re_{refund_id}"


def _read_event(payload: Any) -> ProviderEvent:
    """A correctly signed body that is not an event is refused with 422: nothing can be done
    with it, and the provider should hear about it."""
    try:
        data = payload["data"]
        event_type = str(payload["type"])
        event_id = str(payload["id"])
        reference = str(data["provider_reference"])
        amount = data.get("amount")
        return ProviderEvent(
            event_id=event_id,
            type=event_type,
            provider_reference=reference,
            amount=int(amount) if amount is not None else None,
            currency=data.get("currency"),
            failure_code=data.get("failure_code"),
            refund_reference=data.get("refund_reference"),
            raw=payload,
        )
    except (KeyError, TypeError, ValueError):
        raise InvalidEvent("the signed body is not a sandbox event") from None


def body_of(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), sort_keys=True)
