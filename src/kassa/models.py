"""Every table, imported in one place so Alembic and `create_all` see the whole schema."""

from kassa.auth.models import User
from kassa.carts.models import Cart, CartItem
from kassa.catalog.models import Product, Variant
from kassa.db import Base
from kassa.inventory.models import Hold, HoldLine, StockLevel, StockMovement
from kassa.ops.models import JobRun

__all__ = [
    "Base",
    "Cart",
    "CartItem",
    "Hold",
    "HoldLine",
    "JobRun",
    "Product",
    "StockLevel",
    "StockMovement",
    "User",
    "Variant",
]
