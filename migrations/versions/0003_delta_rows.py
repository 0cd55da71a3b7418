"""Let the table hold delta rows: steps stored as what they changed.

Revision ID: 0003
Revises: 0002_0001
Create Date: 2026-12-02

No column changes: this revision marks the table as one whose rows may be deltas (column
``delta`` true, ``state`` a JSON array), which burr_async writes from here on. Its id has no
``_MMMM`` part because no earlier release can read such rows: a release before it finds the
table "ahead" and refuses it (SchemaAheadError) instead of reading a delta as a state.

Downgrading rewrites every delta row as the full state it stands for, so that the rows are
again what revision 0002_0001's readers expect.
"""

from __future__ import annotations

from alembic import op

from burr_async.persistence._delta import materialize_table
from burr_async.persistence.models import build_table

revision = "0003"
down_revision = "0002_0001"
branch_labels = None
depends_on = None


def upgrade(table_name: str, schema: str | None = None) -> None:
    return None  # the revision itself is the change: see the docstring


def downgrade(table_name: str, schema: str | None = None) -> None:
    materialize_table(op.get_bind(), build_table(table_name, schema))
