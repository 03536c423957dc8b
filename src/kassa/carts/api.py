"""Cart endpoints. Anonymous callers present the cart token (`X-Cart-Token` or the `kassa_cart`
cookie); signed-in callers their access token."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Response

from kassa.auth.deps import CurrentPrincipal, OptionalPrincipal
from kassa.carts import service
from kassa.carts.deps import CART_COOKIE, Access
from kassa.carts.schemas import CartOut, ItemAdd, ItemUpdate, MergeIn
from kassa.deps import AppSettings, ReadSession, WriteSession

router = APIRouter(prefix="/v1/carts", tags=["carts"])

CartId = Annotated[str, Path(max_length=64)]
ItemId = Annotated[str, Path(max_length=64)]


def cart_out(cart: service.CartView) -> CartOut:
    return CartOut.model_validate(asdict(cart))


@router.post("", status_code=201, response_model=CartOut)
async def create_cart(
    response: Response,
    principal: OptionalPrincipal,
    session: WriteSession,
    settings: AppSettings,
) -> CartOut:
    cart, created = await service.create_cart(
        session, principal=principal, currency=settings.currency
    )
    if not created:
        response.status_code = 200
    if cart.token is not None and principal is None:
        response.set_cookie(
            CART_COOKIE,
            cart.token,
            httponly=True,
            samesite="lax",
            secure=settings.is_production,
            max_age=30 * 86_400,
        )
    return cart_out(cart)


@router.get("/{cart_id}", response_model=CartOut)
async def get_cart(cart_id: CartId, access: Access, session: ReadSession) -> CartOut:
    cart = await service.find_cart(session, cart_id, access)
    return cart_out(await service.view(session, cart))


@router.post("/{cart_id}/items", response_model=CartOut)
async def add_item(
    cart_id: CartId, body: ItemAdd, access: Access, session: WriteSession
) -> CartOut:
    cart = await service.find_cart(session, cart_id, access)
    view = await service.add_item(
        session, cart, sku=body.sku, quantity=body.quantity, expected_version=body.version
    )
    return cart_out(view)


@router.patch("/{cart_id}/items/{item_id}", response_model=CartOut)
async def update_item(
    cart_id: CartId, item_id: ItemId, body: ItemUpdate, access: Access, session: WriteSession
) -> CartOut:
    cart = await service.find_cart(session, cart_id, access)
    view = await service.set_quantity(
        session, cart, item_id, quantity=body.quantity, expected_version=body.version
    )
    return cart_out(view)


@router.delete("/{cart_id}/items/{item_id}", response_model=CartOut)
async def remove_item(
    cart_id: CartId, item_id: ItemId, access: Access, session: WriteSession
) -> CartOut:
    cart = await service.find_cart(session, cart_id, access)
    return cart_out(await service.remove_item(session, cart, item_id))


@router.delete("/{cart_id}/items", response_model=CartOut)
async def clear_cart(cart_id: CartId, access: Access, session: WriteSession) -> CartOut:
    cart = await service.find_cart(session, cart_id, access)
    return cart_out(await service.clear(session, cart))


@router.post("/{cart_id}/merge", response_model=CartOut)
async def merge_cart(
    cart_id: CartId, body: MergeIn, principal: CurrentPrincipal, session: WriteSession
) -> CartOut:
    cart = await service.find_cart(session, cart_id, service.CartAccess(principal, None))
    return cart_out(await service.merge(session, cart, anonymous_token=body.token))
