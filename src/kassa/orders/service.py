"""Orders: created once per paid checkout, moved through one status table, cancelled, refunded
and returned, each step in the order's audit trail.

Refunds are counted on the order and on its payment by conditional UPDATEs guarded by CHECKs,
so that concurrent refunds never add up to more than was paid (promise 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, exists, false, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.auth.principal import Principal
from kassa.errors import Conflict, Forbidden, InvalidInput, NotFound
from kassa.ids import new_id
from kassa.inventory import service as inventory
from kassa.orders.models import Order, OrderEvent, OrderLine, OrderReturn
from kassa.orders.states import (
    BUYER_CANCELS_FROM,
    ORDER,
    ORDER_PAYMENT,
    VENDOR_TARGETS,
    OrderPaymentStatus,
    OrderStatus,
    order_payment_status,
)
from kassa.payments import service as payments
from kassa.payments.models import Refund

FIRST_NUMBER = 1001
NOTE_WIDTH = 1000  # order_events.note
# Core tables for the bulk inserts of lines and events (one statement each).
order_lines = cast(Table, OrderLine.__table__)
order_events = cast(Table, OrderEvent.__table__)


class OrderNotFound(NotFound):
    title = "Order not found"


class ReturnNotFound(NotFound):
    title = "Return not found"


def check_transition(current: str, target: str) -> None:
    ORDER.check(current, target)


@dataclass(frozen=True)
class OrderAccess:
    """Who asks: the signed-in caller and/or a cart token (a guest following a purchase)."""

    principal: Principal | None
    cart_ids: frozenset[str] = frozenset()

    @property
    def actor(self) -> str:
        return self.principal.user_id if self.principal else "guest"


@dataclass(frozen=True)
class NewOrder:
    checkout_id: str
    cart_id: str
    user_id: str | None
    payment_id: str
    email: str
    currency: str
    lines: Sequence[dict[str, Any]]
    subtotal_amount: int
    discount_amount: int
    shipping_amount: int
    tax_amount: int
    total_amount: int
    shipping_address: dict[str, Any]


async def create_order(session: AsyncSession, new: NewOrder, *, actor: str) -> Order:
    """The one order of a paid checkout (the unique checkout_id makes it one). On the query
    budget: the order, its lines and its first events are three statements."""
    # Born pending and paid at once: both moves go through their tables.
    ORDER.check(OrderStatus.PENDING, OrderStatus.PAID)
    ORDER_PAYMENT.check(OrderPaymentStatus.UNPAID, OrderPaymentStatus.PAID)
    now = clock.now()
    order = Order(
        id=new_id("ord"),
        checkout_id=new.checkout_id,
        cart_id=new.cart_id,
        user_id=new.user_id,
        payment_id=new.payment_id,
        status=OrderStatus.PAID,
        payment_status=OrderPaymentStatus.PAID,
        email=new.email,
        currency=new.currency,
        subtotal_amount=new.subtotal_amount,
        discount_amount=new.discount_amount,
        shipping_amount=new.shipping_amount,
        tax_amount=new.tax_amount,
        total_amount=new.total_amount,
        refunded_amount=0,
        shipping_address=new.shipping_address,
        created_at=now,
        updated_at=now,
    )
    conn = await session.connection()
    if conn.dialect.name != "postgresql":
        # SQLite has no sequences; its single writer makes max + 1 safe inside the insert.
        order.number = select(
            func.coalesce(func.max(Order.number), FIRST_NUMBER - 1) + 1
        ).scalar_subquery()
    session.add(order)
    await session.flush()
    await session.execute(
        insert(order_lines),
        [
            {
                "order_id": order.id,
                "sku": line["sku"],
                "name": line["name"],
                "vendor_id": line.get("vendor_id"),
                "quantity": line["quantity"],
                "unit_price_amount": line["unit_price_amount"],
                "line_amount": line["line_amount"],
                "returned_quantity": 0,
            }
            for line in new.lines
        ],
    )
    created = {"order_id": order.id, "actor": actor, "note": None, "created_at": now}
    await session.execute(
        insert(order_events),
        [
            {
                **created,
                "kind": "created",
                "from_status": None,
                "to_status": OrderStatus.PENDING,
                "data": None,
            },
            {
                **created,
                "kind": "status_changed",
                "from_status": OrderStatus.PENDING,
                "to_status": OrderStatus.PAID,
                "data": {"payment_id": new.payment_id, "amount": new.total_amount},
            },
        ],
    )
    return order


def _event(
    session: AsyncSession,
    order: Order,
    kind: str,
    actor: str,
    *,
    from_status: str | None = None,
    to_status: str | None = None,
    note: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    session.add(
        OrderEvent(
            order_id=order.id,
            kind=kind,
            from_status=from_status,
            to_status=to_status,
            actor=actor,
            # A note may grow past the column (a 1,000-character cancel reason, prefixed).
            note=None if note is None else note[:NOTE_WIDTH],
            data=data,
            created_at=clock.now(),
        )
    )


async def record_event(
    session: AsyncSession, order: Order, kind: str, actor: str, **data: Any
) -> None:
    _event(session, order, kind, actor, data=data or None)
    await session.flush()


def _visible(access: OrderAccess) -> ColumnElement[bool] | None:
    """None: sees everything (admin)."""
    principal = access.principal
    if principal is not None and principal.is_admin:
        return None
    conditions: list[ColumnElement[bool]] = []
    if principal is not None:
        conditions.append(Order.user_id == principal.user_id)
        if principal.role == "vendor":
            conditions.append(
                exists().where(
                    OrderLine.order_id == Order.id, OrderLine.vendor_id == principal.user_id
                )
            )
    if access.cart_ids:
        conditions.append(Order.cart_id.in_(sorted(access.cart_ids)))
    return or_(*conditions) if conditions else false()


async def list_orders(
    session: AsyncSession,
    access: OrderAccess,
    *,
    status: str | None,
    limit: int,
    after: str | None,
) -> list[Order]:
    query = select(Order).order_by(Order.id.desc()).limit(limit)
    visible = _visible(access)
    if visible is not None:
        query = query.where(visible)
    if status is not None:
        query = query.where(Order.status == status)
    if after is not None:
        query = query.where(Order.id < after)
    return list((await session.execute(query)).scalars())


async def find_order(
    session: AsyncSession, order_id: str, access: OrderAccess, *, lock: bool = False
) -> Order:
    """The order if the caller may see it; anyone else's order is a 404 like a missing one."""
    query = select(Order).where(Order.id == order_id)
    visible = _visible(access)
    if visible is not None:
        query = query.where(visible)
    order = await session.scalar(query)
    if order is None:
        raise OrderNotFound(f"no order {order_id}")
    if lock:
        conn = await session.connection()
        if conn.dialect.name == "postgresql":
            await session.execute(select(Order.id).where(Order.id == order_id).with_for_update())
        await session.refresh(order)
    return order


