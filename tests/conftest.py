"""Test storage on both databases: SQLite always, PostgreSQL when KASSA_TEST_POSTGRES_URL is set.

With CI=true a missing or unreachable PostgreSQL or Redis fails the run instead of skipping.
Each backend is migrated once per run (through Alembic, so the migration itself is tested); each
test then gets a fresh copy (SQLite) or freshly truncated tables (PostgreSQL).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from kassa import clock, migrate
from kassa.app import create_app
from kassa.auth import service as auth_service
from kassa.auth.tokens import issue_token
from kassa.config import Settings
from kassa.db import Database

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
POSTGRES_URL = os.environ.get("KASSA_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("KASSA_TEST_REDIS_URL")
SECRET = "test-secret-key-that-is-long-enough-0123456789"
TABLES = [
    "idempotency_keys",
    "outbox",
    "webhook_receipts",
    "webhook_events",
    "order_returns",
    "order_events",
    "order_lines",
    "orders",
    "refunds",
    "payments",
    "checkout_phases",
    "checkouts",
    "coupons",
    "shipping_rates",
    "tax_rates",
    "cart_items",
    "carts",
    "stock_movements",
    "hold_lines",
    "holds",
    "stock_levels",
    "variants",
    "products",
    "users",
    "job_runs",
]


def pytest_configure(config: pytest.Config) -> None:
    if IN_CI and not POSTGRES_URL:
        raise pytest.UsageError("CI=true needs KASSA_TEST_POSTGRES_URL (see .ci/run)")
    if IN_CI and not REDIS_URL:
        raise pytest.UsageError("CI=true needs KASSA_TEST_REDIS_URL (see .ci/run)")
    if IN_CI and REDIS_URL:
        import redis

        try:
            redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5).ping()
        except redis.RedisError as error:
            raise pytest.UsageError(f"CI=true and Redis cannot be reached: {error}") from None


def _unreachable(what: str, error: BaseException) -> None:
    message = f"{what} cannot be reached: {type(error).__name__}: {error}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


async def _admin_execute(url: str, *statements: str) -> None:
    import asyncpg

    admin = make_url(url).set(drivername="postgresql")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False), timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@dataclass
class Backend:
    name: str
    url: str  # the migrated database (PostgreSQL) or template file (SQLite)


@pytest.fixture(scope="session")
def sqlite_backend(tmp_path_factory: pytest.TempPathFactory) -> Backend:
    template = tmp_path_factory.mktemp("sqlite") / "template.db"
    migrate.upgrade(f"sqlite+aiosqlite:///{template}")
    return Backend("sqlite", str(template))


@pytest.fixture(scope="session")
def postgres_backend() -> Iterator[Backend]:
    if not POSTGRES_URL:
        pytest.skip("KASSA_TEST_POSTGRES_URL is not set")
    name = f"kassa_test_{os.getpid()}"
    try:
        asyncio.run(
            _admin_execute(
                POSTGRES_URL,
                f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
                f"CREATE DATABASE {name}",
            )
        )
    except Exception as error:
        _unreachable("PostgreSQL", error)
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield Backend("postgres", url)
    asyncio.run(_admin_execute(POSTGRES_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        backend: Backend = request.getfixturevalue("sqlite_backend")
        target = tmp_path / "kassa.db"
        shutil.copy(backend.url, target)
        return f"sqlite+aiosqlite:///{target}"
    backend = request.getfixturevalue("postgres_backend")
    asyncio.run(
        _admin_execute(backend.url, f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    )
    return backend.url


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(
        _env_file=None,
        database_url=db_url,
        secret_key=SECRET,
        sweep_interval_seconds=0,
        admin_email=None,
        admin_password=None,
        redis_url=None,
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.database_url, pool_size=5)
    yield database
    await database.dispose()


@pytest.fixture(autouse=True)
def _reset_clock() -> Iterator[None]:
    clock.reset()
    yield
    clock.reset()


@pytest.fixture
async def client(settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, db=db, background=False)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://kassa.test") as http:
        yield http


@dataclass
class Account:
    id: str
    email: str
    role: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(db: Database, settings: Settings):
    counter = iter(range(1_000_000))

    async def make(role: str = "customer", email: str | None = None) -> Account:
        address = email or f"{role}{next(counter)}@example.com"
        user = await db.run(
            lambda s: auth_service.create_user(
                s, email=address, password="correct-horse-battery", role=role
            )
        )
        token, _ = issue_token(
            secret=SECRET, user_id=user.id, role=role, token_type="access", ttl_seconds=86_400
        )
        return Account(user.id, address, role, token)

    return make


@pytest.fixture
async def admin(make_user) -> Account:
    account: Account = await make_user("admin")
    return account


@pytest.fixture
def make_product(client: httpx.AsyncClient, admin: Account):
    counter = iter(range(1_000_000))

    async def make(
        *stock: tuple[str, int], price: int = 1000, owner: Account | None = None, threshold: int = 0
    ) -> dict:
        n = next(counter)
        body = {
            "name": f"Product {n}",
            "slug": f"product-{n}",
            "variants": [
                {
                    "sku": sku,
                    "name": sku,
                    "price_amount": price,
                    "on_hand": on_hand,
                    "low_stock_threshold": threshold,
                }
                for sku, on_hand in stock
            ],
        }
        response = await client.post("/v1/products", json=body, headers=(owner or admin).headers)
        assert response.status_code == 201, response.text
        return response.json()

    return make
