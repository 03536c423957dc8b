"""Products and variants: create, read with availability, change; who may see and manage them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.auth import service as auth_service
from kassa.auth.principal import Principal
from kassa.catalog.models import Product, Variant
from kassa.catalog.schemas import ProductCreate, ProductPatch, VariantOut, VariantPatch
from kassa.errors import Conflict, InvalidInput, NotFound
from kassa.ids import new_id
from kassa.inventory import service as inventory
from kassa.inventory.service import StockView


class ProductNotFound(NotFound):
    title = "Product not found"


class VariantNotFound(NotFound):
    title = "Variant not found"


class DuplicateProduct(Conflict):
    title = "Slug or SKU already in use"


@dataclass
class ProductDetail:
    product: Product
    variants: list[Variant]
    stock: dict[str, StockView]  # by variant id


def can_manage(viewer: Principal | None, product: Product) -> bool:
    return viewer is not None and viewer.owns(product.vendor_id)


def visible_variants(viewer: Principal | None, detail: ProductDetail) -> list[Variant]:
    if can_manage(viewer, detail.product):
        return detail.variants
    return [v for v in detail.variants if v.is_active]


async def create_product(
    session: AsyncSession, data: ProductCreate, *, creator: Principal, default_currency: str
) -> ProductDetail:
    vendor_id = creator.user_id if creator.role == "vendor" else data.vendor_id
    if vendor_id is not None and creator.is_admin:
        vendor = await auth_service.get_user(session, vendor_id)
        if vendor is None or vendor.role != "vendor":
            raise InvalidInput("vendor_id", f"{vendor_id} is not a vendor")
    skus = [v.sku for v in data.variants]
    if len(set(skus)) != len(skus):
        raise DuplicateProduct("the same SKU appears twice in this product")
    await _refuse_duplicates(session, data.slug, skus)

    now = clock.now()
    product = Product(
        id=new_id("prod"),
        slug=data.slug,
        name=data.name,
        description=data.description,
        vendor_id=vendor_id,
        is_active=True,
        created_at=now,
        updated_at=now,
    )
    variants = [
        Variant(
            id=new_id("var"),
            product_id=product.id,
            sku=v.sku,
            name=v.name,
            price_amount=v.price_amount,
            currency=v.currency or default_currency,
            is_active=True,
            created_at=now,
            updated_at=now,
        )
        for v in data.variants
    ]
    session.add(product)
    session.add_all(variants)
    try:
        async with session.begin_nested():
            await session.flush()
    except IntegrityError:
        # Someone else took the slug or a SKU between the check above and this insert.
        raise DuplicateProduct("the slug or one of the SKUs is already in use") from None
    for spec, variant in zip(data.variants, variants, strict=True):
        await inventory.create_stock(
            session,
            variant_id=variant.id,
            sku=variant.sku,
            on_hand=spec.on_hand,
            low_stock_threshold=spec.low_stock_threshold,
            actor_id=creator.user_id,
        )
    stock = await inventory.stock_for_variants(session, [v.id for v in variants])
    return ProductDetail(product, variants, stock)


async def _refuse_duplicates(session: AsyncSession, slug: str, skus: list[str]) -> None:
    if await session.scalar(select(Product.id).where(Product.slug == slug)):
        raise DuplicateProduct(f"slug {slug!r} is already in use", field="slug")
    taken = list(await session.scalars(select(Variant.sku).where(Variant.sku.in_(skus))))
    if taken:
        raise DuplicateProduct(
            f"SKU already in use: {', '.join(sorted(taken))}", skus=sorted(taken)
        )


async def get_product(
    session: AsyncSession, id_or_slug: str, *, viewer: Principal | None
) -> ProductDetail:
    product = await session.scalar(
        select(Product).where(or_(Product.id == id_or_slug, Product.slug == id_or_slug))
    )
    if product is None or not (product.is_active or can_manage(viewer, product)):
        raise ProductNotFound(f"no product {id_or_slug}")
    [detail] = await _with_variants(session, [product])
    return detail


async def list_products(
    session: AsyncSession, *, viewer: Principal | None, limit: int, after_id: str | None
) -> list[ProductDetail]:
    query = select(Product).order_by(Product.id).limit(limit)
    if after_id is not None:
        query = query.where(Product.id > after_id)
    if viewer is None or not viewer.is_admin:
        visible: ColumnElement[bool] = Product.is_active.is_(True)
        if viewer is not None and viewer.role == "vendor":
            visible = or_(visible, Product.vendor_id == viewer.user_id)
        query = query.where(visible)
    products = list(await session.scalars(query))
    return await _with_variants(session, products)


async def _with_variants(session: AsyncSession, products: list[Product]) -> list[ProductDetail]:
    if not products:
        return []
    variants = list(
        await session.scalars(
            select(Variant)
            .where(Variant.product_id.in_([p.id for p in products]))
            .order_by(Variant.id)
        )
    )
    stock = await inventory.stock_for_variants(session, [v.id for v in variants])
    by_product: dict[str, list[Variant]] = {p.id: [] for p in products}
    for variant in variants:
        by_product[variant.product_id].append(variant)
    return [ProductDetail(p, by_product[p.id], stock) for p in products]


async def update_product(
    session: AsyncSession, product_id: str, changes: ProductPatch, *, actor: Principal
) -> ProductDetail:
    product = await session.get(Product, product_id, with_for_update=True)
    if product is None or not can_manage(actor, product):
        raise ProductNotFound(f"no product {product_id}")
    if changes.name is not None:
        product.name = changes.name
    if changes.description is not None:
        product.description = changes.description
    if changes.active is not None:
        product.is_active = changes.active
    product.updated_at = clock.now()
    if changes.price_amount is not None:
        await session.execute(
            update(Variant)
            .where(Variant.product_id == product.id)
            .values(price_amount=changes.price_amount, updated_at=product.updated_at)
            .execution_options(synchronize_session=False)
        )
    await session.flush()
    [detail] = await _with_variants(session, [product])
    return detail


async def update_variant(
    session: AsyncSession, variant_id: str, changes: VariantPatch, *, actor: Principal
) -> tuple[Variant, StockView]:
    variant = await session.get(Variant, variant_id, with_for_update=True)
    product = await session.get(Product, variant.product_id) if variant else None
    if variant is None or product is None or not can_manage(actor, product):
        raise VariantNotFound(f"no variant {variant_id}")
    if changes.name is not None:
        variant.name = changes.name
    if changes.price_amount is not None:
        variant.price_amount = changes.price_amount
    if changes.active is not None:
        variant.is_active = changes.active
    variant.updated_at = clock.now()
    await session.flush()
    if changes.low_stock_threshold is not None:
        await inventory.set_low_stock_threshold(
            session, variant_id=variant.id, threshold=changes.low_stock_threshold
        )
    stock = await inventory.stock_for_variants(session, [variant.id])
    return variant, stock[variant.id]


@dataclass(frozen=True)
class SkuOwner:
    vendor_id: str | None  # None: the shop itself
    active: bool  # the product and the variant are both active

    def visible_to(self, viewer: Principal | None) -> bool:
        return self.active or (viewer is not None and viewer.owns(self.vendor_id))


async def owner_of_sku(session: AsyncSession, sku: str) -> SkuOwner:
    """Who owns `sku` and whether buyers may see it; NotFound if there is no such SKU."""
    row = (
        await session.execute(
            select(Product.vendor_id, Product.is_active, Variant.is_active)
            .join(Variant, Variant.product_id == Product.id)
            .where(Variant.sku == sku)
        )
    ).first()
    if row is None:
        raise inventory.SkuNotFound(f"no SKU {sku}")
    vendor_id, product_active, variant_active = row
    return SkuOwner(vendor_id, bool(product_active and variant_active))


def variant_out(variant: Variant, stock: StockView | None) -> VariantOut:
    available = stock.available if stock else 0
    return VariantOut(
        id=variant.id,
        product_id=variant.product_id,
        sku=variant.sku,
        name=variant.name,
        price_amount=variant.price_amount,
        currency=variant.currency,
        active=variant.is_active,
        available=available,
        in_stock=available > 0 and variant.is_active,
        low_stock_threshold=stock.low_stock_threshold if stock else 0,
    )


@dataclass(frozen=True)
class ForSale:
    """What a cart needs to know of a SKU: its price now and whether it may be bought."""

    sku: str
    name: str
    price_amount: int
    currency: str
    active: bool


async def for_sale(session: AsyncSession, skus: list[str]) -> dict[str, ForSale]:
    """Current price and buyability of `skus` (missing SKUs are simply absent)."""
    if not skus:
        return {}
    result = await session.execute(
        select(
            Variant.sku,
            Variant.name,
            Variant.price_amount,
            Variant.currency,
            Variant.is_active,
            Product.is_active,
        )
        .join(Product, Product.id == Variant.product_id)
        .where(Variant.sku.in_(skus))
    )
    return {
        sku: ForSale(sku, name, price, currency, bool(variant_active and product_active))
        for sku, name, price, currency, variant_active, product_active in result
    }
