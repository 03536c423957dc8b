"""create_app(): wires settings, storage, routers, error handlers and background loops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import structlog
from fastapi import FastAPI

from kassa import __version__
from kassa.auth import service as auth_service
from kassa.auth.api import router as auth_router
from kassa.auth.standing import Standings
from kassa.carts.api import router as carts_router
from kassa.catalog.api import router as catalog_router
from kassa.checkout import completion, events
from kassa.checkout.api import router as pricing_router
from kassa.checkout.checkout_api import router as checkout_router
from kassa.checkout.payment_api import router as payments_router
from kassa.config import Settings, get_settings
from kassa.db import Database
from kassa.errors import install_error_handlers
from kassa.idempotency import IdempotencyMiddleware
from kassa.inventory.api import router as inventory_router
from kassa.limits import BodyLimitMiddleware
from kassa.openapi import install_openapi
from kassa.ops.alerts import send_alert
from kassa.ops.api import router as ops_router
from kassa.ops.logs import configure_logging
from kassa.ops.sweeper import Payments, sweeper_loop
from kassa.orders.api import router as orders_router
from kassa.outbox.service import FOREVER, Outbox, RetryPolicy
from kassa.payments import service as payment_records
from kassa.payments.captures import CAPTURE_KIND, capture_sender
from kassa.payments.providers import sandbox
from kassa.payments.providers.registry import Providers
from kassa.payments.refunds import refund_sender

log = structlog.get_logger("kassa.app")


async def ensure_admin_from_env(db: Database, settings: Settings) -> None:
    if not (settings.admin_email and settings.admin_password):
        return
    password = settings.admin_password.get_secret_value()
    email = settings.admin_email
    try:
        created = await db.run(
            lambda s: auth_service.ensure_admin(s, email=email, password=password)
        )
    except auth_service.AdminEmailTaken as error:
        log.warning("admin_not_created", reason=error.detail)
        return
    except auth_service.EmailTaken:
        # Another process (`kassa serve --workers N`) created the same admin at the same moment.
        return
    if created is not None:
        log.info("admin_created", email=settings.admin_email)


def _in_process_client(app: FastAPI) -> httpx.AsyncClient:
    """Webhooks to this very app, through its whole HTTP stack, without a network hop."""
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://kassa.internal"
    )


@contextlib.asynccontextmanager
async def webhook_client(app: FastAPI, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The client the outbox delivers sandbox webhooks with (KASSA_SANDBOX_WEBHOOK_URL, or the
    app itself)."""
    if settings.sandbox_webhook_url:
        async with httpx.AsyncClient() as http:
            yield http
    else:
        async with _in_process_client(app) as http:
            yield http


def wire(app: FastAPI, db: Database, settings: Settings, http: httpx.AsyncClient) -> None:
    """Build the app's services once: storage, payment providers, what provider events do, and
    the outbox with every domain's handlers registered."""
    app.state.db = db
    app.state.standings = Standings(db, fresh_seconds=settings.standing_fresh_seconds)
    providers = Providers.from_settings(settings, db)
    app.state.providers = providers
    ctx = events.EventContext(settings=settings, hooks=events.REFUND_HOOKS)
    app.state.events = ctx
    box = Outbox(db, default_policy=RetryPolicy(max_attempts=settings.outbox_max_attempts))
    if settings.sandbox_enabled:
        provider = providers.get(sandbox.NAME)
        assert isinstance(provider, sandbox.SandboxProvider)
        # A payment verdict is money: never given up on.
        box.register(
            sandbox.WEBHOOK_KIND,
            provider.webhook_sender(http, settings.sandbox_webhook_url),
            FOREVER,
        )
    box.register(
        payment_records.REFUND_KIND,
        refund_sender(db, providers, ctx.hooks),
        FOREVER,
    )
    box.register(
        CAPTURE_KIND,
        capture_sender(providers),
    )
    box.register(events.DEFERRED_KIND, events.deferred_applier(db, ctx), events.DEFERRED_POLICY)
    box.register(completion.ALERT_KIND, send_alert)
    app.state.outbox = box
    app.state.sweep_payments = Payments(providers, ctx)


def create_app(
    settings: Settings | None = None,
    *,
    db: Database | None = None,
    background: bool = True,
) -> FastAPI:
    """Build an app. `db` lets tests share one engine; `background=False` runs no loops."""
    settings = settings or get_settings()
    settings.check_safe_to_start()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owns_db = db is None
        database = db or Database(settings.database_url, pool_size=settings.database_pool_size)
        await ensure_admin_from_env(database, settings)
        async with webhook_client(app, settings) as http:
            wire(app, database, settings, http)
            stop = asyncio.Event()
            tasks = []
            if background and settings.sweep_interval_seconds > 0:
                tasks.append(
                    asyncio.create_task(
                        sweeper_loop(database, settings, stop, app.state.sweep_payments)
                    )
                )
            if background and settings.outbox_interval_seconds > 0:
                tasks.append(
                    asyncio.create_task(
                        app.state.outbox.run(
                            stop, interval_seconds=settings.outbox_interval_seconds
                        )
                    )
                )
            try:
                yield
            finally:
                stop.set()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                if owns_db:
                    await database.dispose()

    app = FastAPI(
        title="Kassa",
        version=__version__,
        description="A self-hostable checkout service that never oversells.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    if db is not None:
        # Without a lifespan (tests on ASGITransport) everything is still there.
        http = httpx.AsyncClient() if settings.sandbox_webhook_url else _in_process_client(app)
        wire(app, db, settings, http)
    install_error_handlers(app)
    app.add_middleware(IdempotencyMiddleware)
    # Outside the idempotency middleware (added last: outermost), so no body is buffered twice
    # and nothing over the limit is ever read in full.
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        webhook_max_body_bytes=settings.webhook_max_body_bytes,
        timeout_seconds=settings.body_timeout_seconds,
    )
    install_openapi(app)
    for router in (
        ops_router,
        auth_router,
        catalog_router,
        inventory_router,
        carts_router,
        pricing_router,
        checkout_router,
        payments_router,
        orders_router,
    ):
        app.include_router(router)
    return app


def create_app_from_env() -> FastAPI:
    """The factory uvicorn calls (`kassa serve`, also with --workers N)."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)
