"""The sweeper: the periodic clean-up every process runs. Ends checkouts and holds whose time is
up (their stock comes back), finishes checkout starts a crash interrupted, reconciles payments
whose webhook never came, and forgets old idempotency keys and webhook records.

Each part runs in batches of its own transactions and claims its rows with `SKIP LOCKED` (or a
conditional UPDATE), so any number of sweepers, in `kassa serve` processes and `kassa worker`s,
can run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import asdict, dataclass
from datetime import datetime

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock, idempotency
from kassa.checkout import recovery
from kassa.checkout.events import EventContext
from kassa.checkout.service import expire_due_checkouts
from kassa.config import Settings
from kassa.db import Database
from kassa.inventory.sweeper import expire_due_holds
from kassa.ops import jobs
from kassa.payments import webhooks
from kassa.payments.providers.registry import Providers

log = structlog.get_logger("kassa.sweeper")

JOB_NAME = "sweeper"


@dataclass
class SweepResult:
    expired_holds: int = 0
    expired_checkouts: int = 0
    released_units: int = 0
    finished_starts: int = 0
    reconciled: int = 0
    forgotten_idempotency_keys: int = 0
    forgotten_webhooks: int = 0
    duration_ms: int = 0


@dataclass(frozen=True)
class Payments:
    """What the payment parts of a sweep need (absent: those parts are skipped)."""

    providers: Providers
    events: EventContext


async def run_sweep(
    db: Database, settings: Settings, payments: Payments | None = None
) -> SweepResult:
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
        if expired_checkouts < limit:
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
    if payments is not None:
        # After the expiries (they need no provider): an interrupted start either gets its
        # payment or gives its stock back; then payments whose webhook never came are looked up.
        result.finished_starts = await recovery.finish_interrupted_starts(
            db, settings, payments.providers
        )
        reconciled = await recovery.reconcile(db, payments.events, payments.providers, settings)
        result.reconciled = reconciled.succeeded + reconciled.failed
    result.forgotten_idempotency_keys = await db.run(idempotency.purge_expired)
    result.forgotten_webhooks = await db.run(webhooks.forget_old)
    result.duration_ms = int((time.perf_counter() - t0) * 1000)
    await db.run(
        lambda s: jobs.record_run(
            s, JOB_NAME, started=started, finished=clock.now(), status="ok", result=asdict(result)
        )
    )
    if result.expired_holds or result.finished_starts or result.reconciled:
        log.info("sweep", **asdict(result))
    return result


async def sweeper_loop(
    db: Database, settings: Settings, stop: asyncio.Event, payments: Payments | None = None
) -> None:
    """Sweep every KASSA_SWEEP_INTERVAL_SECONDS until `stop` is set; a failure is logged."""
    while not stop.is_set():
        try:
            await run_sweep(db, settings, payments)
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
