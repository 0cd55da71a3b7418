"""The table that stores steps, as SQLAlchemy Core metadata, and the rules for its names."""

from __future__ import annotations

import re
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from burr_async.errors import InvalidIdentifierError

__all__ = [
    "COLUMNS",
    "DEFAULT_TABLE_NAME",
    "DELTA_REVISION",
    "HEAD_REVISION",
    "KEY_COLUMNS",
    "KNOWN_REVISIONS",
    "OLDEST_RUNNABLE",
    "SPAWN_COLUMNS",
    "SPAWN_REVISION",
    "TRIM_REVISION",
    "SchemaStatus",
    "build_table",
    "runs_on",
    "schema_status",
    "stores_deltas",
    "stores_spawning_parents",
    "stores_trims",
    "validate_identifier",
    "version_table_name",
]

DEFAULT_TABLE_NAME = "burr_state"
HEAD_REVISION = "0005"
"""The migration revision this version of the package expects (checked against the scripts by
the test suite)."""
KNOWN_REVISIONS = ("0001", "0002_0001", "0003", "0004_0003", "0005")
"""Every revision of this package's scripts, oldest first: a database at one of them is behind,
previous or current; at any other it was migrated by a newer burr_async."""
OLDEST_RUNNABLE = "0002_0001"
"""The oldest revision this package's code runs on. Below :data:`DELTA_REVISION` it writes only
full states, which every older release reads; below :data:`SPAWN_REVISION` it stores no
spawning parents; below :data:`TRIM_REVISION` its deltas have no ``trim`` section."""
DELTA_REVISION = "0003"
"""The revision from which the table may hold delta rows (see ``docs/deployment.md``): releases
before it refuse a table at this revision, so none of them reads a delta as a state."""
SPAWN_REVISION = "0004_0003"
"""The revision that adds the spawning-parent columns (:data:`SPAWN_COLUMNS`). Below it the
persister writes and reads the table without them, and refuses to store a spawning parent
(SchemaOutOfDateError naming ``db upgrade``)."""
TRIM_REVISION = "0005"
"""The revision from which delta rows may hold a ``trim`` section (items removed at the front of
a list: a window of the last messages, see ``docs/persistence/index.md``). Releases before it
refuse a table at this revision, so none of them meets a section it does not know; below it
the persister stores such a change as the whole new list."""
SPAWN_COLUMNS = ("spawn_app_uid", "spawn_partition_key", "spawn_sequence_id")
"""The columns of a sub-application's pointer to the parent step that spawned it (all NULL on
the rows of an application that has none), the last of the table: a table below
:data:`SPAWN_REVISION` has every other column, in the same order."""

SchemaStatus = Literal["missing", "behind", "previous", "current", "compatible", "ahead"]

_REVISION = re.compile(r"(\d{4})(?:_(\d{4}))?")


def schema_status(
    found: str | None,
    *,
    head: str = HEAD_REVISION,
    known: tuple[str, ...] = KNOWN_REVISIONS,
    runs_from: str = OLDEST_RUNNABLE,
) -> SchemaStatus:
    """What a table at revision ``found`` means to this package (the rolling-deploy rule of
    ``docs/deployment.md``). ``head``, ``known`` and ``runs_from`` default to this package's
    own revisions; a release's own values tell how that release sees the table.

    - ``missing``: not provisioned; ``behind``: an older revision of this package's scripts
      that its code does not run on (run ``db upgrade``); ``previous``: an older revision it
      still runs on, without what the later ones add (:data:`OLDEST_RUNNABLE` and after:
      below :data:`DELTA_REVISION` the persister writes full states only, below
      :data:`SPAWN_REVISION` it stores no spawning parents); ``current``: ``head``;
    - ``compatible``: a newer revision that this package's code still runs on. A migration
      says so in its id, ``NNNN_MMMM``: revision ``NNNN``, and ``MMMM`` the oldest revision whose
      code can run on it (an additive change: a nullable column, an index);
    - ``ahead``: any other revision, migrated by a newer burr_async that this code cannot run
      on (upgrade the package).

    The stored revision is only compared with this package's own numbers: nothing read from
    the database chooses code to run."""
    if found is None:
        return "missing"
    if found == head:
        return "current"
    if found in known:
        return "previous" if _number(found) >= _number(runs_from) else "behind"
    parsed = _REVISION.fullmatch(found)
    if parsed is not None and parsed.group(2) is not None:
        oldest = int(parsed.group(2))
        if int(parsed.group(1)) > _number(head) >= oldest:
            return "compatible"
    return "ahead"


def runs_on(status: SchemaStatus) -> bool:
    """Whether this package's code runs on a table of that status."""
    return status in ("previous", "current", "compatible")


def stores_deltas(found: str | None) -> bool:
    """Whether a table at revision ``found`` may hold delta rows: at :data:`DELTA_REVISION`
    or a newer revision this package runs on."""
    return _runs_from(found, DELTA_REVISION)


