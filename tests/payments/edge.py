"""A provider that can be slowed down, broken or made to refuse refunds, for the payment-edge
tests: it wraps the app's own sandbox, so everything else is the real thing."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx
from fastapi import FastAPI

from kassa.payments.providers.base import (
    CreatedPayment,
    PaymentProvider,
    ProviderEvent,
    ProviderPayment,
    ProviderRefused,
    ProviderUnavailable,
    RefundResult,
)


def app_of(client: httpx.AsyncClient) -> FastAPI:
    transport = client._transport
    assert isinstance(transport, httpx.ASGITransport)
    app = transport.app
    assert isinstance(app, FastAPI)
    return app


class Unreliable:
    """The sandbox, unless told otherwise: `down` (create fails), `delay` seconds before
    answering "create", `gate` (create waits for it, once), `refuse_refunds`."""

    def __init__(self, inner: PaymentProvider) -> None:
        self.inner = inner
        self.name = inner.name
        self.down = False
        self.delay = 0.0
        self.gate: asyncio.Event | None = None
        self.refuse_refunds = False
        self.creates: list[str] = []
        self.refunds: list[str] = []

    async def create_payment(
        self, *, payment_id: str, checkout_id: str, amount: int, currency: str
    ) -> CreatedPayment:
        self.creates.append(payment_id)
        gate, self.gate = self.gate, None
        if gate is not None:
            await gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.down:
            raise ProviderUnavailable("connection refused")
        return await self.inner.create_payment(
            payment_id=payment_id, checkout_id=checkout_id, amount=amount, currency=currency
        )

    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent:
        return self.inner.verify_webhook(body, headers)

    async def refund(
        self, *, provider_reference: str, amount: int, currency: str, refund_id: str
    ) -> RefundResult:
        self.refunds.append(refund_id)
        if self.refuse_refunds:
            raise ProviderRefused("charge_disputed")
        return await self.inner.refund(
            provider_reference=provider_reference,
            amount=amount,
            currency=currency,
            refund_id=refund_id,
        )

    async def fetch_payment(self, provider_reference: str) -> ProviderPayment:
        return await self.inner.fetch_payment(provider_reference)


def unreliable_sandbox(client: httpx.AsyncClient) -> Unreliable:
    providers = app_of(client).state.providers
    wrapped = Unreliable(providers.get("sandbox"))
    providers.replace(wrapped)
    return wrapped


def as_dict(value: Any) -> dict[str, Any]:
    return dict(value)
