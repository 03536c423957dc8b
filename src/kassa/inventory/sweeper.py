"""The expiry sweeper: ends checkouts and holds whose time is up and gives their stock back, in
batches. Checkouts first (state and coupon use); their holds expire with them in the hold pass.

On PostgreSQL each batch claims its holds with `FOR UPDATE SKIP LOCKED`, so any number of
sweepers (in `kassa serve` processes and `kassa worker`s) can run at once without waiting for each
other; the conditional UPDATE in `end_holds` makes sure no hold is ever released twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from datetime import datetime

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock, idempotency
from kassa.checkout.service import expire_due_checkouts
from kassa.config import Settings
from kassa.db import Database
from kassa.inventory.holds import end_holds, holds
from kassa.inventory.states import HoldState
from kassa.ops import jobs
from kassa.payments import webhooks

log = structlog.get_logger("kassa.sweeper")

JOB_NAME = "sweeper"


@dataclass
class SweepResult:
    expired_holds: int = 0
    expired_checkouts: int = 0
    released_units: int = 0
    forgotten_idempotency_keys: int = 0
    forgotten_webhooks: int = 0
    duration_ms: int = 0


async def expire_due_holds(session: AsyncSession, *, now: datetime, limit: int) -> tuple[int, int]:
    """One batch: expire up to `limit` due holds. Returns (holds expired, units released)."""
    conn = await session.connection()
    query = (
        select(holds.c.id)
        .where(holds.c.state == HoldState.ACTIVE, holds.c.expires_at <= now)
        .order_by(holds.c.expires_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    due = [row[0] for row in await conn.execute(query)]
    if not due:
        return 0, 0
    ended = await end_holds(conn, due, HoldState.EXPIRED, now)
    return len(ended.hold_ids), ended.units


async def run_sweep(db: Database, settings: Settings) -> SweepResult:
    """Sweep until nothing is due, one transaction per batch, and remember the run."""
    started = clock.now()
    t0 = time.perf_counter()
    result = SweepResult()
    limit = settings.sweep_batch_size
    while True:
        now = clock.now()

        async def checkouts(session: AsyncSession, now: datetime = now) -> int:
            return await expire_due_checkouts(session, now=now, limit=limit)

        expired_checkouts = await db.run(checkouts)
        result.expired_checkouts += expired_checkouts
        if expired_checkouts == limit:
            continue
        break
    while True:
        now = clock.now()

        async def batch(session: AsyncSession, now: datetime = now) -> tuple[int, int]:
            return await expire_due_holds(session, now=now, limit=limit)

        expired, units = await db.run(batch)
        result.expired_holds += expired
        result.released_units += units
        if expired < limit:
            break
    result.forgotten_idempotency_keys = await db.run(idempotency.purge_expired)
    result.forgotten_webhooks = await db.run(webhooks.forget_old)
    result.duration_ms = int((time.perf_counter() - t0) * 1000)
    await db.run(
        lambda s: jobs.record_run(
            s, JOB_NAME, started=started, finished=clock.now(), status="ok", result=asdict(result)
        )
    )
    if result.expired_holds:
        log.info("sweep", **asdict(result))
    return result


async def sweeper_loop(db: Database, settings: Settings, stop: asyncio.Event) -> None:
    """Sweep every KASSA_SWEEP_INTERVAL_SECONDS until `stop` is set; a failure is logged."""
    while not stop.is_set():
        try:
            await run_sweep(db, settings)
        except Exception as error:
            await _record_failure(db, error)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.sweep_interval_seconds)


async def _record_failure(db: Database, error: Exception) -> None:
    # The error type only: a database error can carry connection details.
    log.error("sweep_failed", error_type=type(error).__name__)
    result = {"error": type(error).__name__}
    with contextlib.suppress(Exception):
        await db.run(
            lambda s: jobs.record_run(
                s,
                JOB_NAME,
                started=clock.now(),
                finished=clock.now(),
                status="error",
                result=result,
            )
        )
