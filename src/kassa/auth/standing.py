"""Each user's standing (current role, account active) as the database says it, so that a
disabled, deleted or re-roled user loses old rights within seconds on every process, not when
the access token expires. Remembered per process for at most `fresh_seconds` (default 4), so a
busy caller costs one small read every few seconds, not one per request."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kassa.auth.models import User
from kassa.db import Database

# Bounds the memory a flood of different users' tokens can take.
MAX_REMEMBERED = 10_000


@dataclass(frozen=True)
class Standing:
    role: str | None  # None: no such user (deleted)
    active: bool


class Standings:
    def __init__(self, db: Database, *, fresh_seconds: float = 4.0) -> None:
        self._db = db
        self.fresh_seconds = fresh_seconds
        self._seen: dict[str, tuple[float, Standing]] = {}

    async def of(self, user_id: str) -> Standing:
        now = time.monotonic()
        hit = self._seen.get(user_id)
        if hit is not None and now - hit[0] < self.fresh_seconds:
            return hit[1]
        async with self._db.read() as session:
            user = await session.get(User, user_id)
        standing = Standing(user.role, user.is_active) if user else Standing(None, False)
        if len(self._seen) >= MAX_REMEMBERED:
            self._seen.clear()
        self._seen[user_id] = (now, standing)
        return standing
