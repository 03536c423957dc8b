"""Health, readiness, stats and the admin job endpoints."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from kassa.auth.deps import AdminPrincipal
from kassa.checkout import recovery
from kassa.db import Database
from kassa.deps import AppSettings, ReadSession
from kassa.errors import problem
from kassa.ops import stats as ops_stats
from kassa.ops import sweeper

router = APIRouter(tags=["operations"])

CHECK_TIMEOUT_SECONDS = 2.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _check_database(db: Database) -> None:
    # A read transaction: on SQLite it does not queue behind a long write.
    async with db.read() as session:
        await session.execute(text("SELECT 1"))


async def _check_redis(url: str) -> None:
    import redis.asyncio as redis

    client = redis.from_url(url, socket_connect_timeout=CHECK_TIMEOUT_SECONDS)
    try:
        await client.ping()
    finally:
        await client.aclose()


@router.get("/readyz", response_model=None)
async def readyz(request: Request, settings: AppSettings) -> dict[str, Any] | JSONResponse:
    checks: dict[str, str] = {}
    failed: list[str] = []
    probes: dict[str, Any] = {"database": _check_database(request.app.state.db)}
    if settings.redis_url:
        probes["redis"] = _check_redis(settings.redis_url)
    for name, probe in probes.items():
        try:
            await asyncio.wait_for(probe, timeout=CHECK_TIMEOUT_SECONDS)
            checks[name] = "ok"
        except Exception as error:
            # The error type only: a connection error can carry the URL with its password.
            checks[name] = f"failed: {type(error).__name__}"
            failed.append(name)
    if failed:
        return problem(
            503,
            "not_ready",
            "Not ready",
            f"failed checks: {', '.join(failed)}",
            checks=checks,
            failed=failed,
        )
    return {"status": "ok", "checks": checks}


@router.post("/v1/admin/jobs/sweep")
async def run_sweep_now(
    request: Request, _admin: AdminPrincipal, settings: AppSettings
) -> dict[str, int]:
    result = await sweeper.run_sweep(
        request.app.state.db, settings, request.app.state.sweep_payments
    )
    return asdict(result)


@router.post("/v1/admin/jobs/reconcile")
async def run_reconcile_now(
    request: Request, _admin: AdminPrincipal, settings: AppSettings
) -> dict[str, int]:
    """Ask the providers about every payment still pending after KASSA_RECONCILE_AFTER_SECONDS
    and apply what they say exactly as a webhook would."""
    result = await recovery.reconcile(
        request.app.state.db,
        request.app.state.events,
        request.app.state.providers,
        settings,
    )
    return asdict(result)


@router.post("/v1/admin/jobs/outbox")
async def run_outbox_now(request: Request, _admin: AdminPrincipal) -> dict[str, int]:
    """Deliver every outbox message that is due now (webhooks, provider refunds)."""
    attempted = await request.app.state.outbox.drain_all()
    return {"attempted": attempted}


@router.get("/v1/admin/stats")
async def stats(
    _admin: AdminPrincipal,
    session: ReadSession,
    hours: Annotated[int, Query(ge=1, le=24 * 90, description="The window, in hours")] = 24,
) -> dict[str, Any]:
    """Checkouts started / completed / expired / cancelled / failed, success rate, failures by
    phase and code, price-drift rejections, webhooks received / duplicated / rejected, and the
    time each phase takes, over the last `hours`."""
    return asdict(await ops_stats.collect(session, hours=hours))
