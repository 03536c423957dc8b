"""Enqueue work in the caller's transaction; claim, run and retry it afterwards.

A message is written in the same transaction as the change that calls for it, so a rolled-back
change leaves nothing behind and a committed one is never forgotten (promise 7). Delivery claims
due messages (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so any number of loops can run), moves
their due time one lease ahead and commits, then runs the handler outside any transaction: a
worker killed mid-delivery leaves a message that is simply tried again when the lease ends.
Handlers must therefore be idempotent.

The outbox knows no kind of work. Each domain registers, per kind, a handler and a retry policy
(`Outbox.register`) when the app is built; a message of a kind nobody registered is retried like
any failure, so a deployment that forgot a handler shows up in the backlog, not as lost work.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.db import Database
from kassa.ids import new_id
from kassa.outbox.models import OutboxMessage

log = structlog.get_logger("kassa.outbox")

LEASE = timedelta(seconds=60)
MAX_BACKOFF_SECONDS = 600
BATCH = 20


class DeliveryFailed(Exception):
    """The work could not be done this time; it is tried again later. Its text is logged and
    stored, so it must never carry a secret."""


@dataclass(frozen=True)
class Claimed:
    id: str
    kind: str
    payload: dict[str, Any]
    attempts: int


Handler = Callable[[Claimed], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` None: retried forever (at most every `max_backoff_seconds`), for work that
    must never be given up, such as money. Otherwise the message is set aside as dead after
    that many failed attempts."""

    max_attempts: int | None = 12
    max_backoff_seconds: float = MAX_BACKOFF_SECONDS

    def backoff_seconds(self, attempts: int) -> float:
        """1, 2, 4 … seconds (capped), with jitter so that retries of many messages spread."""
        base = min(2 ** max(attempts - 1, 0), self.max_backoff_seconds)
        return float(base * random.uniform(0.75, 1.0))

    def gives_up(self, attempts: int) -> bool:
        return self.max_attempts is not None and attempts >= self.max_attempts


FOREVER = RetryPolicy(max_attempts=None)


@dataclass(frozen=True)
class Registration:
    handler: Handler
    policy: RetryPolicy


async def enqueue(
    session: AsyncSession, kind: str, payload: dict[str, Any], *, delay_seconds: float = 0
) -> str:
    """Write a message in the caller's transaction; it is delivered after the commit."""
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


class Outbox:
    """The registry of handlers and the delivery loop of one app (or worker)."""

    def __init__(self, db: Database, *, default_policy: RetryPolicy | None = None) -> None:
        self.db = db
        self.default_policy = default_policy or RetryPolicy()
        self.registrations: dict[str, Registration] = {}

    def register(self, kind: str, handler: Handler, policy: RetryPolicy | None = None) -> None:
        if kind in self.registrations:
            raise ValueError(f"outbox kind {kind!r} is registered twice")
        self.registrations[kind] = Registration(handler, policy or self.default_policy)

    async def drain(self, *, limit: int = BATCH) -> int:
        """Deliver what is due now (one batch). Returns how many messages were attempted."""
        now = clock.now()
        batch = await self.db.run(lambda s: claim(s, now=now, limit=limit))
        if batch:
            await asyncio.gather(*(self._deliver(message) for message in batch))
        return len(batch)

    async def drain_all(self, *, rounds: int = 50) -> int:
        """Deliver until nothing is due (tests, `POST /v1/admin/jobs/outbox`)."""
        total = 0
        for _ in range(rounds):
            attempted = await self.drain()
            total += attempted
            if attempted == 0:
                break
        return total

    async def run(self, stop: asyncio.Event, *, interval_seconds: float) -> None:
        """Drain until `stop` is set; waits `interval_seconds` when idle."""
        while not stop.is_set():
            attempted = 0
            try:
                attempted = await self.drain()
            except Exception as error:
                log.error("outbox_failed", error_type=type(error).__name__)
            if attempted == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=interval_seconds)

    async def _deliver(self, message: Claimed) -> None:
        registration = self.registrations.get(message.kind)
        try:
            if registration is None:
                raise DeliveryFailed(f"no handler for {message.kind}")
            await registration.handler(message)
        except Exception as error:
            policy = registration.policy if registration else self.default_policy
            await self._failed(message, error, policy)
            return
        await self.db.run(lambda s: _done(s, message.id))

    async def _failed(self, message: Claimed, error: Exception, policy: RetryPolicy) -> None:
        # The error's text only when it is ours; a library error can carry secrets.
        text = str(error) if isinstance(error, DeliveryFailed) else type(error).__name__
        dead = policy.gives_up(message.attempts)
        (log.error if dead else log.warning)(
            "outbox_delivery_failed",
            message_id=message.id,
            kind=message.kind,
            attempts=message.attempts,
            dead=dead,
            error=text,
        )
        retry_at = clock.now() + timedelta(seconds=policy.backoff_seconds(message.attempts))

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

        await self.db.run(record)


async def _done(session: AsyncSession, message_id: str) -> None:
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(state="done", done_at=clock.now(), last_error=None)
        .execution_options(synchronize_session=False)
    )
