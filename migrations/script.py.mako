"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Every burr_async migration takes the table name and schema as arguments: the same scripts
provision any table a persister is configured with.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade(table_name: str, schema: str | None = None) -> None:
    ${upgrades if upgrades else "pass"}


def downgrade(table_name: str, schema: str | None = None) -> None:
    ${downgrades if downgrades else "pass"}
