"""Each checkout phase with its timing and outcome, and what a failure rolled back.

Phases: validation, pricing, hold, payment (creating it, or the provider's verdict), completion,
cancel, expiry. A successful run is written in the checkout's own transaction; a failed one is
written after that transaction rolled back (in a transaction of its own), naming the steps the
rollback undid, so stats see every attempt.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from kassa import clock
from kassa.checkout.models import CheckoutPhase
from kassa.errors import KassaError

# What the rollback of a failed checkout undid, per phase that had completed before the failure.
UNDONE_BY_ROLLBACK = {
    "validation": "cart lock lifted",
    "pricing": "coupon use given back",
    "hold": "held stock given back (the hold was never committed)",
    "payment": "payment record discarded (the provider's payment is never confirmed)",
}


@dataclass
class PhaseRecord:
    phase: str
    outcome: str
    duration_ms: float
    code: str | None = None
    detail: dict[str, Any] | None = None


@dataclass
class PhaseLog:
    checkout_id: str | None = None
    records: list[PhaseRecord] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        except KassaError as error:
            self.records.append(PhaseRecord(name, "failed", _ms_since(started), code=error.code))
            raise
        except Exception as error:
            self.records.append(
                PhaseRecord(name, "failed", _ms_since(started), code=type(error).__name__)
            )
            raise
        self.records.append(PhaseRecord(name, "ok", _ms_since(started)))

    def add(self, name: str, outcome: str, *, code: str | None = None, **detail: Any) -> None:
        self.records.append(PhaseRecord(name, outcome, 0.0, code=code, detail=detail or None))

    def timings(self) -> dict[str, float]:
        """Successful phases' durations, for the checkout row."""
        return {r.phase: round(r.duration_ms, 3) for r in self.records if r.outcome == "ok"}

    def failure_detail(self) -> dict[str, Any]:
        done = [r.phase for r in self.records if r.outcome == "ok"]
        return {"rolled_back": [UNDONE_BY_ROLLBACK[p] for p in done if p in UNDONE_BY_ROLLBACK]}

    async def save_failure(self, session: AsyncSession) -> None:
        """Write a failed attempt's phases (its checkout row was rolled back: no checkout_id),
        the failed one with what the rollback undid."""
        if not self.records:
            return
        if self.records[-1].outcome == "failed":
            last = self.records[-1]
            last.detail = {**(last.detail or {}), **self.failure_detail()}
        now = clock.now()
        await session.execute(
            insert(CheckoutPhase),
            [
                {
                    "checkout_id": None,
                    "phase": r.phase,
                    "outcome": r.outcome,
                    "code": r.code,
                    "duration_ms": round(r.duration_ms, 3),
                    "detail": r.detail,
                    "created_at": now,
                }
                for r in self.records
            ],
        )
        self.records = []


async def record(
    session: AsyncSession,
    checkout_id: str | None,
    phase: str,
    outcome: str,
    *,
    code: str | None = None,
    duration_ms: float = 0.0,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        CheckoutPhase(
            checkout_id=checkout_id,
            phase=phase,
            outcome=outcome,
            code=code,
            duration_ms=duration_ms,
            detail=detail,
            created_at=clock.now(),
        )
    )


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
