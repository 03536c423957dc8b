"""The stock-hold engine: all-or-nothing holds, release, commit, expiry and lazy reclaim.

Promise 1 (no oversell) rests on one conditional UPDATE per SKU, never a read-then-write.
Promise 2 (all-or-nothing, no deadlock) rests on touching stock rows in one global order (sorted
SKU; SKUs are unique and never change, so this is the same total order as sorted variant id would
be) and on a savepoint around multi-line holds, whose rollback also drops the row locks taken.
Lock order everywhere: hold rows first, then stock rows in SKU order.

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
from kassa.errors import InvalidTransition, KassaError, NotFound
from kassa.ids import new_id
from kassa.inventory import ledger
from kassa.inventory.ledger import Movement
from kassa.inventory.models import Hold, HoldLine, StockLevel

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
    return "expired" if state == "active" and expires_at <= now else state


# The hold state machine. Asking for the state a hold is already in, or releasing a hold whose
# stock already came back by expiry, changes nothing and is not an error.
HOLD_TRANSITIONS: dict[str, frozenset[str]] = {
    "active": frozenset({"committed", "released", "expired"}),
    "committed": frozenset(),
    "released": frozenset(),
    "expired": frozenset(),
}
ALREADY_DONE = frozenset(
    {
        ("committed", "committed"),
        ("released", "released"),
        ("expired", "expired"),
        ("expired", "released"),
    }
)


def plan_transition(current: str, target: str) -> bool:
    """True if the hold must move to `target`; False if that is already done; raises otherwise."""
    if (current, target) in ALREADY_DONE:
        return False
    if target in HOLD_TRANSITIONS[current]:
        return True
    raise InvalidTransition(
        f"a {current} hold cannot become {target}", from_state=current, to_state=target
    )


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
    """Hold stock for each request, each all-or-nothing; one result per request, in order."""
    conn = await session.connection()
    at = now or clock.now()
    return [await _place_one(conn, request, at) for request in requests]


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


async def _place_one(
    conn: AsyncConnection, request: HoldRequest, now: datetime
) -> HoldView | Refusal:
    lines = request.lines
    hold = HoldView(
        id=new_id("hold"),
        state="active",
        expires_at=now + timedelta(seconds=request.ttl_seconds),
        reference=request.reference,
        created_at=now,
        lines=list(lines),
    )
    place = (
        _place_one_line_pg
        if len(lines) == 1 and conn.dialect.name == "postgresql"
        else _place_lines
    )
    # Too little stock: holds that are past their expiry but not yet swept give theirs back now
    # (promise 3), then the lines are tried once more.
    if not await place(conn, hold) and (
        await reclaim_expired(conn, [sku for sku, _ in lines], now) == 0
        or not await place(conn, hold)
    ):
        return await _refusal(conn, lines)
    return hold


async def _place_lines(conn: AsyncConnection, hold: HoldView) -> bool:
    """Take every line (or none), then write the hold, its lines and its ledger entries."""
    if not await _take(conn, hold.lines):
        return False
    await conn.execute(
        _INSERT_HOLD,
        {
            "id": hold.id,
            "state": "active",
            "expires_at": hold.expires_at,
            "reference": hold.reference,
            "created_at": hold.created_at,
        },
    )
    await conn.execute(
        _INSERT_LINES, [{"hold_id": hold.id, "sku": s, "quantity": q} for s, q in hold.lines]
    )
    await ledger.record(
        conn,
        [Movement(s, "hold", 0, q, "hold", hold.id) for s, q in hold.lines],
        at=hold.created_at,
    )
    return True


# The same work as _place_lines for a one-line hold, in one statement and one round trip: the
# conditional UPDATE decides, and the inserts happen only for the row it returns. The stock row
# stays locked from this statement to COMMIT, so the hot path keeps that window short.
# PostgreSQL only: SQLite has no data-modifying WITH.
_HOLD_ONE_LINE_PG = text(
    """
