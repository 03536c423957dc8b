"""Settings, read once from `KASSA_*` environment variables and a `.env` file."""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRET_KEY = "kassa-development-secret-change-me"
DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./kassa.db"
# A development-only Standard Webhooks secret ("whsec_" + base64): fine on a laptop, refused in
# production.
DEFAULT_SANDBOX_WEBHOOK_SECRET = "whsec_a2Fzc2EtZGV2ZWxvcG1lbnQtc2FuZGJveC1zZWNyZXQ="


class ConfigError(ValueError):
    """A setting that makes it unsafe or impossible to start."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="KASSA_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["development", "production"] = "development"
    database_url: str = DEFAULT_DATABASE_URL
    database_pool_size: int = Field(default=10, ge=1, le=200)
    redis_url: str | None = None
    secret_key: SecretStr = SecretStr(DEFAULT_SECRET_KEY)
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=86_400)
    # How long a process trusts what it last read of a user's role and account (a disabled,
    # deleted or re-roled user loses old rights within this, on every process).
    standing_fresh_seconds: float = Field(default=4.0, ge=0, le=5)

    hold_ttl_seconds: int = Field(default=900, ge=1)
    hold_max_ttl_seconds: int = Field(default=3600, ge=1)
    sweep_interval_seconds: float = Field(default=30.0, ge=0)
    sweep_batch_size: int = Field(default=500, ge=1, le=10_000)

    currency: str = Field(default="usd", pattern=r"^[a-z]{3}$")
    # Checkout: a cart price that moved by more than this (either way) since the buyer saw it is
    # 409 price_changed; within it, the new price is used and reported.
    price_drift_tolerance_percent: float = Field(default=0.0, ge=0, le=100)
    release_on_payment_failure: bool = False

    payment_provider: Literal["sandbox", "stripe", "razorpay"] = "sandbox"
    sandbox_webhook_secret: SecretStr = SecretStr(DEFAULT_SANDBOX_WEBHOOK_SECRET)
    # Where the sandbox delivers its webhooks. Unset: into the running app itself (through the
    # whole HTTP stack, signature check included) without a network hop.
    sandbox_webhook_url: str | None = None
    # Stripe: enabled when the secret key is set. Webhook secrets: several, comma-separated, so
    # that a secret can be rotated without losing events. API base: tests point the SDK at a
    # local server that answers like Stripe.
    stripe_secret_key: SecretStr | None = None
    stripe_publishable_key: str | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    # Razorpay: enabled when the key id and secret are set.
    razorpay_key_id: str | None = None
    razorpay_key_secret: SecretStr | None = None
    razorpay_webhook_secret: SecretStr | None = None
    razorpay_api_base: str | None = None
    # Any one call to a payment provider gives up after this long (the checkout then answers 502
    # provider_unavailable and gives the stock back).
    provider_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    allow_sandbox_in_production: bool = False
    # Payments still pending this long after they were created are looked up at the provider
    # (reconcile), in case a webhook was lost.
    reconcile_after_seconds: int = Field(default=600, ge=0)
    # Request bodies: larger is 413 before it is read in full; slower is cut off (408).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    webhook_max_body_bytes: int = Field(default=256 * 1024, ge=1024, le=64 * 1024 * 1024)
    body_timeout_seconds: float = Field(default=15.0, gt=0, le=600)
    outbox_interval_seconds: float = Field(default=1.0, ge=0)
    outbox_max_attempts: int = Field(default=12, ge=1, le=100)
    admin_email: str | None = None
    admin_password: SecretStr | None = None
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.hold_ttl_seconds > self.hold_max_ttl_seconds:
            raise ValueError("KASSA_HOLD_TTL_SECONDS must not exceed KASSA_HOLD_MAX_TTL_SECONDS")
        return self

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def sandbox_enabled(self) -> bool:
        return not self.is_production or self.allow_sandbox_in_production

    @property
    def stripe_enabled(self) -> bool:
        return bool(self.stripe_secret_key and self.stripe_secret_key.get_secret_value())

    @property
    def razorpay_enabled(self) -> bool:
        return bool(
            self.razorpay_key_id
            and self.razorpay_key_secret
            and self.razorpay_key_secret.get_secret_value()
        )

    def webhook_secrets(self, provider: str) -> list[str]:
        """The provider's webhook secrets (comma-separated: rotation), in order."""
        value = {"stripe": self.stripe_webhook_secret, "razorpay": self.razorpay_webhook_secret}[
            provider
        ]
        raw = value.get_secret_value() if value else ""
        return [part.strip() for part in raw.split(",") if part.strip()]

    def provider_problems(self) -> list[str]:
        """What keeps the configured payment providers from working (each named, no values)."""
        problems = []
        enabled = {
            "sandbox": self.sandbox_enabled,
            "stripe": self.stripe_enabled,
            "razorpay": self.razorpay_enabled,
        }
        if not enabled[self.payment_provider] and self.payment_provider != "sandbox":
            needs = {
                "stripe": "KASSA_STRIPE_SECRET_KEY",
                "razorpay": "KASSA_RAZORPAY_KEY_ID and KASSA_RAZORPAY_KEY_SECRET",
            }[self.payment_provider]
            problems.append(
                f"KASSA_PAYMENT_PROVIDER is {self.payment_provider} but {needs} is not set"
            )
        if self.stripe_enabled:
            if not self.webhook_secrets("stripe"):
                problems.append("Stripe is enabled but KASSA_STRIPE_WEBHOOK_SECRET is not set")
            if not self.stripe_publishable_key:
                problems.append("Stripe is enabled but KASSA_STRIPE_PUBLISHABLE_KEY is not set")
        if self.razorpay_enabled and not self.webhook_secrets("razorpay"):
            problems.append("Razorpay is enabled but KASSA_RAZORPAY_WEBHOOK_SECRET is not set")
        return problems

    def check_safe_to_start(self) -> None:
        """Refuse a production start with a setting that would be unsafe there."""
        problems = []
        if self.is_production:
            secret = self.secret_key.get_secret_value()
            if secret == DEFAULT_SECRET_KEY or len(secret) < 32:
                problems.append(
                    "KASSA_SECRET_KEY is the default (or shorter than 32 characters); "
                    "set a long random value, e.g. `python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))'`"
                )
            if self.payment_provider == "sandbox" and not self.allow_sandbox_in_production:
                problems.append(
                    "KASSA_PAYMENT_PROVIDER is sandbox, which takes no real money; choose stripe "
                    "or razorpay, or set KASSA_ALLOW_SANDBOX_IN_PRODUCTION=true for a demo shop"
                )
            if (
                self.sandbox_enabled
                and self.sandbox_webhook_secret.get_secret_value() == DEFAULT_SANDBOX_WEBHOOK_SECRET
            ):
                problems.append(
                    "KASSA_SANDBOX_WEBHOOK_SECRET is the development default; set a whsec_ secret "
                    "of your own (whsec_ followed by base64 of 24 or more random bytes)"
                )
        problems.extend(self.provider_problems())
        if not _is_whsec(self.sandbox_webhook_secret.get_secret_value()):
            problems.append("KASSA_SANDBOX_WEBHOOK_SECRET must be whsec_ followed by base64")
        if self.admin_password is not None and len(self.admin_password.get_secret_value()) < 10:
            problems.append("KASSA_ADMIN_PASSWORD needs at least 10 characters")
        if problems:
            where = "in production" if self.is_production else "with these settings"
            raise ConfigError(f"Kassa refuses to start {where}: " + "; ".join(problems))


def _is_whsec(secret: str) -> bool:
    if not secret.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(secret[len("whsec_") :] + "==", validate=False)) >= 16
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
