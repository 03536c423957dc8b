"""Remembering background job runs (last start, finish, outcome), shared by every process."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

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
    conn = await session.connection()
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    values = {
        "name": name,
        "last_started_at": started,
        "last_finished_at": finished,
        "last_status": status,
        "last_result": json.dumps(result, sort_keys=True),
        "runs": 1,
    }
    statement = insert(job_runs).values(values)
    statement = statement.on_conflict_do_update(
        index_elements=[job_runs.c.name],
        set_={
            "last_started_at": statement.excluded.last_started_at,
            "last_finished_at": statement.excluded.last_finished_at,
            "last_status": statement.excluded.last_status,
            "last_result": statement.excluded.last_result,
            "runs": job_runs.c.runs + 1,
        },
    )
    await conn.execute(statement)


async def last_run(session: AsyncSession, name: str) -> JobRun | None:
    result = await session.execute(select(JobRun).where(JobRun.name == name))
    return result.scalar_one_or_none()
