"""Every table, imported in one place so Alembic and `create_all` see the whole schema."""

from kassa.auth.models import User
from kassa.carts.models import Cart, CartItem
from kassa.catalog.models import Product, Variant
from kassa.checkout.models import Coupon, ShippingRate, TaxRate
from kassa.db import Base
from kassa.inventory.models import Hold, HoldLine, StockLevel, StockMovement
from kassa.ops.models import JobRun

__all__ = [
    "Base",
    "Cart",
    "CartItem",
    "Coupon",
    "Hold",
    "HoldLine",
    "JobRun",
    "Product",
    "ShippingRate",
    "StockLevel",
    "StockMovement",
    "TaxRate",
    "User",
    "Variant",
]
