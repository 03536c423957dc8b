"""Request and response bodies of the cart endpoints."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

from kassa.fields import Input, Sku

Quantity = Annotated[int, Field(ge=1, le=1000)]
Version = Annotated[
    int, Field(ge=1, le=2**62, description="The version you last saw; 409 if stale")
]


class ItemAdd(Input):
    sku: Sku
    quantity: Quantity
    version: Version | None = None


class ItemUpdate(Input):
    quantity: Quantity
    version: Version | None = None


class MergeIn(Input):
    token: str = Field(min_length=1, max_length=200)


class ItemOut(BaseModel):
    id: str
    sku: str
    name: str
    quantity: int
    unit_price_amount: int
    line_amount: int
    available: int


class CartOut(BaseModel):
    id: str
    token: str | None = Field(description="Shown once, when the cart is created")
    state: str
    currency: str
    version: int
    items: list[ItemOut]
    subtotal_amount: int
