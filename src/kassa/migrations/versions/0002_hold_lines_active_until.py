"""hold_lines.active_until: find overdue holds by SKU in one index probe

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hold_lines") as batch:
        batch.add_column(sa.Column("active_until", sa.DateTime(timezone=True), nullable=True))
        batch.drop_index("ix_hold_lines_sku")
    op.execute(
        "UPDATE hold_lines SET active_until = "
        "(SELECT expires_at FROM holds WHERE holds.id = hold_lines.hold_id AND state = 'active')"
    )
    op.create_index(
        "ix_hold_lines_sku_active_until",
        "hold_lines",
        ["sku", "active_until"],
        postgresql_where=sa.text("active_until IS NOT NULL"),
        sqlite_where=sa.text("active_until IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_hold_lines_sku_active_until", table_name="hold_lines")
    with op.batch_alter_table("hold_lines") as batch:
        batch.drop_column("active_until")
        batch.create_index("ix_hold_lines_sku", ["sku"])
