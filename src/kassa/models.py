"""Every table, imported in one place so Alembic and `create_all` see the whole schema."""

from kassa.auth.models import User
from kassa.carts.models import Cart, CartItem
from kassa.catalog.models import Product, Variant
from kassa.checkout.models import Checkout, CheckoutPhase, Coupon, ShippingRate, TaxRate
from kassa.db import Base
from kassa.inventory.models import Hold, HoldLine, StockLevel, StockMovement
from kassa.ops.models import IdempotencyRecord, JobRun
from kassa.orders.models import Order, OrderEvent, OrderLine, OrderReturn
from kassa.outbox.models import OutboxMessage
from kassa.payments.models import (
    Payment,
    Refund,
    SandboxCharge,
    WebhookEvent,
    WebhookReceipt,
)

__all__ = [
    "Base",
    "Cart",
    "CartItem",
    "Checkout",
    "CheckoutPhase",
    "Coupon",
    "Hold",
    "HoldLine",
    "IdempotencyRecord",
    "JobRun",
    "Order",
    "OrderEvent",
    "OrderLine",
    "OrderReturn",
    "OutboxMessage",
    "Payment",
    "Product",
    "Refund",
    "SandboxCharge",
    "ShippingRate",
    "StockLevel",
    "StockMovement",
    "TaxRate",
    "User",
    "Variant",
    "WebhookEvent",
    "WebhookReceipt",
]
