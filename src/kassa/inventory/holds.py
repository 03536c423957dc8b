"""The stock-hold engine: all-or-nothing holds, release, commit, expiry and lazy reclaim.

Promise 1 (no oversell) rests on one conditional UPDATE per SKU, never a read-then-write.
Promise 2 (all-or-nothing, no deadlock) rests on touching stock rows in one global order (sorted
SKU; SKUs are unique and never change, so this is the same total order as sorted variant id would
be) and on a savepoint around multi-line holds, whose rollback also drops the row locks taken
(SQLite has one writer at a time: there a partial take is simply given back).
Lock order everywhere: hold rows first, then stock rows in SKU order. That is why a hold reclaims
the overdue holds on its SKUs (promise 3) *before* it takes any stock, never after a failed take.

`place_holds` serves several hold requests in one transaction, each one all-or-nothing on its own,
so that a combiner can later merge concurrent requests on a hot SKU into one round of statements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from kassa import clock
from kassa.db import UTCDateTime
from kassa.errors import KassaError, NotFound
from kassa.ids import new_id
from kassa.inventory import ledger
from kassa.inventory.ledger import Movement
from kassa.inventory.models import Hold, HoldLine, StockLevel
from kassa.inventory.states import HOLD, HoldState

stock = cast(Table, StockLevel.__table__)
holds = cast(Table, Hold.__table__)
hold_lines = cast(Table, HoldLine.__table__)

MAX_LINES = 100
MAX_QUANTITY = 1_000_000
# How many expired holds one lazy reclaim ends at most; the sweeper takes care of the rest.
RECLAIM_LIMIT = 200


class InsufficientStock(KassaError):
    status, code, title = 409, "insufficient_stock", "Not enough stock"


class UnknownSku(NotFound):
    title = "Unknown SKU"


class HoldNotFound(NotFound):
    title = "Hold not found"


@dataclass(frozen=True)
class Shortage:
    sku: str
    requested: int
    available: int


@dataclass(frozen=True)
class HoldRequest:
    """Lines as (sku, quantity), already normalized: one line per SKU, sorted by SKU."""

    lines: Sequence[tuple[str, int]]
    ttl_seconds: int
    reference: str | None = None


@dataclass(frozen=True)
class Refusal:
    """Why a hold request got nothing: lines short of stock, or SKUs that do not exist."""

    shortages: list[Shortage]
    unknown_skus: list[str]

    def error(self) -> KassaError:
        if self.unknown_skus:
            return UnknownSku(
                f"unknown SKU: {', '.join(self.unknown_skus)}", skus=self.unknown_skus
            )
        return InsufficientStock(
            "not enough stock for " + ", ".join(s.sku for s in self.shortages),
            errors=[
                {"sku": s.sku, "requested": s.requested, "available": s.available}
                for s in self.shortages
            ],
        )


@dataclass(frozen=True)
class Ended:
    """Holds that `end_holds` moved, and how many units they held between them."""

    hold_ids: list[str]
    units: int


@dataclass(frozen=True)
class HoldView:
    id: str
    state: str
    expires_at: datetime
    reference: str | None
    created_at: datetime
    lines: list[tuple[str, int]]


def normalize_lines(lines: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Sum quantities per SKU and sort by SKU: the order every hold touches stock rows in."""
    totals: dict[str, int] = defaultdict(int)
    for sku, quantity in lines:
        if quantity <= 0:
            raise ValueError(f"quantity for {sku} must be positive")
        totals[sku] += quantity
    return sorted(totals.items())


def effective_state(state: str, expires_at: datetime, now: datetime) -> str:
    """An active hold past its expiry is expired for everyone, swept or not."""
    return HoldState.EXPIRED if state == HoldState.ACTIVE and expires_at <= now else state


