"""Let delta rows hold a ``trim`` section: items removed at the front of a list.

Revision ID: 0005
Revises: 0004_0003
Create Date: 2026-12-03

No column changes: this revision marks the table as one whose delta rows may say that a step
removed items at the front of a list (``["delta", {"trim": {"chat_history": 1}, "append":
...}]``: a window of the last messages), which burr_async writes from here on instead of the
whole new list. Its id has no ``_MMMM`` part because no earlier release can rebuild such a row:
a release before it finds the table "ahead" and refuses it (SchemaAheadError) instead of
meeting a section it does not know.

Downgrading rewrites every delta row with a ``trim`` section as the full state it stands for
(the other rows stay as they are), so that the rows are again what revision 0004_0003's
readers expect.
"""

from __future__ import annotations

from alembic import op

from burr_async.persistence._delta import has_trim, materialize_table
from burr_async.persistence.models import build_table

revision = "0005"
down_revision = "0004_0003"
branch_labels = None
depends_on = None


def upgrade(table_name: str, schema: str | None = None) -> None:
    return None  # the revision itself is the change: see the docstring


def downgrade(table_name: str, schema: str | None = None) -> None:
    materialize_table(op.get_bind(), build_table(table_name, schema), only=has_trim)
