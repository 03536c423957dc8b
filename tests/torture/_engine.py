"""Engine-level helpers shared by the torture tests and their worker processes (light imports:
the workers start faster without the catalog)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from sqlalchemy import event

import kassa.db
from kassa.db import Database


class RetryCounter:
    """Wraps `kassa.db.is_transient` to count the errors that `Database.run` ran again."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self._original = kassa.db.is_transient

    @property
    def count(self) -> int:
        return len(self.errors)

    def __call__(self, error: BaseException) -> bool:
        transient = self._original(error)
        if transient:
            orig = getattr(error, "orig", None) or error
            self.errors.append(type(getattr(orig, "__cause__", None) or orig).__name__)
        return transient

    def install(self) -> None:
        kassa.db.is_transient = self  # type: ignore[assignment]

    def uninstall(self) -> None:
        kassa.db.is_transient = self._original


def describe(error: BaseException) -> str:
    """The driver's error type (DeadlockDetectedError, not DBAPIError) and the first line."""
    orig = getattr(error, "orig", None) or error
    cause = getattr(orig, "__cause__", None) or orig
    return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"


def fast_deadlock_detection(db: Database, timeout_ms: int = 50) -> Database:
    """PostgreSQL looks for deadlocks only after `deadlock_timeout` (1 s by default) of waiting:
    have this engine's sessions look sooner, so a deadlock costs the test little time. It changes
    nothing else: the deadlocks are still there, and still counted (see the `retries` fixture)."""
    if db.is_postgres:

        @event.listens_for(db.engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Only a superuser may change it; anyone else keeps the server's setting.
            cursor = dbapi_connection.cursor()
            cursor.execute(
                "DO $$ BEGIN IF current_setting('is_superuser') = 'on' THEN "
                f"PERFORM set_config('deadlock_timeout', '{int(timeout_ms)}ms', false); "
                "END IF; END $$"
            )
            cursor.close()

    return db


async def warm_up(db: Database, connections: int) -> None:
    """Open the pool's connections before the start line, so the race starts with them ready."""
    entered = 0
    all_in = asyncio.Event()

    async def hold_one() -> None:
        nonlocal entered
        async with db.read() as session:
            await session.connection()
            entered += 1
            if entered == connections:
                all_in.set()
            await all_in.wait()

    await asyncio.wait_for(asyncio.gather(*(hold_one() for _ in range(connections))), 30)


async def wait_for_start(start_at: float | None) -> None:
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
    else:
        await asyncio.to_thread(sys.stdin.readline)
