"""Request dependencies for storage: the transaction boundary of every endpoint lives here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from kassa.config import Settings
from kassa.db import Database

if TYPE_CHECKING:
    from kassa.payments.providers.registry import Providers


def get_database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_providers(request: Request) -> Providers:
    providers: Providers = request.app.state.providers
    return providers


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def write_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One write transaction per request: committed when the endpoint returns (before the
    response is sent), rolled back when it raises."""
    async with get_database(request).transaction() as session:
        yield session


async def read_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with get_database(request).read() as session:
        yield session


# scope="function": the commit happens before the response leaves, so a 2xx means "committed".
WriteSession = Annotated[AsyncSession, Depends(write_session, scope="function")]
ReadSession = Annotated[AsyncSession, Depends(read_session, scope="function")]
AppSettings = Annotated[Settings, Depends(get_settings_dep)]
