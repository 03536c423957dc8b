"""The one migration history builds exactly the schema the models declare, on both databases
(so a column, index or constraint added to a model without its migration fails here)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from kassa.db import Database
from kassa.models import Base


async def test_migrations_match_the_models(db: Database) -> None:
    async with db.engine.connect() as conn:

        def compare(sync_conn):  # type: ignore[no-untyped-def]
            context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)

        differences = await conn.run_sync(compare)
    assert differences == []
