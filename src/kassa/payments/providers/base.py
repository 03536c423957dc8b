"""The provider interface: create a payment, read a verified webhook, refund, look a payment up.

Providers are called outside every database transaction (the payment edge holds no lock across
the network). What they raise: `ProviderUnavailable` when the provider did not answer or
answered with a server error (try again later), `ProviderRefused` when it answered no (a refund
it will not make: do not try again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from kassa.errors import KassaError


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A request header by its lower-case name, whatever case it came in."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def text_or_none(value: Any) -> str | None:
    """A provider's field as Kassa stores it (a string of at most 255 characters)."""
    return None if value is None else str(value)[:255]


def amount_or_none(value: Any) -> int | None:
    """A provider's amount in minor units, or None where it gave none (or nonsense)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class EventType(StrEnum):
    """Every provider's webhooks are read into these."""

    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    # The money is reserved on the buyer's card but not taken yet (Razorpay without
    # auto-capture): Kassa asks the provider to capture it.
    PAYMENT_AUTHORIZED = "payment.authorized"
    REFUND_SUCCEEDED = "refund.succeeded"
    REFUND_FAILED = "refund.failed"
    DISPUTE_OPENED = "dispute.opened"
    OTHER = "other"  # verified, but nothing Kassa acts on


class InvalidSignature(KassaError):
    status, code, title = 400, "invalid_signature", "Webhook signature is not valid"


class InvalidEvent(KassaError):
    status, code, title = 422, "validation_error", "Webhook body is not an event"


class ProviderUnavailable(Exception):
    """The provider did not answer, timed out, or failed on its side. The text is logged: it
    must never carry a secret."""


class ProviderRefused(Exception):
    """The provider answered no (for example, a refund it will not make)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass(frozen=True)
class CreatedPayment:
    provider_reference: str
    client_secret: str | None = None
    # What the buyer's browser needs besides the secret (publishable key, key id, order id …).
    client_data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderPayment:
    """What the provider says a payment came to (reconcile, client confirmation)."""

    provider_reference: str
    status: str  # "pending", "succeeded" or "failed"
    amount: int | None = None
    currency: str | None = None
    failure_code: str | None = None


@dataclass(frozen=True)
class RefundResult:
    provider_reference: str
    # "pending": the provider confirms later by webhook; "succeeded": done already.
    status: str = "pending"


@dataclass(frozen=True)
class ProviderEvent:
    """A verified webhook event in Kassa's words. `payment_id` and `refund_id` are Kassa's own
    ids, where the provider echoes them back (metadata): they find the subject even before its
    provider reference is stored."""

    event_id: str
    type: EventType
    provider_reference: str | None = None
    payment_id: str | None = None
    amount: int | None = None
    currency: str | None = None
    failure_code: str | None = None
    refund_reference: str | None = None
    refund_id: str | None = None
    # The provider's id of this one attempt to pay (Razorpay's payment id, for capture).
    attempt_reference: str | None = None
    # The provider says the subject is not Kassa's (a Stripe object without Kassa's metadata:
    # made by another system on the same account, or by hand in the dashboard).
    foreign: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """For the outbox (an event kept until its subject exists); `raw` stays behind."""
        return {
            "event_id": self.event_id,
            "type": str(self.type),
            "provider_reference": self.provider_reference,
            "payment_id": self.payment_id,
            "amount": self.amount,
            "currency": self.currency,
            "failure_code": self.failure_code,
            "refund_reference": self.refund_reference,
            "refund_id": self.refund_id,
            "attempt_reference": self.attempt_reference,
            "foreign": self.foreign,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProviderEvent:
        return cls(**{**data, "type": EventType(data["type"])})


class PaymentProvider(Protocol):
    name: str

    async def create_payment(
        self, *, payment_id: str, checkout_id: str, amount: int, currency: str
    ) -> CreatedPayment:
        """Create the provider's payment. `payment_id` is the idempotency key: asking again
        with the same id returns the same payment."""
        ...

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        """Verify the signature and read the event; raises InvalidSignature or InvalidEvent."""
        ...

    async def refund(
        self, *, provider_reference: str, amount: int, currency: str, refund_id: str
    ) -> RefundResult:
        """Ask the provider to refund `amount`. `refund_id` is the idempotency key."""
        ...

    async def fetch_payment(self, provider_reference: str) -> ProviderPayment:
        """What the provider says became of a payment."""
        ...


@runtime_checkable
class CapturesPayments(Protocol):
    """A provider whose payments may need capturing after authorization."""

    async def capture(self, attempt_reference: str, amount: int, currency: str) -> None: ...


@runtime_checkable
class ConfirmsOnClient(Protocol):
    """A provider whose browser checkout hands the buyer a signed confirmation (Razorpay's
    Checkout.js), which Kassa verifies and then checks with the provider."""

    async def confirm(
        self, *, provider_reference: str, attempt_reference: str, signature: str
    ) -> ProviderPayment:
        """Verify the signature (InvalidSignature), then ask the provider what became of the
        attempt: status "succeeded", "failed", "authorized" or "pending"."""
        ...
