"""Apps with Stripe (and later Razorpay) enabled, their SDKs pointed at local stand-ins."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from kassa.app import create_app
from kassa.config import Settings
from kassa.db import Database
from tests.providers import fake_stripe
from tests.providers.fake_stripe import FakeStripe
from tests.providers.local_server import LocalServer


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[tuple[FakeStripe, str]]:
    fake = FakeStripe()
    server = LocalServer(fake.app).start()
    yield fake, server.url
    server.stop()


@pytest.fixture
def fake_stripe_api(stripe_server: tuple[FakeStripe, str]) -> FakeStripe:
    fake, _ = stripe_server
    fake.reset()
    return fake


@pytest.fixture
def stripe_settings(settings: Settings, stripe_server: tuple[FakeStripe, str]) -> Settings:
    settings.stripe_secret_key = fake_stripe.SECRET_KEY  # type: ignore[assignment]
    settings.stripe_publishable_key = fake_stripe.PUBLISHABLE_KEY
    settings.stripe_webhook_secret = ",".join(fake_stripe.WEBHOOK_SECRETS)  # type: ignore[assignment]
    settings.stripe_api_base = stripe_server[1]
    settings.provider_timeout_seconds = 5
    return Settings.model_validate(settings.model_dump())


@pytest.fixture
async def client(stripe_settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The app, with Stripe enabled (overrides the plain `client` for these tests)."""
    app = create_app(stripe_settings, db=db, background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://kassa.test") as http:
        yield http