_TAKE = (
    update(stock)
    .where(
        stock.c.sku == bindparam("b_sku"),
        stock.c.on_hand - stock.c.reserved >= bindparam("b_qty"),
    )
    .values(reserved=stock.c.reserved + bindparam("b_qty"))
)
_INSERT_HOLD = insert(holds)
_INSERT_LINES = insert(hold_lines)
_GIVE_BACK = (
    update(stock)
    .where(stock.c.sku == bindparam("b_sku"))
    .values(reserved=stock.c.reserved - bindparam("b_qty"))
)
_CONSUME = (
    update(stock)
    .where(stock.c.sku == bindparam("b_sku"))
    .values(
        reserved=stock.c.reserved - bindparam("b_qty"),
        on_hand=stock.c.on_hand - bindparam("b_qty"),
    )
)


async def place_holds(
    session: AsyncSession, requests: Sequence[HoldRequest], *, now: datetime | None = None
) -> list[HoldView | Refusal]:
    """Hold stock for each request, each all-or-nothing; one result per request, in order.

    Call it before the transaction has locked any stock row: with several requests it reclaims
    the overdue holds on all their SKUs first, then locks every one of those stock rows in SKU
    order, so that the whole batch still follows the one global lock order.
    """
    conn = await session.connection()
    at = now or clock.now()
    if len(requests) == 1:
        return [await _place_one(conn, requests[0], at)]
    skus = sorted({sku for request in requests for sku, _ in request.lines})
    await reclaim_expired(conn, skus, at, then_take=skus)
    await conn.execute(
        select(stock.c.sku).where(stock.c.sku.in_(skus)).order_by(stock.c.sku).with_for_update()
    )
    outcomes: list[HoldView | Refusal] = []
    for request in requests:
        hold = _new_hold(request, at)
        placed = await _place_lines(conn, hold)
        outcomes.append(hold if placed else await _refusal(conn, request.lines))
    return outcomes


async def hold_stock(
    session: AsyncSession,
    lines: Iterable[tuple[str, int]],
    *,
    ttl_seconds: int,
    reference: str | None = None,
    now: datetime | None = None,
) -> HoldView:
    """Hold every line or none; raises InsufficientStock or UnknownSku."""
    request = HoldRequest(normalize_lines(lines), ttl_seconds, reference)
    [outcome] = await place_holds(session, [request], now=now)
    if isinstance(outcome, Refusal):
        raise outcome.error()
    return outcome


def _new_hold(request: HoldRequest, now: datetime) -> HoldView:
    return HoldView(
        id=new_id("hold"),
        state=HoldState.ACTIVE,
        expires_at=now + timedelta(seconds=request.ttl_seconds),
        reference=request.reference,
        created_at=now,
        lines=list(request.lines),
    )


async def _place_one(
    conn: AsyncConnection, request: HoldRequest, now: datetime
) -> HoldView | Refusal:
    """Lazy reclaim of the overdue holds on the request's SKUs, then every line or none."""
    hold = _new_hold(request, now)
    skus = [sku for sku, _ in request.lines]
    if len(request.lines) == 1 and conn.dialect.name == "postgresql":
        outcome = await _place_one_line_pg(conn, hold, now, skip_if_overdue=True)
        if outcome == _OVERDUE:
            # Try again whatever the reclaim returns: zero can mean that another transaction
            # was giving the same units back, and they are there now.
            await reclaim_expired(conn, skus, now, then_take=skus)
            outcome = await _place_one_line_pg(conn, hold, now, skip_if_overdue=False)
        return hold if outcome == _PLACED else await _refusal(conn, request.lines)
    # Lazy reclaim (promise 3) first, before this transaction locks any stock row, so the lock
    # order (hold rows, then stock rows) is kept; then every line or none.
    await reclaim_expired(conn, skus, now, then_take=skus)
    if await _place_lines(conn, hold):
        return hold
    return await _refusal(conn, request.lines)


async def _place_lines(conn: AsyncConnection, hold: HoldView) -> bool:
    """Take every line (or none), then write the hold, its lines and its ledger entries."""
    if not await _take(conn, hold.lines):
        return False
    await conn.execute(
        _INSERT_HOLD,
        {
            "id": hold.id,
            "state": HoldState.ACTIVE,
            "expires_at": hold.expires_at,
            "reference": hold.reference,
            "created_at": hold.created_at,
        },
    )
    await conn.execute(
        _INSERT_LINES,
        [
            {"hold_id": hold.id, "sku": s, "quantity": q, "active_until": hold.expires_at}
            for s, q in hold.lines
        ],
    )
    await ledger.record(
        conn,
        [Movement(s, "hold", 0, q, "hold", hold.id) for s, q in hold.lines],
        at=hold.created_at,
    )
    return True


