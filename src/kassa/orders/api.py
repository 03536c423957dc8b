"""Order endpoints: list, read, audit trail, status changes, cancel, refunds and returns."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy.ext.asyncio import AsyncSession

from kassa.auth.deps import AdminPrincipal
from kassa.carts import service as carts
from kassa.carts.deps import Access
from kassa.deps import ReadSession, WriteSession
from kassa.orders import service
from kassa.orders.models import Order
from kassa.orders.schemas import (
    CancelIn,
    OrderEventOut,
    OrderOut,
    OrderStatus,
    RefundIn,
    RefundOut,
    ReturnIn,
    ReturnOut,
    TransitionIn,
)
from kassa.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor

router = APIRouter(prefix="/v1/orders", tags=["orders"])

OrderId = Annotated[str, Path(max_length=64)]
ReturnId = Annotated[str, Path(max_length=64)]


async def _order_access(session: AsyncSession, access: carts.CartAccess) -> service.OrderAccess:
    cart_id = await carts.cart_for_token(session, access.token)
    return service.OrderAccess(access.principal, frozenset({cart_id} if cart_id else ()))


async def order_out(session: AsyncSession, order: Order, who: service.OrderAccess) -> OrderOut:
    lines = await service.lines_of(session, order, who)
    data = {c.key: getattr(order, c.key) for c in Order.__table__.columns}
    data["lines"] = [
        {
            "sku": line.sku,
            "name": line.name,
            "quantity": line.quantity,
            "unit_price_amount": line.unit_price_amount,
            "line_amount": line.line_amount,
            "vendor_id": line.vendor_id,
            "returned_quantity": line.returned_quantity,
        }
        for line in lines
    ]
    return OrderOut.model_validate(data)


@router.get("", response_model=Page[OrderOut])
async def list_orders(
    access: Access,
    session: ReadSession,
    status: Annotated[OrderStatus | None, Query()] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[OrderOut]:
    """Your orders; a vendor's: also those with its lines; an admin's: all (filter ?status=)."""
    who = await _order_access(session, access)
    found = await service.list_orders(
        session, who, status=status, limit=limit + 1, after=decode_cursor(cursor)
    )
    page = found[:limit]
    return Page(
        data=[await order_out(session, order, who) for order in page],
        next_cursor=encode_cursor(page[-1].id) if len(found) > limit else None,
    )


@router.get("/{order_id}", response_model=OrderOut)
async def get_order(order_id: OrderId, access: Access, session: ReadSession) -> OrderOut:
    who = await _order_access(session, access)
    order = await service.find_order(session, order_id, who)
    return await order_out(session, order, who)


@router.get("/{order_id}/events", response_model=list[OrderEventOut])
async def order_events(
    order_id: OrderId, access: Access, session: ReadSession
) -> list[OrderEventOut]:
    who = await _order_access(session, access)
    order = await service.find_order(session, order_id, who)
    return [
        OrderEventOut.model_validate(event, from_attributes=True)
        for event in await service.events_of(session, order.id)
    ]


@router.post("/{order_id}/transitions", response_model=OrderOut)
async def transition(
    order_id: OrderId, body: TransitionIn, access: Access, session: WriteSession
) -> OrderOut:
    """A validated status change: admins; vendors with lines in the order (processing,
    shipped). Anything the status table does not allow is 409 invalid_transition."""
    who = await _order_access(session, access)
    order = await service.find_order(session, order_id, who, lock=True)
    await service.transition(session, order, body.to, who, note=body.note)
    return await order_out(session, order, who)


@router.post("/{order_id}/cancel", response_model=OrderOut)
async def cancel(
    order_id: OrderId, body: CancelIn, access: Access, session: WriteSession
) -> OrderOut:
    """The buyer while pending or paid, an admin while the status table allows: stock back
    (ledger), refund of what was paid."""
    who = await _order_access(session, access)
    order = await service.find_order(session, order_id, who, lock=True)
    await service.cancel(session, order, who, reason=body.reason)
    return await order_out(session, order, who)


@router.post("/{order_id}/refunds", status_code=201, response_model=RefundOut)
async def refund(
    order_id: OrderId, body: RefundIn, admin: AdminPrincipal, session: WriteSession
) -> RefundOut:
    """Full (no amount) or partial refund through the provider; never beyond what was paid."""
    who = service.OrderAccess(admin)
    order = await service.find_order(session, order_id, who, lock=True)
    made = await service.refund(session, order, who, amount=body.amount, reason=body.reason)
    return RefundOut.model_validate(made, from_attributes=True)


@router.post("/{order_id}/returns", status_code=201, response_model=ReturnOut)
async def request_return(
    order_id: OrderId, body: ReturnIn, access: Access, session: WriteSession
) -> ReturnOut:
    who = await _order_access(session, access)
    order = await service.find_order(session, order_id, who, lock=True)
    made = await service.request_return(
        session,
        order,
        who,
        lines=[service.ReturnLine(line.sku, line.quantity) for line in body.lines],
        reason=body.reason,
    )
    return ReturnOut.model_validate(made, from_attributes=True)


@router.get("/{order_id}/returns", response_model=list[ReturnOut])
async def list_returns(order_id: OrderId, access: Access, session: ReadSession) -> list[ReturnOut]:
    who = await _order_access(session, access)
    order = await service.find_order(session, order_id, who)
    return [
        ReturnOut.model_validate(r, from_attributes=True)
        for r in await service.returns_of(session, order.id)
    ]


@router.post("/{order_id}/returns/{return_id}/receive", response_model=ReturnOut)
async def receive_return(
    order_id: OrderId, return_id: ReturnId, admin: AdminPrincipal, session: WriteSession
) -> ReturnOut:
    """An admin marks the goods received: stock back, refund issued."""
    who = service.OrderAccess(admin)
    order = await service.find_order(session, order_id, who, lock=True)
    made = await service.receive_return(session, order, return_id, who)
    return ReturnOut.model_validate(made, from_attributes=True)
