"""Carts: create, read with prices and availability, change items, merge at sign-in.

Every change first bumps the cart's version in one UPDATE that also takes the cart row's lock, so
concurrent changes of one cart queue and none is lost; a caller that sends the version it last
saw (`expected_version`) gets 409 when the cart changed since, and can reload and retry.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, delete, false, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.auth.principal import Principal
from kassa.carts.models import Cart, CartItem
from kassa.catalog import service as catalog
from kassa.errors import Conflict, InvalidInput, KassaError, NotFound
from kassa.ids import new_id
from kassa.inventory import service as inventory

MAX_QUANTITY = 1000


class CartNotFound(NotFound):
    title = "Cart not found"


class CartItemNotFound(NotFound):
    title = "Cart item not found"


class CartChanged(Conflict):
    title = "The cart changed since you last read it"


class CartClosed(Conflict):
    title = "The cart is closed"


class CartLocked(KassaError):
    status, code, title = 409, "cart_locked", "The cart has an open checkout"


class NotEnoughStock(KassaError):
    status, code, title = 409, "insufficient_stock", "Not enough stock"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class CartAccess:
    """Who asks: the signed-in caller and/or the cart token they hold."""

    principal: Principal | None
    token: str | None


@dataclass(frozen=True)
class ItemView:
    id: str
    sku: str
    name: str
    quantity: int
    unit_price_amount: int
    line_amount: int
    available: int


@dataclass(frozen=True)
class CartView:
    id: str
    token: str | None
    state: str
    currency: str
    version: int
    items: list[ItemView]
    subtotal_amount: int


async def create_cart(
    session: AsyncSession, *, principal: Principal | None, currency: str
) -> tuple[CartView, bool]:
    """A new cart, or the signed-in caller's open one. Returns (cart, created)."""
    if principal is not None:
        existing = await _open_cart_of(session, principal.user_id)
        if existing is not None:
            return await view(session, existing), False
    token = secrets.token_urlsafe(32)
    now = clock.now()
    cart = Cart(
        id=new_id("cart"),
        token_hash=hash_token(token),
        currency=currency,
        state="open",
        user_id=principal.user_id if principal else None,
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(cart)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        # The same user created a cart at the same moment: theirs is the one.
        assert principal is not None
        existing = await _open_cart_of(session, principal.user_id)
        if existing is None:
            raise
        return await view(session, existing), False
    return await view(session, cart, token=token), True


async def _open_cart_of(session: AsyncSession, user_id: str) -> Cart | None:
    result = await session.execute(
        select(Cart).where(Cart.user_id == user_id, Cart.state == "open")
    )
    return result.scalar_one_or_none()


async def find_cart(session: AsyncSession, cart_id: str, access: CartAccess) -> Cart:
    """The cart if the caller may see it; someone else's cart is a 404 like a missing one."""
    cart = await session.get(Cart, cart_id)
    if cart is None or not _may_access(cart, access):
        raise CartNotFound(f"no cart {cart_id}")
    return cart


async def token_opens(session: AsyncSession, cart_id: str, token: str | None) -> bool:
    """Does this cart token grant access to the cart (and what was bought from it)?"""
    if token is None:
        return False
    token_hash = await session.scalar(select(Cart.token_hash).where(Cart.id == cart_id))
    return token_hash is not None and secrets.compare_digest(token_hash, hash_token(token))


async def cart_for_token(session: AsyncSession, token: str | None) -> str | None:
    """The id of the cart this token opens, if any."""
    if token is None:
        return None
    return await session.scalar(select(Cart.id).where(Cart.token_hash == hash_token(token)))


def _may_access(cart: Cart, access: CartAccess) -> bool:
    if access.principal is not None and (
        access.principal.is_admin or cart.user_id == access.principal.user_id
    ):
        return True
    return access.token is not None and secrets.compare_digest(
        cart.token_hash, hash_token(access.token)
    )


async def _begin_change(session: AsyncSession, cart: Cart, expected_version: int | None) -> None:
    """Lock the cart row and bump its version (see the module doc)."""
    now = clock.now()
    conditions = [Cart.id == cart.id, Cart.state == "open", _unlocked(now)]
    if expected_version is not None:
        conditions.append(Cart.version == expected_version)
    result = await session.execute(
        update(Cart)
        .where(*conditions)
        # A lapsed checkout lock goes with the change: the cart is the buyer's again, and a
        # late payment for that checkout no longer closes it. `locked_by_checkout` stays, so
        # that the next checkout of the cart knows to end that one first.
        .values(version=Cart.version + 1, updated_at=now, locked_until=None)
        .returning(Cart.version)
        .execution_options(synchronize_session=False)
    )
    if result.first() is None:
        await session.refresh(cart)
        _refuse_change(cart, now)
        raise CartChanged(
            f"cart {cart.id} is at version {cart.version}, not {expected_version}",
            version=cart.version,
        )
    await session.refresh(cart)


def _unlocked(now: datetime) -> ColumnElement[bool]:
    # A checkout's lock lapses by itself when its time is up, swept or not.
    return or_(Cart.locked_until.is_(None), Cart.locked_until <= now)


def _refuse_change(cart: Cart, now: datetime) -> None:
    if cart.state != "open":
        raise CartClosed(f"cart {cart.id} is {cart.state}")
    if cart.locked_until is not None and cart.locked_until > now:
        raise CartLocked(
            f"cart {cart.id} has an open checkout; cancel it or let it expire to change the cart",
            checkout_id=cart.locked_by_checkout,
        )


@dataclass(frozen=True)
class LockedCart:
    id: str
    user_id: str | None
    currency: str
    # The cart was still locked by a checkout whose time is up (not yet swept).
    had_lapsed_lock: bool


def _access_condition(access: CartAccess) -> ColumnElement[bool]:
    principal = access.principal
    if principal is not None and principal.is_admin:
        return true()
    conditions: list[ColumnElement[bool]] = []
    if principal is not None:
        conditions.append(Cart.user_id == principal.user_id)
    if access.token is not None:
        conditions.append(Cart.token_hash == hash_token(access.token))
    return or_(*conditions) if conditions else false()


async def lock_for_checkout(
    session: AsyncSession, cart_id: str, access: CartAccess, *, checkout_id: str, until: datetime
) -> LockedCart | str:
    """Lock the cart for a new checkout: changes get 409 cart_locked until `until`.

    One UPDATE (the cart row's lock is the first lock a checkout takes) that also checks who
    asks. Returns the locked cart, or the id of the open checkout that holds the cart; raises
    CartNotFound or CartClosed."""
    now = clock.now()
    for lapsed in (False, True):
        # Never locked (or cleanly unlocked), else a lock whose time is up or that a change of
        # the cart dropped: its checkout may still be open, unswept.
        free = _unlocked(now) if lapsed else Cart.locked_by_checkout.is_(None)
        result = await session.execute(
            update(Cart)
            .where(Cart.id == cart_id, Cart.state == "open", free, _access_condition(access))
            .values(
                version=Cart.version + 1,
                locked_by_checkout=checkout_id,
                locked_until=until,
                updated_at=now,
            )
            .returning(Cart.id, Cart.user_id, Cart.currency)
            .execution_options(synchronize_session=False)
        )
        row = result.first()
        if row is not None:
            return LockedCart(row.id, row.user_id, row.currency, had_lapsed_lock=lapsed)
    cart = await find_cart(session, cart_id, access)
    await session.refresh(cart)
    if cart.state != "open":
        raise CartClosed(f"cart {cart.id} is {cart.state}")
    return cart.locked_by_checkout or ""


async def extend_lock(
    session: AsyncSession, cart_id: str, checkout_id: str, until: datetime
) -> None:
    await session.execute(
        update(Cart)
        .where(Cart.id == cart_id, Cart.locked_by_checkout == checkout_id)
        .values(locked_until=until)
        .execution_options(synchronize_session=False)
    )


async def unlock(
    session: AsyncSession, cart_id: str, checkout_id: str, *, close: bool = False
) -> None:
    """The checkout ended: free the cart (or close it, once the checkout became an order).
    A cart that another checkout has locked since, or (when closing) that the buyer changed
    after this checkout's lock lapsed, is left as it is."""
    values: dict[str, object] = {"locked_by_checkout": None, "locked_until": None}
    conditions = [Cart.id == cart_id, Cart.locked_by_checkout == checkout_id]
    if close:
        values["state"] = "closed"
        conditions.append(Cart.locked_until.is_not(None))
    await session.execute(
        update(Cart)
        .where(*conditions)
        .values(updated_at=clock.now(), **values)
        .execution_options(synchronize_session=False)
    )


async def remember_prices(session: AsyncSession, cart_id: str, prices: dict[str, int]) -> None:
    """The buyer has now seen these unit prices (after a 409 price_changed)."""
    for sku, amount in prices.items():
        await session.execute(
            update(CartItem)
            .where(CartItem.cart_id == cart_id, CartItem.sku == sku)
            .values(seen_unit_price_amount=amount)
            .execution_options(synchronize_session=False)
        )


async def add_item(
    session: AsyncSession,
    cart: Cart,
    *,
    sku: str,
    quantity: int,
    expected_version: int | None = None,
) -> CartView:
    await _begin_change(session, cart, expected_version)
    current = await session.scalar(
        select(CartItem).where(CartItem.cart_id == cart.id, CartItem.sku == sku)
    )
    wanted = quantity + (current.quantity if current else 0)
    price = await _check_buyable(session, cart, sku, wanted)
    if current is None:
        session.add(
            CartItem(
                id=new_id("item"),
                cart_id=cart.id,
                sku=sku,
                quantity=wanted,
                seen_unit_price_amount=price,
                created_at=clock.now(),
            )
        )
    else:
        current.quantity = wanted
        current.seen_unit_price_amount = price
    await session.flush()
    return await view(session, cart)


async def set_quantity(
    session: AsyncSession,
    cart: Cart,
    item_id: str,
    *,
    quantity: int,
    expected_version: int | None = None,
) -> CartView:
    await _begin_change(session, cart, expected_version)
    item = await _item(session, cart, item_id)
    item.seen_unit_price_amount = await _check_buyable(session, cart, item.sku, quantity)
    item.quantity = quantity
    await session.flush()
    return await view(session, cart)


async def remove_item(
    session: AsyncSession, cart: Cart, item_id: str, *, expected_version: int | None = None
) -> CartView:
    await _begin_change(session, cart, expected_version)
    await session.delete(await _item(session, cart, item_id))
    await session.flush()
    return await view(session, cart)


async def clear(
    session: AsyncSession, cart: Cart, *, expected_version: int | None = None
) -> CartView:
    await _begin_change(session, cart, expected_version)
    await session.execute(delete(CartItem).where(CartItem.cart_id == cart.id))
    return await view(session, cart)


async def merge(session: AsyncSession, cart: Cart, *, anonymous_token: str) -> CartView:
    """Move an anonymous cart's lines into `cart` (quantities add, capped at what is available
    and at the per-line maximum) and close the anonymous cart."""
    source = await session.scalar(
        select(Cart).where(Cart.token_hash == hash_token(anonymous_token), Cart.state == "open")
    )
    if source is None or source.id == cart.id or source.user_id is not None:
        raise CartNotFound("no open anonymous cart with that token")
    # Both rows are locked in id order, like stock rows in SKU order.
    first, second = sorted([cart, source], key=lambda c: c.id)
    await _begin_change(session, first, None)
    await _begin_change(session, second, None)
    mine = {i.sku: i for i in await _items(session, cart.id)}
    theirs = await _items(session, source.id)
    levels = await inventory.stock_for_skus(session, [i.sku for i in theirs])
    for item in theirs:
        level = levels.get(item.sku)
        target = mine.get(item.sku)
        total = item.quantity + (target.quantity if target else 0)
        capped = min(total, MAX_QUANTITY, level.available if level else 0)
        if target is not None:
            target.quantity = max(capped, target.quantity)
        elif capped > 0:
            session.add(
                CartItem(
                    id=new_id("item"),
                    cart_id=cart.id,
                    sku=item.sku,
                    quantity=capped,
                    seen_unit_price_amount=item.seen_unit_price_amount,
                    created_at=clock.now(),
                )
            )
    await session.execute(delete(CartItem).where(CartItem.cart_id == source.id))
    source.state = "closed"
    await session.flush()
    return await view(session, cart)


async def _item(session: AsyncSession, cart: Cart, item_id: str) -> CartItem:
    item = await session.get(CartItem, item_id)
    if item is None or item.cart_id != cart.id:
        raise CartItemNotFound(f"no item {item_id} in cart {cart.id}")
    return item


async def _items(session: AsyncSession, cart_id: str) -> list[CartItem]:
    result = await session.execute(
        select(CartItem).where(CartItem.cart_id == cart_id).order_by(CartItem.id)
    )
    return list(result.scalars())


async def _check_buyable(session: AsyncSession, cart: Cart, sku: str, quantity: int) -> int:
    """Refuse a line that cannot be bought; returns today's unit price."""
    if quantity > MAX_QUANTITY:
        raise InvalidInput("quantity", f"at most {MAX_QUANTITY} of one SKU per cart")
    offer = (await catalog.for_sale(session, [sku])).get(sku)
    if offer is None or not offer.active:
        raise inventory.SkuNotFound(f"no SKU {sku}")
    if offer.currency != cart.currency:
        raise InvalidInput(
            "sku", f"{sku} is sold in {offer.currency}, the cart is in {cart.currency}"
        )
    level = (await inventory.stock_for_skus(session, [sku]))[sku]
    if quantity > level.available:
        raise NotEnoughStock(
            f"only {level.available} of {sku} available",
            errors=[{"sku": sku, "requested": quantity, "available": level.available}],
        )
    return offer.price_amount


async def view(session: AsyncSession, cart: Cart, *, token: str | None = None) -> CartView:
    """The cart with today's prices and availability."""
    items = await _items(session, cart.id)
    skus = [i.sku for i in items]
    offers = await catalog.for_sale(session, skus)
    levels = await inventory.stock_for_skus(session, skus)
    lines = []
    for item in items:
        offer = offers.get(item.sku)
        price = offer.price_amount if offer else 0
        level = levels.get(item.sku)
        lines.append(
            ItemView(
                id=item.id,
                sku=item.sku,
                name=offer.name if offer else item.sku,
                quantity=item.quantity,
                unit_price_amount=price,
                line_amount=price * item.quantity,
                available=level.available if level and offer and offer.active else 0,
            )
        )
    return CartView(
        id=cart.id,
        token=token,
        state=cart.state,
        currency=cart.currency,
        version=cart.version,
        items=lines,
        subtotal_amount=sum(line.line_amount for line in lines),
    )