def stores_trims(found: str | None) -> bool:
    """Whether delta rows of a table at revision ``found`` may hold a ``trim`` section: at
    :data:`TRIM_REVISION` or a newer revision this package runs on."""
    return _runs_from(found, TRIM_REVISION)


def stores_spawning_parents(found: str | None) -> bool:
    """Whether a table at revision ``found`` has the spawning-parent columns: at
    :data:`SPAWN_REVISION` or a newer revision this package runs on."""
    return _runs_from(found, SPAWN_REVISION)


def _runs_from(found: str | None, revision: str) -> bool:
    """Whether this package runs on a table at ``found`` and it is at ``revision`` or later."""
    if found is None or not runs_on(schema_status(found)):
        return False
    return _number(found) >= _number(revision)


def _number(revision: str) -> int:
    """The revision number ``NNNN`` of a revision id ``NNNN`` or ``NNNN_MMMM``."""
    return int(revision[:4])


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "pk": "pk_%(table_name)s",
}

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")

STATE_TYPE = sa.JSON().with_variant(JSONB(), "postgresql")


def validate_identifier(value: object, kind: str) -> str:
    """``value`` if it is a plain identifier (letters, digits, underscores; at most 40
    characters); otherwise :class:`InvalidIdentifierError`. Names are never quoted into SQL."""
    if not isinstance(value, str) or _IDENTIFIER.fullmatch(value) is None:
        raise InvalidIdentifierError(kind, value)
    return value


def version_table_name(table_name: str) -> str:
    """The Alembic version table of a state table: its own, so that it coexists with the host
    application's Alembic history in the same database."""
    return f"{validate_identifier(table_name, 'table name')}_alembic_version"


def build_table(
    table_name: str = DEFAULT_TABLE_NAME,
    schema: str | None = None,
    metadata: sa.MetaData | None = None,
    *,
    spawning: bool = True,
) -> sa.Table:
    """The step table: one row per step, unique on (partition_key, app_uid, sequence_id).

    ``state`` holds the step's full state, as the serde encodes it, when ``delta`` is false.
    When it is true, it holds what the step changed since the step before it (the format is
    in ``docs/persistence/index.md``, "Steps that store only what changed").

    The ``spawn_*`` columns point at the parent step that spawned the app as a
    sub-application (``spawn_partition_key`` ``''`` for none, as ``parent_partition_key``),
    NULL on the rows of other apps; a partial index on (spawn_app_uid, spawn_sequence_id),
    holding only the rows that have one, finds an app's children. ``spawning=False``: the
    table as revisions before :data:`SPAWN_REVISION` have it, without those columns (how the
    persister addresses such a table)."""
    validate_identifier(table_name, "table name")
    if schema is not None:
        validate_identifier(schema, "schema")
    metadata = metadata or sa.MetaData(naming_convention=NAMING_CONVENTION)
    return sa.Table(
        table_name,
        metadata,
        sa.Column("partition_key", sa.Text, nullable=False),
        sa.Column("app_uid", sa.Text, nullable=False),
        sa.Column("sequence_id", sa.Integer, nullable=False),
        sa.Column("position", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("state", STATE_TYPE, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parent_app_uid", sa.Text, nullable=True),
        sa.Column("parent_partition_key", sa.Text, nullable=True),
        sa.Column("parent_sequence_id", sa.Integer, nullable=True),
        sa.Column("delta", sa.Boolean, nullable=False, server_default=sa.false()),
        *(_spawn_columns() if spawning else ()),
        sa.PrimaryKeyConstraint("partition_key", "app_uid", "sequence_id"),
        sa.CheckConstraint("status IN ('completed', 'failed')", name="status"),
        sa.Index(None, "partition_key", "created_at"),
        *((spawn_index(),) if spawning else ()),
        schema=schema,
    )


SPAWN_INDEX_WHERE = "spawn_app_uid IS NOT NULL"
"""The predicate of the children index: only the rows of sub-applications are in it, so the
rows of every other app cost the write path nothing there."""


def _spawn_columns() -> tuple[sa.Column[Any], ...]:
    return (
        sa.Column("spawn_app_uid", sa.Text, nullable=True),
        sa.Column("spawn_partition_key", sa.Text, nullable=True),
        sa.Column("spawn_sequence_id", sa.Integer, nullable=True),
    )


def spawn_index(name: str | None = None) -> sa.Index:
    """The partial index on (spawn_app_uid, spawn_sequence_id) of the rows that have a
    spawning parent (named by the naming convention unless ``name`` is given)."""
    where = sa.text(SPAWN_INDEX_WHERE)
    return sa.Index(
        name,
        "spawn_app_uid",
        "spawn_sequence_id",
        sqlite_where=where,
        postgresql_where=where,
    )


COLUMNS: tuple[str, ...] = tuple(column.name for column in build_table().columns)
"""The step table's columns, in table order: the order of a row's values on the write path."""
KEY_COLUMNS: tuple[str, ...] = tuple(column.name for column in build_table().primary_key)
"""The columns that identify a step: (partition_key, app_uid, sequence_id)."""