async def _take(conn: AsyncConnection, lines: Sequence[tuple[str, int]]) -> bool:
    """Reserve every line or none. Lines are in SKU order, so rows are locked in that order.

    On PostgreSQL a conditional UPDATE that waited for another transaction and then found too
    little stock keeps the row locked; rolling the savepoint back drops that lock as well. One
    line needs no savepoint: it runs here only on SQLite (one writer at a time) or inside a
    batch whose rows are already locked (one-line holds on PostgreSQL take `_HOLD_ONE_LINE_PG`).
    """
    if len(lines) == 1:
        sku, quantity = lines[0]
        result = await conn.execute(_TAKE, {"b_sku": sku, "b_qty": quantity})
        return result.rowcount == 1
    if conn.dialect.name == "sqlite":
        # No other writer can see the partial take; giving it back is the rollback.
        taken: list[tuple[str, int]] = []
        for sku, quantity in lines:
            result = await conn.execute(_TAKE, {"b_sku": sku, "b_qty": quantity})
            if result.rowcount != 1:
                if taken:
                    await conn.execute(_GIVE_BACK, [{"b_sku": s, "b_qty": q} for s, q in taken])
                return False
            taken.append((sku, quantity))
        return True
    savepoint = await conn.begin_nested()
    for sku, quantity in lines:
        result = await conn.execute(_TAKE, {"b_sku": sku, "b_qty": quantity})
        if result.rowcount != 1:
            await savepoint.rollback()
            return False
    await savepoint.commit()
    return True


_PLACED, _SHORT, _OVERDUE = "placed", "short", "overdue"

# A one-line hold on PostgreSQL in one statement and one round trip, so the stock row stays
# locked only from this statement to COMMIT. The conditional UPDATE decides; the inserts happen
# only for the row it returns. With :skip_if_overdue, the UPDATE does not even touch the row
# while an overdue hold still holds units of this SKU (one index probe): the caller reclaims
# first, holding no stock lock, and comes back. SQLite has no data-modifying WITH; it takes the
# statement-by-statement path.
_HOLD_ONE_LINE_PG = text(
    """
WITH overdue AS (
    SELECT 1 FROM hold_lines
    WHERE CAST(:skip_if_overdue AS BOOLEAN)
      AND sku = CAST(:sku AS VARCHAR) AND active_until <= CAST(:now AS TIMESTAMPTZ)
    LIMIT 1
), taken AS (
    UPDATE stock_levels SET reserved = reserved + CAST(:qty AS BIGINT)
    WHERE sku = CAST(:sku AS VARCHAR) AND on_hand - reserved >= CAST(:qty AS BIGINT)
      AND NOT EXISTS (SELECT 1 FROM overdue)
    RETURNING sku
), hold AS (
    INSERT INTO holds (id, state, expires_at, reference, created_at)
    SELECT CAST(:hold_id AS VARCHAR), 'active', CAST(:expires_at AS TIMESTAMPTZ),
           CAST(:reference AS VARCHAR), CAST(:now AS TIMESTAMPTZ)
    FROM taken
), line AS (
    INSERT INTO hold_lines (hold_id, sku, quantity, active_until)
    SELECT CAST(:hold_id AS VARCHAR), sku, CAST(:qty AS BIGINT), CAST(:expires_at AS TIMESTAMPTZ)
    FROM taken
), entry AS (
    INSERT INTO stock_movements
        (sku, kind, on_hand_delta, reserved_delta, reference_type, reference_id, created_at)
    SELECT sku, 'hold', 0, CAST(:qty AS BIGINT), 'hold', CAST(:hold_id AS VARCHAR),
           CAST(:now AS TIMESTAMPTZ)
    FROM taken
)
SELECT (SELECT count(*) FROM taken), (SELECT count(*) FROM overdue)
"""
).bindparams(bindparam("expires_at", type_=UTCDateTime()), bindparam("now", type_=UTCDateTime()))


