"""Expiring due holds in batches, for the sweeper (`kassa.ops.sweeper` runs it).

On PostgreSQL each batch claims its holds with `FOR UPDATE SKIP LOCKED`, so any number of
sweepers (in `kassa serve` processes and `kassa worker`s) can run at once without waiting for each
other; the conditional UPDATE in `end_holds` makes sure no hold is ever released twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from kassa.inventory.holds import end_holds, holds
from kassa.inventory.states import HoldState


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
