"""Inventory and hold endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy.ext.asyncio import AsyncSession

from kassa.auth.deps import AdminPrincipal, OptionalPrincipal, StaffPrincipal
from kassa.auth.principal import Principal
from kassa.catalog import service as catalog
from kassa.deps import AppSettings, ReadSession, WriteSession
from kassa.errors import Conflict
from kassa.inventory import holds, ledger, service
from kassa.inventory.schemas import (
    AdjustmentIn,
    HoldCreate,
    HoldLineOut,
    HoldOut,
    LowStockOut,
    MovementOut,
    StockOut,
)
from kassa.pagination import (
    DEFAULT_LIMIT,
    Cursor,
    Limit,
    Page,
    decode_cursor,
    decode_int_cursor,
    encode_cursor,
)

router = APIRouter(tags=["inventory"])

SkuPath = Annotated[str, Path(max_length=64)]
HoldId = Annotated[str, Path(max_length=64)]


def stock_out(level: service.StockView) -> StockOut:
    return StockOut(
        sku=level.sku, on_hand=level.on_hand, reserved=level.reserved, available=level.available
    )


def hold_out(view: holds.HoldView) -> HoldOut:
    return HoldOut(
        id=view.id,
        state=view.state,
        expires_at=view.expires_at,
        reference=view.reference,
        created_at=view.created_at,
        lines=[HoldLineOut(sku=sku, quantity=quantity) for sku, quantity in view.lines],
    )


async def _require_sku_manager(session: AsyncSession, sku: str, who: Principal) -> None:
    owner = await catalog.owner_of_sku(session, sku)
    if not who.owns(owner.vendor_id):
        # Someone else's SKU answers like an unknown one.
        raise service.SkuNotFound(f"no SKU {sku}")


# Declared before /v1/inventory/{sku} so that "low-stock" is never taken for a SKU.
@router.get("/v1/inventory/low-stock", response_model=Page[LowStockOut])
async def low_stock(
    principal: StaffPrincipal,
    session: ReadSession,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[LowStockOut]:
    items = await service.low_stock(
        session,
        vendor_id=None if principal.is_admin else principal.user_id,
        limit=limit + 1,
        after_sku=decode_cursor(cursor),
    )
    page = items[:limit]
    return Page(
        data=[LowStockOut(**item.__dict__) for item in page],
        next_cursor=encode_cursor(page[-1].sku) if len(items) > limit else None,
    )


@router.get("/v1/inventory/{sku}", response_model=StockOut)
async def get_stock(sku: SkuPath, session: ReadSession, principal: OptionalPrincipal) -> StockOut:
    if not (await catalog.owner_of_sku(session, sku)).visible_to(principal):
        # An inactive product's stock is hidden like the product itself.
        raise service.SkuNotFound(f"no SKU {sku}")
    return stock_out(await service.get_stock(session, sku))


@router.post("/v1/inventory/{sku}/adjustments", response_model=StockOut)
async def adjust_stock(
    sku: SkuPath, body: AdjustmentIn, principal: StaffPrincipal, session: WriteSession
) -> StockOut:
    await _require_sku_manager(session, sku, principal)
    level = await service.adjust_stock(
        session,
        sku=sku,
        delta=body.delta,
        reason=body.reason,
        note=body.note,
        actor_id=principal.user_id,
    )
    return stock_out(level)


@router.get("/v1/inventory/{sku}/movements", response_model=Page[MovementOut])
async def list_movements(
    sku: SkuPath,
    principal: StaffPrincipal,
    session: ReadSession,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[MovementOut]:
    await _require_sku_manager(session, sku, principal)
    rows = await ledger.list_movements(
        session, sku, limit=limit + 1, after_id=decode_int_cursor(cursor)
    )
    page = rows[:limit]
    return Page(
        data=[MovementOut.model_validate(row, from_attributes=True) for row in page],
        next_cursor=encode_cursor(str(page[-1].id)) if len(rows) > limit else None,
    )


@router.post("/v1/holds", status_code=201, response_model=HoldOut)
async def create_hold(
    body: HoldCreate, _admin: AdminPrincipal, session: WriteSession, settings: AppSettings
) -> HoldOut:
    ttl = min(body.ttl_seconds or settings.hold_ttl_seconds, settings.hold_max_ttl_seconds)
    view = await holds.hold_stock(
        session,
        [(line.sku, line.quantity) for line in body.lines],
        ttl_seconds=ttl,
        reference=body.reference,
    )
    return hold_out(view)


@router.get("/v1/holds/{hold_id}", response_model=HoldOut)
async def get_hold(hold_id: HoldId, _admin: AdminPrincipal, session: ReadSession) -> HoldOut:
    return hold_out(await holds.get_hold(session, hold_id))


@router.post("/v1/holds/{hold_id}/release", response_model=HoldOut)
async def release_hold(hold_id: HoldId, _admin: AdminPrincipal, session: WriteSession) -> HoldOut:
    await _refuse_checkout_hold(session, hold_id)
    return hold_out(await holds.release_hold(session, hold_id))


@router.post("/v1/holds/{hold_id}/commit", response_model=HoldOut)
async def commit_hold(hold_id: HoldId, _admin: AdminPrincipal, session: WriteSession) -> HoldOut:
    await _refuse_checkout_hold(session, hold_id)
    return hold_out(await holds.commit_hold(session, hold_id))


async def _refuse_checkout_hold(session: AsyncSession, hold_id: str) -> None:
    """A checkout's hold moves with its checkout (cancel, payment), never on its own."""
    hold = await holds.get_hold(session, hold_id)
    if hold.reference is not None and hold.reference.startswith("chk_"):
        raise Conflict(
            f"hold {hold_id} belongs to checkout {hold.reference}; cancel the checkout instead",
            checkout_id=hold.reference,
        )
