"""shipping rates have a currency: a cart pays the rate of its own currency

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 02:40:00

Existing rates were entered in the shop's currency; they are kept as `usd` unless
KASSA_CURRENCY says otherwise when the migration runs.
"""

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    currency = os.environ.get("KASSA_CURRENCY", "usd").lower()[:3]
    with op.batch_alter_table("shipping_rates", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("currency", sa.String(length=3), nullable=False, server_default=currency)
        )
    with op.batch_alter_table("shipping_rates", schema=None) as batch_op:
        batch_op.drop_constraint("pk_shipping_rates", type_="primary")
        batch_op.create_primary_key("pk_shipping_rates", ["country", "currency"])
        batch_op.alter_column("currency", server_default=None, existing_type=sa.String(length=3))


def downgrade() -> None:
    op.execute("DELETE FROM shipping_rates WHERE currency <> 'usd'")
    with op.batch_alter_table("shipping_rates", schema=None) as batch_op:
        batch_op.drop_constraint("pk_shipping_rates", type_="primary")
        batch_op.create_primary_key("pk_shipping_rates", ["country"])
        batch_op.drop_column("currency")