async def _place_one_line_pg(
    conn: AsyncConnection, hold: HoldView, now: datetime, *, skip_if_overdue: bool
) -> str:
    [(sku, quantity)] = hold.lines
    result = await conn.execute(
        _HOLD_ONE_LINE_PG,
        {
            "skip_if_overdue": skip_if_overdue,
            "sku": sku,
            "qty": quantity,
            "hold_id": hold.id,
            "expires_at": hold.expires_at,
            "reference": hold.reference,
            "now": now,
        },
    )
    taken, overdue = result.one()
    if taken:
        return _PLACED
    return _OVERDUE if overdue else _SHORT


async def _refusal(conn: AsyncConnection, lines: Sequence[tuple[str, int]]) -> Refusal:
    skus = [sku for sku, _ in lines]
    result = await conn.execute(
        select(stock.c.sku, stock.c.on_hand - stock.c.reserved).where(stock.c.sku.in_(skus))
    )
    available = {sku: int(units) for sku, units in result}
    unknown = [sku for sku in skus if sku not in available]
    shortages = [
        Shortage(sku, quantity, available[sku])
        for sku, quantity in lines
        if sku in available and available[sku] < quantity
    ]
    if not unknown and not shortages:
        # Stock came free between the attempt and this look; report the line as short anyway:
        # the caller may simply try again.
        shortages = [Shortage(sku, q, available[sku]) for sku, q in lines]
    return Refusal(shortages, unknown)


async def reclaim_expired(
    conn: AsyncConnection, skus: Sequence[str], now: datetime, *, then_take: Sequence[str] = ()
) -> int:
    """Lazy reclaim: expire the overdue holds that hold any of `skus`. Returns how many ended.

    `then_take`: the SKUs the caller will take next. A reclaimed hold may give units back on
    other SKUs too; all those rows and `then_take` are then locked together in SKU order, so the
    reclaim and the take that follows keep the one global lock order between them.
    """
    result = await conn.execute(
        select(hold_lines.c.hold_id)
        .where(hold_lines.c.sku.in_(list(skus)), hold_lines.c.active_until <= now)
        .limit(RECLAIM_LIMIT)
    )
    due = sorted({row[0] for row in result})
    return len((await end_holds(conn, due, HoldState.EXPIRED, now, lock_also=then_take)).hold_ids)


_KIND_FOR_STATE: dict[str, str] = {
    HoldState.EXPIRED: "expire",
    HoldState.RELEASED: "release",
    HoldState.COMMITTED: "commit",
}


async def end_holds(
    conn: AsyncConnection,
    hold_ids: Sequence[str],
    to_state: str,
    now: datetime,
    *,
    lock_also: Sequence[str] = (),
    unexpired_only: bool = False,
) -> Ended:
    """Move active holds to `to_state` and settle their stock; returns what moved.

    The conditional UPDATE on the hold rows is what makes this exactly-once: of several sweepers,
    lazy reclaimers and callers racing for one hold, only one sees it still active. Expiry also
    requires the hold to be due, so a hold whose expiry moved on is left alone.
    """
    HOLD.check(HoldState.ACTIVE, to_state)
    if not hold_ids:
        return Ended([], 0)
    conditions = [holds.c.id.in_(sorted(hold_ids)), holds.c.state == HoldState.ACTIVE]
    if to_state == HoldState.EXPIRED:
        conditions.append(holds.c.expires_at <= now)
    if unexpired_only:
        conditions.append(holds.c.expires_at > now)
    result = await conn.execute(
        update(holds).where(*conditions).values(state=to_state, ended_at=now).returning(holds.c.id)
    )
    ended = [row[0] for row in result]
    if not ended:
        return Ended([], 0)
    result = await conn.execute(
        update(hold_lines)
        .where(hold_lines.c.hold_id.in_(ended))
        .values(active_until=None)
        .returning(hold_lines.c.hold_id, hold_lines.c.sku, hold_lines.c.quantity)
    )
    per_sku: dict[str, int] = defaultdict(int)
    entries = []
    kind = _KIND_FOR_STATE[to_state]
    leaves_stock = to_state == HoldState.COMMITTED
    for hold_id, sku, quantity in result:
        per_sku[sku] += quantity
        entries.append(
            Movement(sku, kind, -quantity if leaves_stock else 0, -quantity, "hold", hold_id)
        )
    extra = set(lock_also) - set(per_sku)
    if extra and conn.dialect.name == "postgresql":
        await conn.execute(
            select(stock.c.sku)
            .where(stock.c.sku.in_(sorted(extra | set(per_sku))))
            .order_by(stock.c.sku)
            .with_for_update()
        )
    statement = _CONSUME if leaves_stock else _GIVE_BACK
    await conn.execute(
        statement, [{"b_sku": sku, "b_qty": per_sku[sku]} for sku in sorted(per_sku)]
    )
    await ledger.record(conn, entries, at=now)
    return Ended(ended, sum(per_sku.values()))


