"""The demo catalog that `kassa seed --demo` (and `make run` on an empty database) loads."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from kassa.auth.principal import Principal
from kassa.catalog import service as catalog
from kassa.catalog.models import Product
from kassa.catalog.schemas import ProductCreate, VariantCreate
from kassa.checkout import rates
from kassa.checkout.models import ShippingRate

DEMO_PRODUCTS = [
    (
        "Kassa Tee",
        "kassa-tee",
        "Organic cotton T-shirt with the Kassa logo.",
        [
            ("TEE-BLK-S", "Black / S", 2500, 40),
            ("TEE-BLK-M", "Black / M", 2500, 60),
            ("TEE-BLK-L", "Black / L", 2500, 3),
        ],
    ),
    (
        "Pour-over Coffee Kit",
        "pour-over-kit",
        "Dripper, filters and a 250 g bag of beans.",
        [("KIT-POUR", "Standard", 4900, 15)],
    ),
    (
        "Last-unit Lamp",
        "last-unit-lamp",
        "Exactly one in stock: try to oversell it.",
        [("LAMP-1", "Brass", 12900, 1)],
    ),
    ("Sticker Pack", "sticker-pack", "Ten vinyl stickers.", [("STK-10", "Pack of 10", 500, 500)]),
]


# Shipping (amount, free from) and tax (basis points) for the demo, so a checkout works at once.
DEMO_RATES = [
    ("us", 500, 5000, 800),
    ("gb", 700, 6000, 2000),
    ("de", 600, 6000, 1900),
    ("in", 400, 4000, 1800),
]


async def seed_rates(session: AsyncSession, *, currency: str) -> int:
    """Demo shipping and tax rates (shipping in `currency`), unless some shipping rate exists
    already."""
    if await session.scalar(select(func.count()).select_from(ShippingRate)):
        return 0
    for country, amount, free_above, basis_points in DEMO_RATES:
        await rates.set_shipping_rate(
            session,
            country=country,
            currency=currency,
            amount=amount,
            free_above_amount=free_above,
        )
        await rates.set_tax_rate(session, country=country, basis_points=basis_points)
    return len(DEMO_RATES)


async def catalog_is_empty(session: AsyncSession) -> bool:
    return not await session.scalar(select(func.count()).select_from(Product))


async def seed_demo(session: AsyncSession, *, currency: str) -> int:
    """Add the demo products that are not there yet; returns how many were added."""
    system = Principal(user_id="system", role="admin")
    added = 0
    for name, slug, description, variants in DEMO_PRODUCTS:
        if await session.scalar(select(Product.id).where(Product.slug == slug)):
            continue
        data = ProductCreate(
            name=name,
            slug=slug,
            description=description,
            variants=[
                VariantCreate(
                    sku=sku, name=vname, price_amount=price, on_hand=on_hand, low_stock_threshold=5
                )
                for sku, vname, price, on_hand in variants
            ],
        )
        await catalog.create_product(session, data, creator=system, default_currency=currency)
        added += 1
    return added