async def get_order(session: AsyncSession, order_id: str) -> Order:
    order = await session.get(Order, order_id)
    if order is None:
        raise OrderNotFound(f"no order {order_id}")
    return order


async def lock_order(session: AsyncSession, order_id: str) -> None:
    """Lock the order row (PostgreSQL; SQLite's writer lock covers it already)."""
    if (await session.connection()).dialect.name == "postgresql":
        await session.execute(select(Order.id).where(Order.id == order_id).with_for_update())


async def order_for_checkout(session: AsyncSession, checkout_id: str) -> Order | None:
    return await session.scalar(select(Order).where(Order.checkout_id == checkout_id))


async def lines_of(session: AsyncSession, order: Order, access: OrderAccess) -> list[OrderLine]:
    """The order's lines; a vendor who does not own the order sees only its own lines."""
    query = select(OrderLine).where(OrderLine.order_id == order.id).order_by(OrderLine.id)
    principal = access.principal
    if principal is not None and principal.role == "vendor" and order.user_id != principal.user_id:
        query = query.where(OrderLine.vendor_id == principal.user_id)
    return list((await session.execute(query)).scalars())


async def events_of(session: AsyncSession, order_id: str) -> list[OrderEvent]:
    result = await session.execute(
        select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.id)
    )
    return list(result.scalars())


def _is_buyer(order: Order, access: OrderAccess) -> bool:
    principal = access.principal
    if principal is not None and order.user_id is not None and principal.user_id == order.user_id:
        return True
    return order.cart_id in access.cart_ids


def _is_vendor_of(principal: Principal, lines: Sequence[OrderLine]) -> bool:
    return principal.role == "vendor" and any(line.vendor_id == principal.user_id for line in lines)


async def transition(
    session: AsyncSession, order: Order, target: str, access: OrderAccess, *, note: str | None
) -> Order:
    """A validated status change by an admin, or by a vendor for its lines (processing,
    shipped). Cancelling goes through `cancel` (stock and money follow)."""
    principal = access.principal
    if principal is None:
        raise Forbidden("only the shop changes an order's status")
    if target == OrderStatus.CANCELLED:
        return await cancel(session, order, access, reason=note or "cancelled")
    if target == OrderStatus.RETURNED:
        # Goods and money follow a return only through the returns flow.
        raise Conflict(
            "an order becomes returned when an admin marks its returned goods received "
            "(POST /v1/orders/{id}/returns, then .../receive)"
        )
    if not principal.is_admin:
        lines = await lines_of(session, order, access)
        if not (_is_vendor_of(principal, lines) and target in VENDOR_TARGETS):
            raise Forbidden("a vendor may move an order with its lines to processing or shipped")
    check_transition(order.status, target)
    await _set_status(session, order, target, access.actor, note=note)
    return order


