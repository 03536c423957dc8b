"""Capturing authorized payments: the outbox handler for `payments.capture` (the provider is
called outside any transaction; capturing twice is done, not an error)."""

from __future__ import annotations

import structlog

from kassa.outbox.service import Claimed, DeliveryFailed, Handler
from kassa.payments.providers.base import CapturesPayments, ProviderRefused, ProviderUnavailable
from kassa.payments.providers.registry import Providers

CAPTURE_KIND = "payments.capture"
log = structlog.get_logger("kassa.payments")


def capture_sender(providers: Providers) -> Handler:
    async def capture(message: Claimed) -> None:
        payload = message.payload
        provider = providers.get(str(payload["provider"]))
        if not isinstance(provider, CapturesPayments):
            return
        try:
            # Bounded by the adapter's own per-call timeout (see refunds.py).
            await provider.capture(
                str(payload["attempt_reference"]),
                int(payload["amount"]),
                str(payload["currency"]),
            )
        except ProviderRefused as refused:
            # The authorization lapses by itself; reconcile then sees the payment failed.
            log.warning("capture_refused", attempt=payload["attempt_reference"], code=refused.code)
        except ProviderUnavailable as error:
            raise DeliveryFailed(f"capture not sent: {type(error).__name__}") from None

    return capture