async def commit_if_active(session: AsyncSession, hold_id: str, *, now: datetime) -> bool:
    """Commit the hold if it is active and not yet due (a paid checkout); False otherwise
    (expired, swept or not: the caller holds the stock again or refunds)."""
    conn = await session.connection()
    ended = await end_holds(conn, [hold_id], HoldState.COMMITTED, now, unexpired_only=True)
    return bool(ended.hold_ids)


async def get_hold(session: AsyncSession, hold_id: str, *, now: datetime | None = None) -> HoldView:
    conn = await session.connection()
    return await _load(conn, hold_id, now or clock.now())


async def release_hold(session: AsyncSession, hold_id: str) -> HoldView:
    """Give the held units back. Idempotent; a hold that already expired stays expired."""
    return await _move(session, hold_id, HoldState.RELEASED)


async def commit_hold(session: AsyncSession, hold_id: str) -> HoldView:
    """The held units leave on_hand (they are sold). Idempotent; 409 once released or expired."""
    return await _move(session, hold_id, HoldState.COMMITTED)


async def _move(session: AsyncSession, hold_id: str, target: str) -> HoldView:
    conn = await session.connection()
    now = clock.now()
    query = select(holds.c.state, holds.c.expires_at).where(holds.c.id == hold_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise HoldNotFound(f"no hold {hold_id}")
    state, expires_at = row
    if effective_state(state, expires_at, now) == HoldState.EXPIRED and state == HoldState.ACTIVE:
        await end_holds(conn, [hold_id], HoldState.EXPIRED, now)
        state = HoldState.EXPIRED
    if HOLD.plan(state, target):
        await end_holds(conn, [hold_id], target, now)
    return await _load(conn, hold_id, now)


async def _load(conn: AsyncConnection, hold_id: str, now: datetime) -> HoldView:
    row = (
        await conn.execute(
            select(
                holds.c.id,
                holds.c.state,
                holds.c.expires_at,
                holds.c.reference,
                holds.c.created_at,
            ).where(holds.c.id == hold_id)
        )
    ).first()
    if row is None:
        raise HoldNotFound(f"no hold {hold_id}")
    result = await conn.execute(
        select(hold_lines.c.sku, hold_lines.c.quantity)
        .where(hold_lines.c.hold_id == hold_id)
        .order_by(hold_lines.c.sku)
    )
    return HoldView(
        id=row.id,
        state=effective_state(row.state, row.expires_at, now),
        expires_at=row.expires_at,
        reference=row.reference,
        created_at=row.created_at,
        lines=[(sku, int(quantity)) for sku, quantity in result],
    )


async def extend_hold(session: AsyncSession, hold_id: str, expires_at: datetime) -> bool:
    """Move an active, not yet expired hold's expiry to `expires_at` (a payment is processing
    at the provider, or came back failed). False if the hold is no longer active."""
    conn = await session.connection()
    now = clock.now()
    result = await conn.execute(
        update(holds)
        .where(holds.c.id == hold_id, holds.c.state == HoldState.ACTIVE, holds.c.expires_at > now)
        .values(expires_at=expires_at)
        .returning(holds.c.id)
    )
    if result.first() is None:
        return False
    await conn.execute(
        update(hold_lines)
        .where(hold_lines.c.hold_id == hold_id, hold_lines.c.active_until.is_not(None))
        .values(active_until=expires_at)
    )
    return True
