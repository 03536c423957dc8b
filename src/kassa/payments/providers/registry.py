"""The payment providers this app may use, built once from the settings in `create_app`."""

from __future__ import annotations

from collections.abc import Mapping

from kassa.config import Settings
from kassa.db import Database
from kassa.errors import InvalidInput
from kassa.payments.providers.base import PaymentProvider
from kassa.payments.providers.razorpay import RazorpayProvider
from kassa.payments.providers.sandbox import SandboxProvider
from kassa.payments.providers.stripe import StripeProvider


class Providers:
    def __init__(self, providers: Mapping[str, PaymentProvider], default: str) -> None:
        self._providers = dict(providers)
        self.default = default

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> Providers:
        enabled: dict[str, PaymentProvider] = {}
        if settings.sandbox_enabled:
            enabled["sandbox"] = SandboxProvider(
                settings.sandbox_webhook_secret.get_secret_value(), db
            )
        if settings.stripe_enabled and settings.stripe_secret_key is not None:
            enabled["stripe"] = StripeProvider(
                secret_key=settings.stripe_secret_key.get_secret_value(),
                publishable_key=settings.stripe_publishable_key,
                webhook_secrets=settings.webhook_secrets("stripe"),
                api_base=settings.stripe_api_base,
                timeout_seconds=settings.provider_timeout_seconds,
            )
        if settings.razorpay_enabled and settings.razorpay_key_secret is not None:
            assert settings.razorpay_key_id is not None
            enabled["razorpay"] = RazorpayProvider(
                key_id=settings.razorpay_key_id,
                key_secret=settings.razorpay_key_secret.get_secret_value(),
                webhook_secrets=settings.webhook_secrets("razorpay"),
                api_base=settings.razorpay_api_base,
                timeout_seconds=settings.provider_timeout_seconds,
            )
        return cls(enabled, settings.payment_provider)

    @property
    def names(self) -> list[str]:
        return sorted(self._providers)

    def get(self, name: str | None = None) -> PaymentProvider:
        """The provider called `name` (default: KASSA_PAYMENT_PROVIDER); 422 if not enabled."""
        chosen = name or self.default
        provider = self._providers.get(chosen)
        if provider is None:
            enabled = ", ".join(self.names) or "none"
            raise InvalidInput(
                "provider", f"payment provider {chosen!r} is not enabled here (enabled: {enabled})"
            )
        return provider

    def replace(self, provider: PaymentProvider) -> None:
        """Swap one provider (tests and benchmarks wrap a provider to slow it down or break it)."""
        self._providers[provider.name] = provider
