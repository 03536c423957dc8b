"""The outbox: work that must happen after a commit, delivered with retries and backoff.

A message is written in the same transaction as the change that calls for it, so a rolled-back
change leaves nothing behind and a committed one is never forgotten (promise 7). Delivery claims
due messages (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so any number of loops can run), moves
their due time one lease ahead and commits, then does the work outside any transaction: a worker
killed mid-delivery leaves a message that is simply tried again when the lease ends. Handlers
must therefore be idempotent (webhook ids and refund ids make them so).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.config import Settings
from kassa.db import Database
from kassa.ids import new_id
from kassa.payments.models import OutboxMessage

log = structlog.get_logger("kassa.outbox")

LEASE = timedelta(seconds=60)
MAX_BACKOFF_SECONDS = 600
BATCH = 20
RETRY_FOREVER = frozenset({"provider_refund", "sandbox_webhook"})


class DeliveryFailed(Exception):
    """The work could not be done this time; it is tried again later."""


async def enqueue(
    session: AsyncSession, kind: str, payload: dict[str, Any], *, delay_seconds: float = 0
) -> str:
    message_id = new_id("obx")
    now = clock.now()
    session.add(
        OutboxMessage(
            id=message_id,
            kind=kind,
            payload=payload,
            state="pending",
            attempts=0,
            next_attempt_at=now + timedelta(seconds=delay_seconds),
            created_at=now,
        )
    )
    await session.flush()
    return message_id


@dataclass(frozen=True)
class Claimed:
    id: str
    kind: str
    payload: dict[str, Any]
    attempts: int


@dataclass
class OutboxContext:
    """What handlers work with. `http` reaches webhook endpoints (the app itself, in-process,
    when no URL is configured)."""

    db: Database
    settings: Settings
    http: httpx.AsyncClient
    handlers: dict[str, Handler] = field(default_factory=dict)


Handler = Callable[[OutboxContext, Claimed], Awaitable[None]]


def backoff_seconds(attempts: int) -> float:
    """1, 2, 4 … seconds (capped), with jitter so that retries of many messages spread out."""
    base = min(2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)
    return float(base * random.uniform(0.75, 1.0))


async def claim(session: AsyncSession, *, now: datetime, limit: int = BATCH) -> list[Claimed]:
    query = (
        select(OutboxMessage.id, OutboxMessage.kind, OutboxMessage.payload, OutboxMessage.attempts)
        .where(OutboxMessage.state == "pending", OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.next_attempt_at)
        .limit(limit)
    )
    conn = await session.connection()
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = (await session.execute(query)).all()
    if not rows:
        return []
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_([row.id for row in rows]))
        .values(next_attempt_at=now + LEASE, attempts=OutboxMessage.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    return [Claimed(row.id, row.kind, row.payload, row.attempts + 1) for row in rows]


async def drain(ctx: OutboxContext, *, limit: int = BATCH) -> int:
    """Deliver what is due now (one batch). Returns how many messages were attempted."""
    now = clock.now()
    batch = await ctx.db.run(lambda s: claim(s, now=now, limit=limit))
    if batch:
        await asyncio.gather(*(_deliver(ctx, message) for message in batch))
    return len(batch)


async def drain_all(ctx: OutboxContext, *, rounds: int = 50) -> int:
    """Deliver until nothing is due (tests, `POST /v1/admin/jobs/outbox`)."""
    total = 0
    for _ in range(rounds):
        attempted = await drain(ctx)
        total += attempted
        if attempted == 0:
            break
    return total


async def _deliver(ctx: OutboxContext, message: Claimed) -> None:
    handler = ctx.handlers.get(message.kind)
    try:
        if handler is None:
            raise DeliveryFailed(f"no handler for {message.kind}")
        await handler(ctx, message)
    except Exception as error:
        await _failed(ctx, message, error)
        return
    await ctx.db.run(lambda s: _done(s, message.id))


async def _done(session: AsyncSession, message_id: str) -> None:
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(state="done", done_at=clock.now(), last_error=None)
        .execution_options(synchronize_session=False)
    )


async def _failed(ctx: OutboxContext, message: Claimed, error: Exception) -> None:
    # The error's type and text only when it is ours; a library error can carry secrets.
    text = str(error) if isinstance(error, DeliveryFailed) else type(error).__name__
    # Money never gives up: a refund or a payment verdict keeps being retried (at most every
    # MAX_BACKOFF_SECONDS); other work is set aside as dead after KASSA_OUTBOX_MAX_ATTEMPTS.
    exhausted = message.attempts >= ctx.settings.outbox_max_attempts
    dead = exhausted and message.kind not in RETRY_FOREVER
    (log.error if exhausted else log.warning)(
        "outbox_delivery_failed",
        message_id=message.id,
        kind=message.kind,
        attempts=message.attempts,
        dead=dead,
        error=text,
    )
    retry_at = clock.now() + timedelta(seconds=backoff_seconds(message.attempts))

    async def record(session: AsyncSession) -> None:
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message.id, OutboxMessage.state == "pending")
            .values(
                state="dead" if dead else "pending",
                next_attempt_at=retry_at,
                last_error=text[:500],
            )
            .execution_options(synchronize_session=False)
        )

    await ctx.db.run(record)


async def outbox_loop(ctx: OutboxContext, stop: asyncio.Event) -> None:
    """Drain the outbox until `stop` is set; waits KASSA_OUTBOX_INTERVAL_SECONDS when idle."""
    while not stop.is_set():
        attempted = 0
        try:
            attempted = await drain(ctx)
        except Exception as error:
            log.error("outbox_failed", error_type=type(error).__name__)
        if attempted == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=ctx.settings.outbox_interval_seconds)