WITH taken AS (
    UPDATE stock_levels SET reserved = reserved + CAST(:qty AS BIGINT)
    WHERE sku = CAST(:sku AS VARCHAR) AND on_hand - reserved >= CAST(:qty AS BIGINT)
    RETURNING sku
), hold AS (
    INSERT INTO holds (id, state, expires_at, reference, created_at)
    SELECT CAST(:hold_id AS VARCHAR), 'active', CAST(:expires_at AS TIMESTAMPTZ),
           CAST(:reference AS VARCHAR), CAST(:now AS TIMESTAMPTZ)
    FROM taken
), line AS (
    INSERT INTO hold_lines (hold_id, sku, quantity)
    SELECT CAST(:hold_id AS VARCHAR), sku, CAST(:qty AS BIGINT) FROM taken
), entry AS (
    INSERT INTO stock_movements
        (sku, kind, on_hand_delta, reserved_delta, reference_type, reference_id, created_at)
    SELECT sku, 'hold', 0, CAST(:qty AS BIGINT), 'hold', CAST(:hold_id AS VARCHAR),
           CAST(:now AS TIMESTAMPTZ)
    FROM taken
)
SELECT count(*) FROM taken
"""
).bindparams(bindparam("expires_at", type_=UTCDateTime()), bindparam("now", type_=UTCDateTime()))


async def _place_one_line_pg(conn: AsyncConnection, hold: HoldView) -> bool:
    [(sku, quantity)] = hold.lines
    result = await conn.execute(
        _HOLD_ONE_LINE_PG,
        {
            "sku": sku,
            "qty": quantity,
            "hold_id": hold.id,
            "expires_at": hold.expires_at,
            "reference": hold.reference,
            "now": hold.created_at,
        },
    )
    return int(result.scalar_one()) == 1


async def _take(conn: AsyncConnection, lines: Sequence[tuple[str, int]]) -> bool:
    """Reserve every line or none. Lines are in SKU order, so rows are locked in that order."""
    if len(lines) == 1:
        sku, quantity = lines[0]
        result = await conn.execute(_TAKE, {"b_sku": sku, "b_qty": quantity})
        return result.rowcount == 1
    savepoint = await conn.begin_nested()
    for sku, quantity in lines:
        result = await conn.execute(_TAKE, {"b_sku": sku, "b_qty": quantity})
        if result.rowcount != 1:
            await savepoint.rollback()
            return False
    await savepoint.commit()
    return True


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


async def reclaim_expired(conn: AsyncConnection, skus: Sequence[str], now: datetime) -> int:
    """Lazy reclaim: expire the overdue holds that hold any of `skus`. Returns how many ended."""
    result = await conn.execute(
        select(holds.c.id)
        .join(hold_lines, hold_lines.c.hold_id == holds.c.id)
        .where(
            hold_lines.c.sku.in_(skus),
            holds.c.state == "active",
            holds.c.expires_at <= now,
        )
        .order_by(holds.c.id)
        .limit(RECLAIM_LIMIT)
    )
    due = sorted({row[0] for row in result})
    return len((await end_holds(conn, due, "expired", now)).hold_ids)


_KIND_FOR_STATE = {"expired": "expire", "released": "release", "committed": "commit"}


async def end_holds(
    conn: AsyncConnection, hold_ids: Sequence[str], to_state: str, now: datetime
) -> Ended:
    """Move active holds to `to_state` and settle their stock; returns what moved.

    The conditional UPDATE on the hold rows is what makes this exactly-once: of several sweepers,
    lazy reclaimers and callers racing for one hold, only one sees it still active. Expiry also
    requires the hold to be due, so a hold whose expiry moved on is left alone.
    """
    if not hold_ids:
        return Ended([], 0)
    conditions = [holds.c.id.in_(sorted(hold_ids)), holds.c.state == "active"]
    if to_state == "expired":
        conditions.append(holds.c.expires_at <= now)
    result = await conn.execute(
        update(holds).where(*conditions).values(state=to_state, ended_at=now).returning(holds.c.id)
    )
    ended = [row[0] for row in result]
    if not ended:
        return Ended([], 0)
    result = await conn.execute(
        select(hold_lines.c.hold_id, hold_lines.c.sku, hold_lines.c.quantity).where(
            hold_lines.c.hold_id.in_(ended)
        )
    )
    per_sku: dict[str, int] = defaultdict(int)
    entries = []
    kind = _KIND_FOR_STATE[to_state]
    leaves_stock = to_state == "committed"
    for hold_id, sku, quantity in result:
        per_sku[sku] += quantity
        entries.append(
            Movement(sku, kind, -quantity if leaves_stock else 0, -quantity, "hold", hold_id)
        )
    statement = _CONSUME if leaves_stock else _GIVE_BACK
    await conn.execute(
        statement, [{"b_sku": sku, "b_qty": per_sku[sku]} for sku in sorted(per_sku)]
    )
    await ledger.record(conn, entries, at=now)
    return Ended(ended, sum(per_sku.values()))


async def get_hold(session: AsyncSession, hold_id: str, *, now: datetime | None = None) -> HoldView:
    conn = await session.connection()
    return await _load(conn, hold_id, now or clock.now())


async def release_hold(session: AsyncSession, hold_id: str) -> HoldView:
    """Give the held units back. Idempotent; a hold that already expired stays expired."""
    return await _move(session, hold_id, "released")


async def commit_hold(session: AsyncSession, hold_id: str) -> HoldView:
    """The held units leave on_hand (they are sold). Idempotent; 409 once released or expired."""
    return await _move(session, hold_id, "committed")


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
    if effective_state(state, expires_at, now) == "expired" and state == "active":
        await end_holds(conn, [hold_id], "expired", now)
        state = "expired"
    if plan_transition(state, target):
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
