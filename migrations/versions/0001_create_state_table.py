"""Create the state table: one row per application step.

Revision ID: 0001
Revises:
Create Date: 2026-11-25

The table name and schema come from the environment (``-x table_name=...``, ``-x schema=...``),
so the same script provisions every persister table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(table_name: str, schema: str | None = None) -> None:
    op.create_table(
        table_name,
        sa.Column("partition_key", sa.Text(), nullable=False),
        sa.Column("app_uid", sa.Text(), nullable=False),
        sa.Column("sequence_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("state", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parent_app_uid", sa.Text(), nullable=True),
        sa.Column("parent_partition_key", sa.Text(), nullable=True),
        sa.Column("parent_sequence_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint(
            "partition_key", "app_uid", "sequence_id", name=op.f(f"pk_{table_name}")
        ),
        sa.CheckConstraint(
            "status IN ('completed', 'failed')", name=op.f(f"ck_{table_name}_status")
        ),
        schema=schema,
    )
    op.create_index(
        op.f(f"ix_{table_name}_partition_key_created_at"),
        table_name,
        ["partition_key", "created_at"],
        schema=schema,
    )


def downgrade(table_name: str, schema: str | None = None) -> None:
    op.drop_index(
        op.f(f"ix_{table_name}_partition_key_created_at"), table_name=table_name, schema=schema
    )
    op.drop_table(table_name, schema=schema)
