"""Request and response bodies of the catalog endpoints, with the documented bounds."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from kassa.fields import Amount, Input, Sku, StockCount

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=120)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Currency = Annotated[str, StringConstraints(pattern=r"^[a-z]{3}$")]


class VariantCreate(Input):
    sku: Sku
    name: Name
    price_amount: Amount
    currency: Currency | None = None
    on_hand: StockCount = 0
    low_stock_threshold: StockCount = 0


class ProductCreate(Input):
    name: Name
    slug: Slug
    description: Annotated[str, Field(max_length=10_000)] = ""
    variants: Annotated[list[VariantCreate], Field(min_length=1, max_length=100)]
    vendor_id: str | None = Field(
        default=None, max_length=40, description="Admins only: the vendor who owns the product"
    )


class ProductPatch(Input):
    name: Name | None = None
    description: Annotated[str, Field(max_length=10_000)] | None = None
    active: bool | None = None
    price_amount: Amount | None = Field(
        default=None, description="Sets the price of every variant of the product"
    )


class VariantPatch(Input):
    name: Name | None = None
    price_amount: Amount | None = None
    active: bool | None = None
    low_stock_threshold: StockCount | None = None


class VariantOut(BaseModel):
    id: str
    product_id: str
    sku: str
    name: str
    price_amount: int
    currency: str
    active: bool
    available: int
    in_stock: bool
    low_stock_threshold: int


class ProductOut(BaseModel):
    id: str
    slug: str
    name: str
    description: str
    vendor_id: str | None
    active: bool
    created_at: datetime
    updated_at: datetime
    variants: list[VariantOut]
