"""The append-only stock ledger: every change to on_hand or reserved, with its reference."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from kassa import clock
from kassa.inventory.models import StockMovement

movements = cast(Table, StockMovement.__table__)
_INSERT = insert(movements)


@dataclass(frozen=True)
class Movement:
    sku: str
    kind: str
    on_hand_delta: int
    reserved_delta: int
    reference_type: str
    reference_id: str
    reason: str | None = None
    actor_id: str | None = None

    def row(self, at: datetime) -> dict[str, Any]:
        return {
            "sku": self.sku,
            "kind": self.kind,
            "on_hand_delta": self.on_hand_delta,
            "reserved_delta": self.reserved_delta,
            "reference_type": self.reference_type,
            "reference_id": self.reference_id,
            "reason": self.reason,
            "actor_id": self.actor_id,
            "created_at": at,
        }


async def record(
    conn: AsyncConnection | AsyncSession, entries: Sequence[Movement], at: datetime | None = None
) -> None:
    if not entries:
        return
    when = at or clock.now()
    await conn.execute(_INSERT, [entry.row(when) for entry in entries])


async def list_movements(
    session: AsyncSession, sku: str, *, limit: int, after_id: int | None
) -> list[StockMovement]:
    query = select(StockMovement).where(StockMovement.sku == sku)
    if after_id is not None:
        query = query.where(StockMovement.id > after_id)
    result = await session.execute(query.order_by(StockMovement.id).limit(limit))
    return list(result.scalars())


async def replay(session: AsyncSession) -> dict[str, tuple[int, int]]:
    """Stock levels as the ledger tells them: (on_hand, reserved) per SKU, summed from zero."""
    result = await session.execute(
        select(
            movements.c.sku,
            func.sum(movements.c.on_hand_delta),
            func.sum(movements.c.reserved_delta),
        ).group_by(movements.c.sku)
    )
    return {sku: (int(on_hand), int(reserved)) for sku, on_hand, reserved in result}
