"""Field types and bounds shared by the request bodies of several domains."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

MAX_AMOUNT = 10**12  # minor units: ten billion in a two-decimal currency
MAX_STOCK = 10**9

Sku = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Amount = Annotated[int, Field(ge=0, le=MAX_AMOUNT)]
StockCount = Annotated[int, Field(ge=0, le=MAX_STOCK)]


def _storable(value: datetime) -> datetime:
    """In UTC, between the years 1970 and 9999 (9999-12-31T23:30:00-01:00 is in year 10000 in
    UTC, which no database column and no Python datetime can hold)."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time is out of range (years 1970 to 9999, in UTC)") from None
    if not 1970 <= utc.year <= 9999:
        raise ValueError("the time is out of range (years 1970 to 9999, in UTC)")
    return utc


# An RFC 3339 timestamp with its offset. Not strict: JSON has no datetime type, so the string is
# parsed (a strict model would refuse every string here). Stored in UTC, so it must fit there.
Timestamp = Annotated[AwareDatetime, Field(strict=False), AfterValidator(_storable)]


class Input(BaseModel):
    """Base of every request body: strict types ("19.99" or 19.99 for an integer is a 422, never
    a silent conversion), no unknown fields, and no NUL characters (PostgreSQL cannot store them,
    SQLite would; refusing them everywhere keeps both the same)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value
