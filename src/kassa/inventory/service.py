"""Stock levels: create, read, adjust and restock, low stock. Holds live in holds.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.catalog.models import Product, Variant
from kassa.errors import Conflict, NotFound
from kassa.ids import new_id
from kassa.inventory import ledger
from kassa.inventory.ledger import Movement
from kassa.inventory.models import StockLevel

stock = cast(Table, StockLevel.__table__)


class SkuNotFound(NotFound):
    title = "SKU not found"


class StockBelowReserved(Conflict):
    title = "Stock would fall below what is held"


@dataclass(frozen=True)
class StockView:
    sku: str
    on_hand: int
    reserved: int
    low_stock_threshold: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


async def create_stock(
    session: AsyncSession,
    *,
    variant_id: str,
    sku: str,
    on_hand: int,
    low_stock_threshold: int,
    actor_id: str | None,
) -> None:
    conn = await session.connection()
    await conn.execute(
        insert(stock),
        {
            "variant_id": variant_id,
            "sku": sku,
            "on_hand": on_hand,
            "reserved": 0,
            "low_stock_threshold": low_stock_threshold,
        },
    )
    # Every level starts from a ledger entry, so replaying the ledger gives it back exactly.
    await ledger.record(
        conn,
        [Movement(sku, "initial", on_hand, 0, "variant", variant_id, "initial stock", actor_id)],
    )


async def get_stock(session: AsyncSession, sku: str) -> StockView:
    levels = await stock_for_skus(session, [sku])
    if sku not in levels:
        raise SkuNotFound(f"no SKU {sku}")
    return levels[sku]


async def stock_for_skus(session: AsyncSession, skus: Sequence[str]) -> dict[str, StockView]:
    result = await session.execute(
        select(stock.c.sku, stock.c.on_hand, stock.c.reserved, stock.c.low_stock_threshold).where(
            stock.c.sku.in_(list(skus))
        )
    )
    return {
        row.sku: StockView(row.sku, row.on_hand, row.reserved, row.low_stock_threshold)
        for row in result
    }


async def stock_for_variants(
    session: AsyncSession, variant_ids: Sequence[str]
) -> dict[str, StockView]:
    result = await session.execute(
        select(
            stock.c.variant_id,
            stock.c.sku,
            stock.c.on_hand,
            stock.c.reserved,
            stock.c.low_stock_threshold,
        ).where(stock.c.variant_id.in_(list(variant_ids)))
    )
    return {
        row.variant_id: StockView(row.sku, row.on_hand, row.reserved, row.low_stock_threshold)
        for row in result
    }


async def adjust_stock(
    session: AsyncSession,
    *,
    sku: str,
    delta: int,
    reason: str,
    actor_id: str | None,
    note: str | None = None,
) -> StockView:
    """Change on_hand by `delta` in one conditional UPDATE; never below what is held."""
    conn = await session.connection()
    result = await conn.execute(
        update(stock)
        .where(stock.c.sku == sku, stock.c.on_hand + bindparam("b_delta") >= stock.c.reserved)
        .values(on_hand=stock.c.on_hand + bindparam("b_delta"))
        .returning(stock.c.on_hand, stock.c.reserved, stock.c.low_stock_threshold),
        {"b_delta": delta},
    )
    row = result.first()
    if row is None:
        current = await stock_for_skus(session, [sku])
        if sku not in current:
            raise SkuNotFound(f"no SKU {sku}")
        level = current[sku]
        raise StockBelowReserved(
            f"on_hand {level.on_hand} {delta:+d} would be below the {level.reserved} units held",
            sku=sku,
            on_hand=level.on_hand,
            reserved=level.reserved,
        )
    kind = "restock" if reason == "restock" else "adjustment"
    text = reason if note is None else f"{reason}: {note}"
    await ledger.record(
        conn,
        [Movement(sku, kind, delta, 0, "adjustment", new_id("adj"), text[:255], actor_id)],
        at=clock.now(),
    )
    return StockView(sku, row.on_hand, row.reserved, row.low_stock_threshold)


async def restock(
    session: AsyncSession, *, sku: str, quantity: int, actor_id: str | None, note: str | None = None
) -> StockView:
    """Units arrive: on_hand grows by `quantity` (a `restock` ledger entry)."""
    if quantity <= 0:
        raise ValueError("a restock adds at least one unit")
    return await adjust_stock(
        session, sku=sku, delta=quantity, reason="restock", actor_id=actor_id, note=note
    )


async def set_low_stock_threshold(
    session: AsyncSession, *, variant_id: str, threshold: int
) -> None:
    conn = await session.connection()
    await conn.execute(
        update(stock).where(stock.c.variant_id == variant_id).values(low_stock_threshold=threshold)
    )


@dataclass(frozen=True)
class LowStockItem:
    sku: str
    variant_id: str
    product_id: str
    name: str
    on_hand: int
    reserved: int
    available: int
    low_stock_threshold: int


async def low_stock(
    session: AsyncSession, *, vendor_id: str | None, limit: int, after_sku: str | None
) -> list[LowStockItem]:
    """Variants whose available units are at or below their threshold, by SKU."""
    available = stock.c.on_hand - stock.c.reserved
    query = (
        select(
            stock.c.sku,
            stock.c.variant_id,
            Variant.product_id,
            Variant.name,
            stock.c.on_hand,
            stock.c.reserved,
            available.label("available"),
            stock.c.low_stock_threshold,
        )
        .join(Variant, Variant.id == stock.c.variant_id)
        .where(available <= stock.c.low_stock_threshold)
        .order_by(stock.c.sku)
        .limit(limit)
    )
    if vendor_id is not None:
        query = query.join(Product, Product.id == Variant.product_id).where(
            Product.vendor_id == vendor_id
        )
    if after_sku is not None:
        query = query.where(stock.c.sku > after_sku)
    result = await session.execute(query)
    return [LowStockItem(*row) for row in result]


async def put_back(
    session: AsyncSession,
    lines: Sequence[tuple[str, int]],
    *,
    reference_type: str,
    reference_id: str,
    reason: str,
    actor_id: str | None,
) -> None:
    """Sold units come back to stock (a cancelled order, a received return): on_hand grows, one
    `return` ledger entry per SKU, rows touched in SKU order."""
    conn = await session.connection()
    totals: dict[str, int] = {}
    for sku, quantity in lines:
        if quantity > 0:
            totals[sku] = totals.get(sku, 0) + quantity
    for sku in sorted(totals):
        await conn.execute(
            update(stock).where(stock.c.sku == sku).values(on_hand=stock.c.on_hand + totals[sku])
        )
    await ledger.record(
        conn,
        [
            Movement(
                sku, "return", totals[sku], 0, reference_type, reference_id, reason[:255], actor_id
            )
            for sku in sorted(totals)
        ],
    )