async def _set_status(
    session: AsyncSession, order: Order, target: str, actor: str, *, note: str | None = None
) -> None:
    previous = order.status
    now = clock.now()
    result = await session.execute(
        update(Order)
        .where(Order.id == order.id, Order.status == previous)
        .values(status=target, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"order {order.id} changed meanwhile; read it again")
    order.status = target
    order.updated_at = now
    _event(
        session, order, "status_changed", actor, from_status=previous, to_status=target, note=note
    )
    await session.flush()


async def cancel(session: AsyncSession, order: Order, access: OrderAccess, *, reason: str) -> Order:
    """Cancel: stock back through the ledger, refund of what was paid and not yet refunded."""
    principal = access.principal
    is_admin = principal is not None and principal.is_admin
    if not is_admin:
        if not _is_buyer(order, access):
            raise Forbidden("only the buyer or the shop may cancel an order")
        if order.status not in BUYER_CANCELS_FROM and ORDER.allows(
            order.status, OrderStatus.CANCELLED
        ):
            raise Forbidden(f"an order that is {order.status} can be cancelled by the shop only")
    check_transition(order.status, OrderStatus.CANCELLED)
    await _set_status(session, order, OrderStatus.CANCELLED, access.actor, note=reason)
    lines = list(
        (await session.execute(select(OrderLine).where(OrderLine.order_id == order.id))).scalars()
    )
    await inventory.put_back(
        session,
        [(line.sku, line.quantity - line.returned_quantity) for line in lines],
        reference_type="order",
        reference_id=order.id,
        reason=f"order {order.number} cancelled",
        actor_id=principal.user_id if principal else None,
    )
    left = order.total_amount - order.refunded_amount
    if left > 0:
        await refund(session, order, access, amount=left, reason=f"order cancelled: {reason}")
    return order


async def refund(
    session: AsyncSession,
    order: Order,
    access: OrderAccess,
    *,
    amount: int | None,
    reason: str,
) -> Refund:
    """Refund `amount` (default: all that is left) through the provider."""
    left = order.total_amount - order.refunded_amount
    wanted = left if amount is None else amount
    if wanted <= 0:
        raise InvalidInput("amount", "nothing is left to refund" if left == 0 else "must be > 0")
    result = await session.execute(
        update(Order)
        .where(Order.id == order.id, Order.refunded_amount + wanted <= Order.total_amount)
        .values(refunded_amount=Order.refunded_amount + wanted, updated_at=clock.now())
        .returning(Order.refunded_amount)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    if row is None:
        await session.refresh(order)
        raise InvalidInput(
            "amount",
            f"at most {order.total_amount - order.refunded_amount} can still be refunded",
        )
    order.refunded_amount = int(row[0])
    target = order_payment_status(order.total_amount, order.refunded_amount)
    ORDER_PAYMENT.check(order.payment_status, target)
    order.payment_status = target
    payment = await payments.get_payment(session, order.payment_id)
    made = await payments.create_refund(
        session, payment, amount=wanted, reason=reason, order_id=order.id
    )
    _event(
        session,
        order,
        "refund_created",
        access.actor,
        note=reason,
        data={"refund_id": made.id, "amount": wanted},
    )
    await session.flush()
    return made


@dataclass(frozen=True)
class ReturnLine:
    sku: str
    quantity: int


async def request_return(
    session: AsyncSession,
    order: Order,
    access: OrderAccess,
    *,
    lines: Sequence[ReturnLine],
    reason: str,
) -> OrderReturn:
    principal = access.principal
    is_admin = principal is not None and principal.is_admin
    if not is_admin and not _is_buyer(order, access):
        raise Forbidden("only the buyer or the shop may ask for a return")
    if order.status != OrderStatus.DELIVERED:
        raise Conflict(f"an order that is {order.status} cannot be returned (only delivered)")
    ordered = {
        line.sku: line.quantity - line.returned_quantity
        for line in (
            await session.execute(select(OrderLine).where(OrderLine.order_id == order.id))
        ).scalars()
    }
    pending = await _requested_quantities(session, order.id)
    wanted: dict[str, int] = {}
    for line in lines:
        wanted[line.sku] = wanted.get(line.sku, 0) + line.quantity
    for sku, quantity in wanted.items():
        if sku not in ordered:
            raise InvalidInput("lines", f"{sku} is not in this order")
        if quantity > ordered[sku] - pending.get(sku, 0):
            raise InvalidInput(
                "lines", f"at most {ordered[sku] - pending.get(sku, 0)} of {sku} can be returned"
            )
    made = OrderReturn(
        id=new_id("ret"),
        order_id=order.id,
        lines=[{"sku": s, "quantity": q} for s, q in sorted(wanted.items())],
        reason=reason,
        status="requested",
        requested_by=access.actor,
        created_at=clock.now(),
    )
    session.add(made)
    _event(
        session,
        order,
        "return_requested",
        access.actor,
        note=reason,
        data={"return_id": made.id, "lines": made.lines},
    )
    await session.flush()
    return made


async def _requested_quantities(session: AsyncSession, order_id: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    result = await session.execute(
        select(OrderReturn.lines).where(
            OrderReturn.order_id == order_id, OrderReturn.status == "requested"
        )
    )
    for (lines,) in result:
        for line in lines:
            totals[line["sku"]] = totals.get(line["sku"], 0) + int(line["quantity"])
    return totals


async def receive_return(
    session: AsyncSession, order: Order, return_id: str, access: OrderAccess
) -> OrderReturn:
    """An admin marks a return received: stock back, the lines' amounts refunded; once every
    unit has come back the order is `returned`. Receiving twice changes nothing."""
    made = await session.get(OrderReturn, return_id)
    if made is None or made.order_id != order.id:
        raise ReturnNotFound(f"no return {return_id} for order {order.id}")
    if made.status == "received":
        return made
    result = await session.execute(
        update(OrderReturn)
        .where(OrderReturn.id == made.id, OrderReturn.status == "requested")
        .values(status="received", received_at=clock.now())
        .execution_options(synchronize_session=False)
    )
    await session.refresh(made)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return made  # received by a concurrent request
    by_sku = {
        line.sku: line
        for line in (
            await session.execute(select(OrderLine).where(OrderLine.order_id == order.id))
        ).scalars()
    }
    goods = 0
    for line in made.lines:
        target = by_sku[line["sku"]]
        target.returned_quantity += int(line["quantity"])
        goods += target.unit_price_amount * int(line["quantity"])
    amount = paid_share(order, goods)
    await inventory.put_back(
        session,
        [(line["sku"], int(line["quantity"])) for line in made.lines],
        reference_type="return",
        reference_id=made.id,
        reason=f"return {made.id} of order {order.number}",
        actor_id=access.principal.user_id if access.principal else None,
    )
    _event(session, order, "return_received", access.actor, data={"return_id": made.id})
    refundable = min(amount, order.total_amount - order.refunded_amount)
    if refundable > 0:
        issued = await refund(session, order, access, amount=refundable, reason=f"return {made.id}")
        made.refund_id = issued.id
    if order.status == OrderStatus.DELIVERED and all(
        line.returned_quantity == line.quantity for line in by_sku.values()
    ):
        check_transition(order.status, OrderStatus.RETURNED)
        await _set_status(
            session, order, OrderStatus.RETURNED, access.actor, note="every unit came back"
        )
    await session.flush()
    return made


def paid_share(order: Order, goods_amount: int) -> int:
    """What the buyer paid for `goods_amount` worth of the order's goods (at list price): their
    part of the discounted subtotal plus the tax on it. Shipping is not refunded by a return.
    Exact integer arithmetic, rounded down (a return never refunds a unit more than paid)."""
    if order.subtotal_amount == 0:
        return 0
    discounted = order.subtotal_amount - order.discount_amount
    taxable = discounted + order.shipping_amount
    goods_tax_numerator = order.tax_amount * discounted  # tax on goods = this / taxable
    if taxable == 0:
        return 0
    paid_for_goods_times_taxable = discounted * taxable + goods_tax_numerator
    return (goods_amount * paid_for_goods_times_taxable) // (order.subtotal_amount * taxable)


async def returns_of(session: AsyncSession, order_id: str) -> list[OrderReturn]:
    result = await session.execute(
        select(OrderReturn).where(OrderReturn.order_id == order_id).order_by(OrderReturn.id)
    )
    return list(result.scalars())


async def refund_failed(session: AsyncSession, refund: Refund) -> None:
    """The provider refused one of this order's refunds: it never counts as refunded."""
    order = await get_order(session, str(refund.order_id))
    result = await session.execute(
        update(Order)
        .where(Order.id == order.id, Order.refunded_amount >= refund.amount)
        .values(refunded_amount=Order.refunded_amount - refund.amount, updated_at=clock.now())
        .returning(Order.refunded_amount)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    if row is None:
        raise Conflict(f"order {order.id} does not count refund {refund.id}")
    order.refunded_amount = int(row[0])
    target = order_payment_status(order.total_amount, order.refunded_amount)
    ORDER_PAYMENT.check(order.payment_status, target)
    order.payment_status = target
    _event(
        session,
        order,
        "refund_failed",
        "provider",
        data={"refund_id": refund.id, "amount": refund.amount, "failure_code": refund.failure_code},
    )
    await session.flush()
