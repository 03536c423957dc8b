"""Request and response bodies of the payment, sandbox and webhook endpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, StringConstraints

from kassa.fields import Input


class PaymentOut(BaseModel):
    id: str
    status: Literal[
        "creating",
        "pending",
        "processing",
        "succeeded",
        "failed",
        "requires_review",
        "refunded",
        "partially_refunded",
    ]
    amount: int
    refunded_amount: int
    currency: str
    provider: str
    provider_reference: str | None
    checkout_id: str
    failure_code: str | None = None
    review_reason: str | None = None


class CardIn(Input):
    card_number: Annotated[str, StringConstraints(pattern=r"^[0-9]{16}$", strip_whitespace=False)]


class SandboxPayOut(BaseModel):
    payment_id: str
    status: Literal["processing"]
    detail: str


class WebhookAck(BaseModel):
    received: bool
    outcome: Literal["processed", "duplicate", "ignored", "deferred"]
