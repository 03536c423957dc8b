"""Catalog endpoints: products and variants."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from kassa.auth.deps import OptionalPrincipal, StaffPrincipal
from kassa.auth.principal import Principal
from kassa.catalog import service
from kassa.catalog.schemas import ProductCreate, ProductOut, ProductPatch, VariantOut, VariantPatch
from kassa.deps import AppSettings, ReadSession, WriteSession
from kassa.pagination import DEFAULT_LIMIT, Cursor, Limit, Page, decode_cursor, encode_cursor

router = APIRouter(tags=["catalog"])

Id = Annotated[str, Path(max_length=200)]


def product_out(detail: service.ProductDetail, viewer: Principal | None) -> ProductOut:
    product = detail.product
    return ProductOut(
        id=product.id,
        slug=product.slug,
        name=product.name,
        description=product.description,
        vendor_id=product.vendor_id,
        active=product.is_active,
        created_at=product.created_at,
        updated_at=product.updated_at,
        variants=[
            service.variant_out(v, detail.stock.get(v.id))
            for v in service.visible_variants(viewer, detail)
        ],
    )


@router.post("/v1/products", status_code=201, response_model=ProductOut)
async def create_product(
    body: ProductCreate, principal: StaffPrincipal, session: WriteSession, settings: AppSettings
) -> ProductOut:
    detail = await service.create_product(
        session, body, creator=principal, default_currency=settings.currency
    )
    return product_out(detail, principal)


@router.get("/v1/products", response_model=Page[ProductOut])
async def list_products(
    session: ReadSession,
    principal: OptionalPrincipal,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[ProductOut]:
    details = await service.list_products(
        session, viewer=principal, limit=limit + 1, after_id=decode_cursor(cursor)
    )
    page = details[:limit]
    next_cursor = encode_cursor(page[-1].product.id) if len(details) > limit else None
    return Page(data=[product_out(d, principal) for d in page], next_cursor=next_cursor)


@router.get("/v1/products/{id_or_slug}", response_model=ProductOut)
async def get_product(
    id_or_slug: Id, session: ReadSession, principal: OptionalPrincipal
) -> ProductOut:
    detail = await service.get_product(session, id_or_slug, viewer=principal)
    return product_out(detail, principal)


@router.patch("/v1/products/{product_id}", response_model=ProductOut)
async def update_product(
    product_id: Id, body: ProductPatch, principal: StaffPrincipal, session: WriteSession
) -> ProductOut:
    detail = await service.update_product(session, product_id, body, actor=principal)
    return product_out(detail, principal)


@router.patch("/v1/variants/{variant_id}", response_model=VariantOut)
async def update_variant(
    variant_id: Id, body: VariantPatch, principal: StaffPrincipal, session: WriteSession
) -> VariantOut:
    variant, stock = await service.update_variant(session, variant_id, body, actor=principal)
    return service.variant_out(variant, stock)
