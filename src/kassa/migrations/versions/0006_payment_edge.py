"""payment edge: payments created outside the lock (creating), review, refund failures, the
sandbox's books

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 02:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAYMENT_STATUSES = (
    "status IN ('creating', 'pending', 'processing', 'succeeded', 'failed', "
    "'requires_review', 'partially_refunded', 'refunded')"
)
OLD_PAYMENT_STATUSES = (
    "status IN ('pending', 'succeeded', 'failed', 'refunded', 'partially_refunded')"
)


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_payments_status"), type_="check")
        batch_op.create_check_constraint("status", PAYMENT_STATUSES)
        batch_op.alter_column(
            "provider_reference", existing_type=sa.String(length=255), nullable=True
        )
        batch_op.add_column(sa.Column("client_data", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("received_amount", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("received_currency", sa.String(length=3), nullable=True))
        batch_op.add_column(sa.Column("review_reason", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("recheck_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "ix_payments_status_updated_at", ["status", "updated_at"], unique=False
        )
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
        batch_op.add_column(
            sa.Column("counted", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(sa.Column("failure_code", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_refunds_provider_reference", ["provider_reference"], unique=False)
    op.create_table(
        "sandbox_charges",
        sa.Column("provider_reference", sa.String(length=255), nullable=False),
        sa.Column("payment_id", sa.String(length=40), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_code", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("provider_reference", name=op.f("pk_sandbox_charges")),
    )


def downgrade() -> None:
    op.drop_table("sandbox_charges")
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.drop_index("ix_refunds_provider_reference")
        batch_op.drop_column("failed_at")
        batch_op.drop_column("failure_code")
        batch_op.drop_column("counted")
        batch_op.drop_column("currency")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_status_updated_at")
        batch_op.drop_column("recheck_at")
        batch_op.drop_column("review_reason")
        batch_op.drop_column("received_currency")
        batch_op.drop_column("received_amount")
        batch_op.drop_column("client_data")
        batch_op.alter_column(
            "provider_reference", existing_type=sa.String(length=255), nullable=False
        )
        batch_op.drop_constraint(batch_op.f("ck_payments_status"), type_="check")
        batch_op.create_check_constraint("status", OLD_PAYMENT_STATUSES)
