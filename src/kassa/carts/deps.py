"""Who asks for a cart (and what was bought from it): the signed-in caller and/or the cart
token from `X-Cart-Token` or the `kassa_cart` cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import Cookie, Depends, Header

from kassa.auth.deps import OptionalPrincipal
from kassa.carts.service import CartAccess

CART_COOKIE = "kassa_cart"


def cart_access(
    principal: OptionalPrincipal,
    x_cart_token: Annotated[str | None, Header(max_length=200)] = None,
    kassa_cart: Annotated[str | None, Cookie(max_length=200)] = None,
) -> CartAccess:
    return CartAccess(principal, x_cart_token or kassa_cart)


Access = Annotated[CartAccess, Depends(cart_access)]
