"""The SQLAlchemy 2.x async persister: one code path for SQLite (aiosqlite) and Postgres
(asyncpg), chosen by the database URL alone."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import anyio
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from burr_async.errors import (
    ConfigurationError,
    PersistenceError,
    SchemaOutOfDateError,
)
from burr_async.persistence import migrate
from burr_async.persistence._writer import RowValues, make_writer
from burr_async.persistence.base import (
    AsyncBaseStatePersister,
    ParentPointer,
    PersistedStateData,
    Status,
)
from burr_async.persistence.engine import SQLiteSynchronous, create_engine
from burr_async.persistence.models import (
    DEFAULT_TABLE_NAME,
    HEAD_REVISION,
    build_table,
    version_table_name,
)
from burr_async.serde import OrjsonSerde, Serde
from burr_async.state import State

__all__ = ["AppSummary", "PostgreSQLPersister", "SQLAlchemyPersister", "SQLitePersister"]

_SUPPORTED = ("sqlite", "postgresql")
# Driver failures: SQLAlchemy wraps the DBAPI's errors; connecting can also fail with OSError.
_DB_ERRORS = (SQLAlchemyError, OSError)


@dataclass(frozen=True, slots=True)
class AppSummary:
    """The latest step of one application, as listed by :meth:`SQLAlchemyPersister.list_apps`."""

    partition_key: str | None
    app_id: str
    sequence_id: int
    position: str
    status: Status
    updated_at: dt.datetime


class SQLAlchemyPersister(AsyncBaseStatePersister):
    """Stores one row per step in ``table_name`` (in ``schema`` on Postgres).

    ``SQLAlchemyPersister(engine)`` borrows an engine and never disposes it;
    :meth:`from_url` creates and owns one (it connects lazily, and is disposed by ``aclose`` or
    ``async with``). One persister serves many concurrent applications. It holds two
    connections of the engine's pool until ``aclose``: one for writes (a step that arrives
    while another is being written joins the next write, so concurrent steps share a commit;
    see :mod:`burr_async.persistence._writer`) and one for loads. Other reads, and loads that
    overlap, check connections out of the pool, so give it at least three.

    On first use the persister checks that the table is migrated to this package's revision and
    raises :class:`~burr_async.errors.SchemaOutOfDateError` naming the command to run if not.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
        serde: Serde | None = None,
    ) -> None:
        dialect = engine.dialect.name
        if dialect not in _SUPPORTED:
            raise ConfigurationError(
                f"SQLAlchemyPersister supports SQLite and Postgres, not {dialect!r}."
            )
        if schema is not None and dialect != "postgresql":
            raise ConfigurationError(
                f"schema={schema!r} is only supported on Postgres; on SQLite use another "
                "table_name or database file."
            )
        self._engine = engine
        self._owns_engine = False
        self._table = build_table(table_name, schema)
        self._table_name = table_name
        self._schema = schema
        self._serde = serde or OrjsonSerde()
        # every statement of the persister is a single one: no BEGIN/COMMIT round trips
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._writer = make_writer(self._autocommit, self._table, self._write_error)
        self._build_queries()
        self._schema_checked = False
        self._schema_lock = anyio.Lock()
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str | sa.URL,
        *,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
        serde: Serde | None = None,
        sqlite_synchronous: SQLiteSynchronous = "FULL",
        **engine_kwargs: Any,
    ) -> SQLAlchemyPersister:
        """A persister owning a new engine for ``url`` (``sqlite://`` and ``postgresql://``
        get their async drivers). On SQLite the connections use WAL and ``sqlite_synchronous``
        (see :func:`burr_async.persistence.engine.configure_sqlite`)."""
        engine = create_engine(url, sqlite_synchronous=sqlite_synchronous, **engine_kwargs)
        persister = SQLAlchemyPersister(engine, table_name=table_name, schema=schema, serde=serde)
        persister._owns_engine = True
        return persister

    # -- facts -------------------------------------------------------------------------------
    @property
    def engine(self) -> AsyncEngine:
        """The engine the persister uses."""
        return self._engine

    @property
    def table(self) -> sa.Table:
        """The SQLAlchemy ``Table`` of the steps."""
        return self._table

    def _upgrade_command(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        args = f" --url '{url}'"
        if self._table_name != DEFAULT_TABLE_NAME:
            args += f" --table-name {self._table_name}"
        if self._schema is not None:
            args += f" --schema {self._schema}"
        return f"burr-async{args} db upgrade (or await persister.initialize())"

    # -- schema -------------------------------------------------------------------------------
    async def initialize(self) -> None:
        """Create or migrate the table to this package's revision (``alembic upgrade head``)."""
        try:
            await migrate.upgrade(self._engine, table_name=self._table_name, schema=self._schema)
        except _DB_ERRORS as exc:
            raise PersistenceError(
                f"Migrating table {self._table_name!r} failed: {exc.__class__.__name__}: {exc}"
            ) from exc
        self._schema_checked = False
        await self._check_schema()

    async def is_initialized(self) -> bool:
        """Whether the table exists at this package's revision."""
        try:
            await self._check_schema()
        except SchemaOutOfDateError:
            return False
        return True

    async def _check_schema(self) -> None:
        async with self._schema_lock:
            if self._schema_checked:
                return
            found = await self._revision()
            if found != HEAD_REVISION:
                raise SchemaOutOfDateError(
                    self._qualified_name(), found, HEAD_REVISION, self._upgrade_command()
                )
            self._schema_checked = True

    async def _revision(self) -> str | None:
        versions = sa.table(
            version_table_name(self._table_name), sa.column("version_num"), schema=self._schema
        )
        try:
            async with self._autocommit.connect() as conn:
                rows = (await conn.execute(sa.select(versions.c.version_num))).scalars().all()
        except (sa.exc.ProgrammingError, sa.exc.OperationalError) as exc:
            if "does not exist" in str(exc) or "no such table" in str(exc):
                return None
            raise self._error("Checking the schema revision failed", exc) from exc
        except _DB_ERRORS as exc:
            raise self._error("Checking the schema revision failed", exc) from exc
        return rows[0] if len(rows) == 1 else None

    def _qualified_name(self) -> str:
        return f"{self._schema}.{self._table_name}" if self._schema else self._table_name

    def _write_error(self, what: str, exc: BaseException, values: RowValues) -> PersistenceError:
        return self._error(
            what,
            exc,
            app_id=values[1],
            partition_key=values[0] or None,
            sequence_id=values[2],
            action=values[3],
        )

    def _error(self, what: str, exc: BaseException, **ids: Any) -> PersistenceError:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        return PersistenceError(
            f"{what} on table {self._qualified_name()!r}: {type(exc).__name__}: {detail}", **ids
        )

    # -- writing ------------------------------------------------------------------------------
    async def save(
        self,
        partition_key: str | None,
        app_id: str,
        sequence_id: int,
        position: str,
        state: State,
        status: Status,
        *,
        error: str | None = None,
        parent: ParentPointer | None = None,
    ) -> None:
        """Insert the step's row and return once it is committed. A row already at this
        (partition_key, app_id, sequence_id) is never overwritten: ConcurrentStepError."""
        values = (
            partition_key or "",
            app_id,
            sequence_id,
            position,
            status,
            self._serde.dumps(state).decode(),
            error,
            dt.datetime.now(dt.UTC),
            parent.app_id if parent else None,
            (parent.partition_key or "") if parent else None,
            parent.sequence_id if parent else None,
        )
        if not self._schema_checked:
            await self._check_schema()
        await self._writer.write(values)

    # -- reading ------------------------------------------------------------------------------
    def _build_queries(self) -> None:
        """Build the read statements once (SQLAlchemy then reuses their compiled form)."""
        t = self._table
        steps = sa.select(
            t.c.partition_key,
            t.c.app_uid,
            t.c.sequence_id,
            t.c.position,
            t.c.status,
            sa.cast(t.c.state, sa.Text).label("state"),
            t.c.error,
            t.c.created_at,
            t.c.parent_app_uid,
            t.c.parent_partition_key,
            t.c.parent_sequence_id,
        ).where(t.c.partition_key == sa.bindparam("pk"), t.c.app_uid == sa.bindparam("app"))
        self._latest_query = steps.order_by(t.c.sequence_id.desc()).limit(1)
        self._step_query = steps.where(t.c.sequence_id == sa.bindparam("seq"))
        self._history_query = steps.order_by(t.c.sequence_id)

    async def _fetch(
        self, statement: sa.Executable, params: dict[str, Any], what: str
    ) -> Sequence[sa.Row[Any]]:
        if not self._schema_checked:
            await self._check_schema()
        try:
            async with self._autocommit.connect() as conn:
                return (await conn.execute(statement, params)).all()
        except _DB_ERRORS as exc:
            raise self._error(what, exc) from exc

    def _to_data(self, row: sa.Row[Any]) -> PersistedStateData:
        parent = None
        if row.parent_app_uid is not None:
            parent = ParentPointer(
                row.parent_app_uid, row.parent_partition_key or None, row.parent_sequence_id
            )
        return PersistedStateData(
            partition_key=row.partition_key or None,
            app_id=row.app_uid,
            sequence_id=row.sequence_id,
            position=row.position,
            state=State._wrap(self._serde.loads(row.state)),
            created_at=_utc(row.created_at),
            status=row.status,
            error=row.error,
            parent=parent,
        )

    async def load(
        self, partition_key: str | None, app_id: str, sequence_id: int | None = None
    ) -> PersistedStateData | None:
        """The latest step of the app (or the one at ``sequence_id``), or None."""
        if not self._schema_checked:
            await self._check_schema()
        try:
            record = await self._writer.read_step(partition_key or "", app_id, sequence_id)
        except Exception as exc:  # the driver's own errors too: this read bypasses SQLAlchemy
            raise self._error(
                f"Loading app {app_id!r}",
                exc,
                app_id=app_id,
                partition_key=partition_key,
                sequence_id=sequence_id,
            ) from exc
        if record is None:
            return None
        return self._record_to_data(partition_key, app_id, record)

    def _record_to_data(
        self, partition_key: str | None, app_id: str, record: Sequence[Any]
    ) -> PersistedStateData:
        (
            sequence_id,
            position,
            status,
            state,
            error,
            created_at,
            parent_app,
            parent_pk,
            parent_seq,
        ) = record
        return PersistedStateData(
            partition_key=partition_key or None,
            app_id=app_id,
            sequence_id=sequence_id,
            position=position,
            state=State._wrap(self._serde.loads(state)),
            created_at=_utc(self._writer.parse_created_at(created_at)),
            status=status,
            error=error,
            parent=None
            if parent_app is None
            else ParentPointer(parent_app, parent_pk or None, parent_seq),
        )

    async def history(self, partition_key: str | None, app_id: str) -> list[PersistedStateData]:
        """Every step of the app, oldest first."""
        rows = await self._fetch(
            self._history_query,
            {"pk": partition_key or "", "app": app_id},
            f"Reading the history of app {app_id!r}",
        )
        return [self._to_data(row) for row in rows]

    async def list_app_ids(self, partition_key: str | None) -> list[str]:
        """The partition's app ids, most recently written first."""
        t = self._table
        query = (
            sa.select(t.c.app_uid)
            .where(t.c.partition_key == (partition_key or ""))
            .group_by(t.c.app_uid)
            .order_by(sa.func.max(t.c.created_at).desc(), t.c.app_uid)
        )
        rows = await self._fetch(query, {}, "Listing apps")
        return [row.app_uid for row in rows]

    async def list_apps(
        self, partition_key: str | None = None, *, all_partitions: bool = False, limit: int = 100
    ) -> list[AppSummary]:
        """The latest step of each app, most recently updated first: of ``partition_key``, or
        of every partition with ``all_partitions=True``."""
        t = self._table
        latest = sa.select(
            t.c.partition_key, t.c.app_uid, sa.func.max(t.c.sequence_id).label("sequence_id")
        ).group_by(t.c.partition_key, t.c.app_uid)
        if not all_partitions:
            latest = latest.where(t.c.partition_key == (partition_key or ""))
        sub = latest.subquery()
        query = (
            sa.select(
                t.c.partition_key,
                t.c.app_uid,
                t.c.sequence_id,
                t.c.position,
                t.c.status,
                t.c.created_at,
            )
            .join(
                sub,
                sa.and_(
                    t.c.partition_key == sub.c.partition_key,
                    t.c.app_uid == sub.c.app_uid,
                    t.c.sequence_id == sub.c.sequence_id,
                ),
            )
            .order_by(t.c.created_at.desc(), t.c.app_uid)
            .limit(limit)
        )
        rows = await self._fetch(query, {}, "Listing apps")
        return [
            AppSummary(
                row.partition_key or None,
                row.app_uid,
                row.sequence_id,
                row.position,
                row.status,
                _utc(row.created_at),
            )
            for row in rows
        ]

    # -- lifecycle ----------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Dispose the engine if the persister created it (``from_url``); a borrowed engine is
        left to its owner."""
        await self._writer.aclose()
        if self._owns_engine and not self._closed:
            self._closed = True
            await self._engine.dispose()


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class SQLitePersister(SQLAlchemyPersister):
    """Burr's ``SQLitePersister(db_path=..., table_name=...)``, over the same class."""

    def __init__(
        self,
        db_path: str,
        table_name: str = DEFAULT_TABLE_NAME,
        *,
        serde: Serde | None = None,
        synchronous: SQLiteSynchronous = "FULL",
        **engine_kwargs: Any,
    ) -> None:
        engine = create_engine(
            f"sqlite+aiosqlite:///{db_path}", sqlite_synchronous=synchronous, **engine_kwargs
        )
        super().__init__(engine, table_name=table_name, serde=serde)
        self._owns_engine = True


class PostgreSQLPersister(SQLAlchemyPersister):
    """Burr's ``PostgreSQLPersister.from_values(...)``, over the same class."""

    @classmethod
    def from_values(
        cls,
        db_name: str,
        user: str,
        password: str | None,
        host: str,
        port: int,
        table_name: str = DEFAULT_TABLE_NAME,
        *,
        schema: str | None = None,
        serde: Serde | None = None,
        **engine_kwargs: Any,
    ) -> Self:
        """A persister owning an asyncpg engine for the given connection values."""
        url = sa.URL.create(
            "postgresql+asyncpg",
            username=user,
            password=password,
            host=host,
            port=port,
            database=db_name,
        )
        persister = cls(
            create_engine(url, **engine_kwargs), table_name=table_name, schema=schema, serde=serde
        )
        persister._owns_engine = True
        return persister
