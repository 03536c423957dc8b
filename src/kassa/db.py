"""Engine, sessions, the transaction helpers and the declarative base."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

T = TypeVar("T")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on the Python side on every database (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use kassa.clock.now()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# PostgreSQL: deadlock_detected, serialization_failure. Both mean "nothing happened, run it again".
_TRANSIENT_SQLSTATES = {"40P01", "40001"}


def is_transient(error: BaseException) -> bool:
    """True for errors after which the whole transaction may simply be run again."""
    if not isinstance(error, DBAPIError):
        return False
    orig = error.orig
    for candidate in (orig, getattr(orig, "__cause__", None)):
        if getattr(candidate, "sqlstate", None) in _TRANSIENT_SQLSTATES:
            return True
        if getattr(candidate, "pgcode", None) in _TRANSIENT_SQLSTATES:
            return True
    return "database is locked" in str(orig)


async def upsert(
    session: AsyncSession,
    table: Any,
    values: dict[str, Any],
    *,
    key: str | tuple[str, ...],
    changes: dict[str, Any] | None = None,
) -> None:
    """Insert a row, or update the one with the same `key` (a column or several), in one
    statement on either database.

    `changes` (column → expression) replaces the default update, which takes every new value.
    """
    keys = (key,) if isinstance(key, str) else key
    conn = await session.connection()
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(table).values(values)
    update = changes or {name: statement.excluded[name] for name in values if name not in keys}
    await conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=update))


async def insert_new(session: AsyncSession, table: Any, values: dict[str, Any]) -> bool:
    """Insert a row unless one with the same key exists ("on conflict do nothing"); True if
    this call inserted it. Concurrent callers on PostgreSQL wait for the first to commit."""
    conn = await session.connection()
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    result = await conn.execute(insert(table).values(values).on_conflict_do_nothing())
    return bool(result.rowcount == 1)


def is_data_error(error: BaseException) -> bool:
    """True for PostgreSQL's data exceptions (SQLSTATE class 22: a NUL in text, a number out of
    range): the input was bad, not the server."""
    if not isinstance(error, DBAPIError):
        return False
    orig = error.orig
    for candidate in (orig, getattr(orig, "__cause__", None)):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str) and state.startswith("22"):
            return True
    return False


class Database:
    """One engine and its session factories; the app, the CLI and the tests each build their own."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = make_url(url)
        self.dialect = self.url.get_backend_name()
        # hide_parameters: a database error's text never carries the values it was sent (a
        # password hash, an email), so logging the error leaks nothing.
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": False, "hide_parameters": True}
        if self.is_sqlite:
            # Writers queue on SQLite's own lock: give them time rather than failing fast.
            kwargs["connect_args"] = {"timeout": 30}
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = 0
            kwargs["pool_timeout"] = 60
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
            kwargs["pool_timeout"] = 60
        self.engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine.sync_engine)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        # Read-only work on SQLite starts a deferred transaction, so readers never queue behind
        # writers; on PostgreSQL the option changes nothing.
        self.read_sessions = async_sessionmaker(
            self.engine.execution_options(kassa_read_only=True),
            expire_on_commit=False,
            autoflush=False,
        )

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A write transaction: commits when the block ends, rolls back when it raises."""
        async with self.sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction (on SQLite a deferred BEGIN: it never waits for writers)."""
        async with self.read_sessions() as session, session.begin():
            yield session

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]], *, attempts: int = 5) -> T:
        """Run `work` in one write transaction, again from the start after a transient error."""
        for attempt in range(1, attempts + 1):
            try:
                async with self.transaction() as session:
                    return await work(session)
            except DBAPIError as error:
                if attempt == attempts or not is_transient(error):
                    raise
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise AssertionError("unreachable")

    async def dispose(self) -> None:
        await self.engine.dispose()


def _configure_sqlite(sync_engine: Any) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (so BEGIN IMMEDIATE works).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Writers take the write lock up front: no upgrade from a read lock, so no SQLITE_BUSY
        # half-way through a transaction and no lost update.
        if conn.get_execution_options().get("kassa_read_only"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
