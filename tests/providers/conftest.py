"""Apps with Stripe (and later Razorpay) enabled, their SDKs pointed at local stand-ins."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from kassa.app import create_app
from kassa.config import Settings
from kassa.db import Database
from tests.providers import fake_razorpay, fake_stripe
from tests.providers.fake_razorpay import FakeRazorpay
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


@pytest.fixture(scope="session")
def razorpay_server() -> Iterator[tuple[FakeRazorpay, str]]:
    fake = FakeRazorpay()
    server = LocalServer(fake.app).start()
    yield fake, server.url
    server.stop()


@pytest.fixture
def fake_razorpay_api(razorpay_server: tuple[FakeRazorpay, str]) -> FakeRazorpay:
    fake, _ = razorpay_server
    fake.reset()
    return fake


@pytest.fixture
def shop_currency() -> str:
    return "usd"


@pytest.fixture
def stripe_settings(
    settings: Settings,
    stripe_server: tuple[FakeStripe, str],
    razorpay_server: tuple[FakeRazorpay, str],
    shop_currency: str,
) -> Settings:
    """Stripe and Razorpay both enabled, as API.md allows (a checkout names its provider)."""
    values = settings.model_dump()
    values.update(
        stripe_secret_key=fake_stripe.SECRET_KEY,
        stripe_publishable_key=fake_stripe.PUBLISHABLE_KEY,
        stripe_webhook_secret=",".join(fake_stripe.WEBHOOK_SECRETS),
        stripe_api_base=stripe_server[1],
        razorpay_key_id=fake_razorpay.KEY_ID,
        razorpay_key_secret=fake_razorpay.KEY_SECRET,
        razorpay_webhook_secret=",".join(fake_razorpay.WEBHOOK_SECRETS),
        razorpay_api_base=razorpay_server[1],
        provider_timeout_seconds=5,
        currency=shop_currency,
    )
    return Settings(_env_file=None, **values)


@pytest.fixture
async def client(stripe_settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The app, with Stripe enabled (overrides the plain `client` for these tests)."""
    app = create_app(stripe_settings, db=db, background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://kassa.test") as http:
        yield http
