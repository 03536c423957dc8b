"""Cursor pagination shared by every list endpoint: `?limit=&cursor=` → `{data, next_cursor}`."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Annotated, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from kassa.errors import KassaError

T = TypeVar("T")

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_CURSOR = re.compile(r"[A-Za-z0-9_-]+")

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size, 1 to 100")]
Cursor = Annotated[
    str | None, Query(max_length=200, description="`next_cursor` of the previous page")
]


class InvalidCursor(KassaError):
    status, code, title = 422, "validation_error", "Invalid cursor"

    def __init__(self) -> None:
        super().__init__(
            "the cursor is not one this API handed out",
            errors=[
                {
                    "field": "cursor",
                    "loc": ["query", "cursor"],
                    "message": "invalid cursor",
                    "type": "value_error",
                }
            ],
        )


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None


def encode_cursor(position: str) -> str:
    return base64.urlsafe_b64encode(position.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if cursor is None:
        return None
    if not _CURSOR.fullmatch(cursor):
        raise InvalidCursor()
    try:
        position = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidCursor() from None
    if "\x00" in position:
        raise InvalidCursor()
    return position


def decode_int_cursor(cursor: str | None) -> int | None:
    """A cursor that stands for a row number (a 64-bit integer id)."""
    position = decode_cursor(cursor)
    if position is None:
        return None
    if not position.isascii() or not position.isdigit() or int(position) >= 2**63:
        raise InvalidCursor()
    return int(position)
