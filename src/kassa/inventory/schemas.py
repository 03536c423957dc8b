"""Request and response bodies of the inventory and hold endpoints, with the documented bounds."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator

from kassa.fields import MAX_STOCK, Input, Sku
from kassa.inventory.holds import MAX_LINES, MAX_QUANTITY

Reason = Literal["restock", "correction", "damage", "loss", "recount", "return"]


class StockOut(BaseModel):
    sku: str
    on_hand: int
    reserved: int
    available: int


class AdjustmentIn(Input):
    delta: Annotated[int, Field(ge=-MAX_STOCK, le=MAX_STOCK, description="Not 0")]
    reason: Reason
    note: Annotated[str, Field(max_length=200)] | None = None

    @field_validator("delta")
    @classmethod
    def _changes_something(cls, delta: int) -> int:
        if delta == 0:
            raise ValueError("an adjustment must change the stock")
        return delta


class MovementOut(BaseModel):
    id: int
    sku: str
    kind: str
    on_hand_delta: int
    reserved_delta: int
    reference_type: str
    reference_id: str
    reason: str | None
    actor_id: str | None
    created_at: datetime


class LowStockOut(BaseModel):
    sku: str
    variant_id: str
    product_id: str
    name: str
    on_hand: int
    reserved: int
    available: int
    low_stock_threshold: int


class HoldLineIn(Input):
    sku: Sku
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY)]


class HoldCreate(Input):
    lines: Annotated[list[HoldLineIn], Field(min_length=1, max_length=MAX_LINES)]
    ttl_seconds: Annotated[int, Field(ge=1, le=86_400)] | None = Field(
        default=None, description="Defaults to KASSA_HOLD_TTL_SECONDS; capped at the maximum TTL"
    )
    reference: Annotated[str, Field(max_length=255)] | None = None


class HoldLineOut(BaseModel):
    sku: str
    quantity: int


class HoldOut(BaseModel):
    id: str
    state: Literal["active", "committed", "released", "expired"]
    expires_at: datetime
    reference: str | None
    created_at: datetime
    lines: list[HoldLineOut]
