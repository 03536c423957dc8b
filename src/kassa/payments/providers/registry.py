"""Which provider object serves which name, from the settings."""

from __future__ import annotations

from kassa.config import Settings
from kassa.errors import InvalidInput
from kassa.payments.providers.base import PaymentProvider
from kassa.payments.providers.sandbox import SandboxProvider

AVAILABLE = ("sandbox",)


def get_provider(settings: Settings, name: str | None = None) -> PaymentProvider:
    """The provider called `name` (default KASSA_PAYMENT_PROVIDER)."""
    chosen = name or settings.payment_provider
    if chosen == "sandbox":
        return SandboxProvider(settings.sandbox_webhook_secret.get_secret_value())
    raise InvalidInput(
        "provider",
        f"payment provider {chosen!r} is not available here (available: {', '.join(AVAILABLE)})",
    )
