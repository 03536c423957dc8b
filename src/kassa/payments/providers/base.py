"""The provider interface: create a payment, verify and read a webhook, refund."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from kassa.errors import KassaError

# Normalized event types every provider's webhooks are read into.
PAYMENT_SUCCEEDED = "payment.succeeded"
PAYMENT_FAILED = "payment.failed"
REFUND_SUCCEEDED = "refund.succeeded"


class InvalidSignature(KassaError):
    status, code, title = 400, "invalid_signature", "Webhook signature is not valid"


class InvalidEvent(KassaError):
    status, code, title = 422, "validation_error", "Webhook body is not an event"


@dataclass(frozen=True)
class CreatedPayment:
    provider_reference: str
    client_secret: str | None = None


@dataclass(frozen=True)
class ProviderEvent:
    """A verified webhook event in Kassa's words."""

    event_id: str
    type: str
    provider_reference: str
    amount: int | None = None
    currency: str | None = None
    failure_code: str | None = None
    refund_reference: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


class PaymentProvider(Protocol):
    name: str

    async def create_payment(
        self, *, payment_id: str, amount: int, currency: str, reference: str
    ) -> CreatedPayment: ...

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """Verify the signature and read the event; raises InvalidSignature."""
        ...

    async def refund(
        self, *, provider_reference: str, amount: int, currency: str, refund_id: str
    ) -> str:
        """Ask the provider to refund `amount`; returns the provider's refund reference.
        `refund_id` is the idempotency key: asking twice refunds once."""
        ...
