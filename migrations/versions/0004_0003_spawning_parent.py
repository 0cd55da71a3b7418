"""Add the spawning-parent columns: the parent step that spawned a sub-application.

Revision ID: 0004_0003
Revises: 0003
Create Date: 2026-12-02

Three nullable columns, ``spawn_app_uid``, ``spawn_partition_key`` (``''`` for none) and
``spawn_sequence_id``, set on every row of a sub-application (a fan-out's child, or an
application built ``with_spawning_parent``) and NULL on every other row, and a partial index
on (spawn_app_uid, spawn_sequence_id) of the rows that have them, so that the children of a
parent step are an index lookup. An additive change, so the id says ``_0003``: code of
revision 0003 still runs on the table (it does not name the columns; its rows get NULL).
Existing rows are left as they are: none of them has a spawning parent.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_0003"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = ("spawn_app_uid", "spawn_partition_key", "spawn_sequence_id")


def _index(table_name: str) -> str:
    return op.f(f"ix_{table_name}_spawn_app_uid_spawn_sequence_id")


def upgrade(table_name: str, schema: str | None = None) -> None:
    with op.batch_alter_table(table_name, schema=schema) as batch:
        batch.add_column(sa.Column("spawn_app_uid", sa.Text(), nullable=True))
        batch.add_column(sa.Column("spawn_partition_key", sa.Text(), nullable=True))
        batch.add_column(sa.Column("spawn_sequence_id", sa.Integer(), nullable=True))
    where = sa.text("spawn_app_uid IS NOT NULL")  # only the rows of sub-applications
    op.create_index(
        _index(table_name),
        table_name,
        ["spawn_app_uid", "spawn_sequence_id"],
        schema=schema,
        sqlite_where=where,
        postgresql_where=where,
    )


def downgrade(table_name: str, schema: str | None = None) -> None:
    op.drop_index(_index(table_name), table_name=table_name, schema=schema)
    with op.batch_alter_table(table_name, schema=schema) as batch:
        for column in reversed(_COLUMNS):
            batch.drop_column(column)
