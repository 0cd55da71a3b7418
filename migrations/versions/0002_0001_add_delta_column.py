"""Add the ``delta`` column: whether a row's ``state`` holds only what its step changed.

Revision ID: 0002_0001
Revises: 0001
Create Date: 2026-12-02

An additive change, so the id says ``_0001``: code of revision 0001 still runs on the table (it
does not name the column, and the rows it writes take the default, false: full states). At
this revision burr_async writes full states only; revision 0003 lets it write delta rows.
Existing rows are full states and stay as they are.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_0001"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade(table_name: str, schema: str | None = None) -> None:
    op.add_column(
        table_name,
        sa.Column("delta", sa.Boolean(), nullable=False, server_default=sa.false()),
        schema=schema,
    )


def downgrade(table_name: str, schema: str | None = None) -> None:
    with op.batch_alter_table(table_name, schema=schema) as batch:
        batch.drop_column("delta")
