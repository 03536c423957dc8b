"""create_app(): wires settings, storage, routers, error handlers and background loops."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI

from kassa import __version__
from kassa.auth import service as auth_service
from kassa.auth.api import router as auth_router
from kassa.carts.api import router as carts_router
from kassa.catalog.api import router as catalog_router
from kassa.checkout.api import router as pricing_router
from kassa.config import Settings, get_settings
from kassa.db import Database
from kassa.errors import install_error_handlers
from kassa.inventory.api import router as inventory_router
from kassa.inventory.sweeper import sweeper_loop
from kassa.openapi import install_openapi
from kassa.ops.api import router as ops_router
from kassa.ops.logs import configure_logging

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
        app.state.db = database
        await ensure_admin_from_env(database, settings)
        stop = asyncio.Event()
        tasks = []
        if background and settings.sweep_interval_seconds > 0:
            tasks.append(asyncio.create_task(sweeper_loop(database, settings, stop)))
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
        app.state.db = db
    install_error_handlers(app)
    install_openapi(app)
    for router in (
        ops_router,
        auth_router,
        catalog_router,
        inventory_router,
        carts_router,
        pricing_router,
    ):
        app.include_router(router)
    return app


def create_app_from_env() -> FastAPI:
    """The factory uvicorn calls (`kassa serve`, also with --workers N)."""
    settings = get_settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_app(settings)
