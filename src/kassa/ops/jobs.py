"""Remembering background job runs (last start, finish, outcome), shared by every process."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from kassa.db import upsert
from kassa.ops.models import JobRun

job_runs = cast(Table, JobRun.__table__)


async def record_run(
    session: AsyncSession,
    name: str,
    *,
    started: datetime,
    finished: datetime,
    status: str,
    result: dict[str, Any],
) -> None:
    values = {
        "name": name,
        "last_started_at": started,
        "last_finished_at": finished,
        "last_status": status,
        "last_result": json.dumps(result, sort_keys=True),
        "runs": 1,
    }
    changes = {name: value for name, value in values.items() if name not in ("name", "runs")}
    await upsert(
        session, job_runs, values, key="name", changes=changes | {"runs": job_runs.c.runs + 1}
    )


async def last_run(session: AsyncSession, name: str) -> JobRun | None:
    result = await session.execute(select(JobRun).where(JobRun.name == name))
    return result.scalar_one_or_none()
