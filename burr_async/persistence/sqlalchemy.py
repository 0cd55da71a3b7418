"""The SQLAlchemy 2.x async persister: one code path for SQLite (aiosqlite) and Postgres
(asyncpg), chosen by the database URL alone. What differs between them lives in their dialect
modules (``burr_async/persistence/_sqlite.py`` and ``_postgres.py``)."""

from __future__ import annotations

import datetime as dt
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Self

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from burr_async._lazy import lazy_exports
from burr_async.errors import (
    ConfigurationError,
    PersistenceError,
    SchemaAheadError,
    SchemaOutOfDateError,
    quote,
)
from burr_async.persistence import _delta, _retention, _rows
from burr_async.persistence._dialect import Key, dialect_for
from burr_async.persistence._errors import ErrorContext, translated
from burr_async.persistence._saving import Saving
from burr_async.persistence._writer import GroupWriter
from burr_async.persistence.base import (
    AppSummary,
    AsyncBaseStatePersister,
    ParentPointer,
    PersistedStateData,
    Status,
    _check_id,
    _check_ids,
    _check_limit,
)
from burr_async.persistence.engine import SQLiteSynchronous, create_engine
from burr_async.persistence.models import (
    DEFAULT_TABLE_NAME,
    HEAD_REVISION,
    SPAWN_REVISION,
    build_table,
    runs_on,
    schema_status,
    stores_deltas,
    stores_spawning_parents,
    stores_trims,
    version_table_name,
)
from burr_async.serde import OrjsonSerde, Serde
from burr_async.state import State

__all__ = ["AppSummary", "SQLAlchemyPersister", "Storage"]

if TYPE_CHECKING:
    from burr_async.persistence.burr_names import PostgreSQLPersister as PostgreSQLPersister
    from burr_async.persistence.burr_names import SQLitePersister as SQLitePersister

# Burr's constructors live in burr_names (which imports this module), and stay importable here.
__getattr__, __dir__ = lazy_exports(
    __name__,
    globals(),
    dict.fromkeys(("PostgreSQLPersister", "SQLitePersister"), "burr_async.persistence.burr_names"),
)


Storage = Literal["delta", "snapshot"]
"""How steps are stored: ``delta`` (what each step changed, with a full state every so often)
or ``snapshot`` (every step's full state)."""


class SQLAlchemyPersister(Saving, AsyncBaseStatePersister):
    """Stores one row per step in ``table_name`` (in ``schema`` on Postgres).

    ``SQLAlchemyPersister(engine)`` borrows an engine and never disposes it;
    :meth:`from_url` creates and owns one (it connects lazily, and is disposed by ``aclose`` or
    ``async with``). One persister serves many concurrent applications. It holds two
    connections of the engine's pool until ``aclose``: one for writes (a step that arrives
    while another is being written joins the next write, so concurrent steps share a commit)
    and one for loads. Other reads, and loads that overlap, check connections out of the pool,
    so give it at least three.

    With ``storage="delta"`` (the default) a step's row holds what the step changed since the
    step before it, and a full state at least every ``snapshot_every`` steps (or sooner, when
    the changes since the last full state outweigh it): a chat of n turns stores O(n) bytes,
    not O(n²). Every read returns full states. ``storage="snapshot"`` stores every step's full
    state, for those who query states in SQL. Delta rows are written only once the table is at
    revision 0003 (``docs/deployment.md``), and only with an
    :class:`~burr_async.serde.OrjsonSerde` (another serde's states are stored whole); from
    revision 0005 a list shortened at the front (a window of the last messages) is stored as
    the items removed and added, before it as the whole new list.

    A sub-application's steps carry its spawning parent (``save(..., spawning_parent=...)``),
    returned by every read, and :meth:`list_children` finds the apps a step spawned. On a table
    at a revision before 0004_0003 the persister runs without those columns: steps without a
    spawning parent are stored as before, and one with a spawning parent raises
    :class:`~burr_async.errors.SchemaOutOfDateError` naming ``db upgrade``.

    On first use the persister checks that the table is migrated to this package's revision and
    raises :class:`~burr_async.errors.SchemaOutOfDateError` naming the command to run if not.
    Every error it raises is a :class:`~burr_async.errors.PersistenceError` naming the table
    and the step; after :meth:`aclose` every call raises one.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
        serde: Serde | None = None,
        storage: Storage = "delta",
        snapshot_every: int = _delta.DEFAULT_SNAPSHOT_EVERY,
    ) -> None:
        if storage not in ("delta", "snapshot"):
            raise ConfigurationError(f"storage must be 'delta' or 'snapshot', not {storage!r}.")
        if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int):
            raise ConfigurationError(
                f"snapshot_every must be a whole number of steps, not {snapshot_every!r}."
            )
        if snapshot_every < 1:
            raise ConfigurationError(f"snapshot_every must be at least 1, not {snapshot_every}.")
        self._table = build_table(table_name, schema)
        self._dialect = dialect_for(engine, self._table)
        if schema is not None and not self._dialect.supports_schema:
            raise ConfigurationError(
                f"schema={schema!r} is only supported on Postgres; on SQLite use another "
                "table_name or database file."
            )
        self._engine = engine
        self._owns_engine = False
        self._table_name = table_name
        self._schema = schema
        self._serde = serde or OrjsonSerde()
        self._storage: Storage = storage
        self._encoder = (
            _delta.DeltaEncoder(self._serde, snapshot_every)
            if storage == "delta" and isinstance(self._serde, OrjsonSerde) and snapshot_every > 1
            else None
        )
        self._unsure: dict[Key, tuple[State, _delta.Encoded]] = {}
        self._deltas = False  # set by the schema check: whether the table takes delta rows
        self._trims = False  # and whether they may have a trim section (revision 0005 on)
        # set by the schema check: whether the table has the spawn_* columns (the revision it
        # was found at); without them self._table and the dialect are those of revision 0003
        self._spawning = True
        self._found: str | None = None
        # each write and read is a single statement: no BEGIN/COMMIT round trips (the removals
        # that need several statements in one transaction run on the engine itself)
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._writer = GroupWriter(self._autocommit, self._dialect)
        self._errors = ErrorContext(
            self._qualified_name(),
            self._upgrade_command,
            HEAD_REVISION,
            driver_errors=self._dialect.driver_errors,
            is_missing_table=self._dialect.is_missing_table,
        )
        self._schema_checked = False
        self._schema_lock: anyio.Lock | None = None
        self._closed = False
        self._retention = _retention.Retention(
            self._table,
            engine,
            self._autocommit,
            self._errors,
            self._writer,
            self._encoder,
            self._ready,
        )

    @classmethod
    def from_url(
        cls,
        url: str | sa.URL,
        *,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
        serde: Serde | None = None,
        storage: Storage = "delta",
        snapshot_every: int = _delta.DEFAULT_SNAPSHOT_EVERY,
        sqlite_synchronous: SQLiteSynchronous = "FULL",
        **engine_kwargs: Any,
    ) -> SQLAlchemyPersister:
        """A persister owning a new engine for ``url`` (``sqlite://`` and ``postgresql://``
        get their async drivers). On SQLite the connections use WAL and ``sqlite_synchronous``
        (see :func:`burr_async.persistence.engine.configure_sqlite`)."""
        engine = create_engine(url, sqlite_synchronous=sqlite_synchronous, **engine_kwargs)
        return SQLAlchemyPersister._owning(
            engine,
            table_name=table_name,
            schema=schema,
            serde=serde,
            storage=storage,
            snapshot_every=snapshot_every,
        )

    @classmethod
    def _owning(cls, engine: AsyncEngine, **options: Any) -> Self:
        """A persister on ``engine`` that owns it: ``aclose`` disposes it."""
        persister = cls(engine, **options)
        persister._owns_engine = True
        return persister

    # -- facts -------------------------------------------------------------------------------
    @property
    def engine(self) -> AsyncEngine:
        """The engine the persister uses."""
        return self._engine

    @property
    def table(self) -> sa.Table:
        """The SQLAlchemy ``Table`` of the steps: this package's revision's columns, or, once
        the schema check found the table before revision 0004_0003, its columns (no
        ``spawn_*``)."""
        return self._table

    @property
    def storage(self) -> Storage:
        """How steps are stored, as configured (``delta`` writes full states until the table is
        at revision 0003)."""
        return self._storage

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    def _upgrade_command(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        args = f" --url '{url}'"
        if self._table_name != DEFAULT_TABLE_NAME:
            args += f" --table-name {self._table_name}"
        if self._schema is not None:
            args += f" --schema {self._schema}"
        return f"burr-async{args} db upgrade (or await persister.initialize())"

    def _qualified_name(self) -> str:
        return f"{self._schema}.{self._table_name}" if self._schema else self._table_name

    def _check_open(self, call: str) -> None:
        if self._closed:
            raise PersistenceError(
                f"{call}() was called on a closed persister (table {self._qualified_name()!r}): "
                "aclose() had been called. Create a new persister, or keep this one open for as "
                "long as the applications using it run."
            )

    # -- schema -------------------------------------------------------------------------------
    async def initialize(self) -> None:
        """Create or migrate the table to this package's revision (``alembic upgrade head``).
        Raises :class:`~burr_async.errors.SchemaAheadError`, changing nothing, when the
        database was migrated by a newer burr_async."""
        from burr_async.persistence import migrate

        self._check_open("initialize")
        with translated(self._errors, "Checking the schema revision"):
            found = await self._revision()
        status = schema_status(found)
        if status == "ahead":
            raise self._out_of_date(found)
        if status != "compatible":  # a newer, compatible schema is left as it is
            await migrate.upgrade(self._engine, table_name=self._table_name, schema=self._schema)
        self._schema_checked = False
        await self._check_schema()

    async def is_initialized(self) -> bool:
        """Whether the table exists at this package's revision."""
        self._check_open("is_initialized")
        try:
            await self._check_schema()
        except SchemaOutOfDateError:
            return False
        return True

    async def _check_schema(self) -> None:
        if self._schema_lock is None:
            self._schema_lock = anyio.Lock()
        async with self._schema_lock:
            if self._schema_checked:
                return
            with translated(self._errors, "Checking the schema revision"):
                found = await self._revision()
            if not runs_on(schema_status(found)):
                raise self._out_of_date(found)
            self._deltas = self._encoder is not None and stores_deltas(found)
            self._trims = stores_trims(found)
            spawning = stores_spawning_parents(found)
            if spawning != self._spawning:
                self._use_table(spawning)
            self._found = found
            self._schema_checked = True

    def _use_table(self, spawning: bool) -> None:
        """Address the table as its revision has it: with the ``spawn_*`` columns or without
        (before revision 0004_0003). The rows the write path builds always hold every column's
        value; a dialect for the table without the spawn columns leaves those out, so a row
        built before a re-check (``initialize``) is still written right."""
        self._spawning = spawning
        self._table = build_table(self._table_name, self._schema, spawning=spawning)
        self._dialect = dialect_for(self._engine, self._table)
        self._writer.dialect = self._dialect

    def _refuse_spawning_parent(self) -> SchemaOutOfDateError:
        """SchemaOutOfDateError for a step with a spawning parent on a table without the
        columns that store it, naming the command that adds them."""
        return SchemaOutOfDateError(
            self._qualified_name(),
            self._found,
            SPAWN_REVISION,
            self._upgrade_command(),
            purpose=(
                "to store a sub-application's spawning parent (steps without one are stored at "
                "this revision as before)"
            ),
        )

    def _out_of_date(self, found: str | None) -> SchemaOutOfDateError:
        if found is not None and schema_status(found) == "ahead":
            return SchemaAheadError(self._qualified_name(), found, HEAD_REVISION)
        return SchemaOutOfDateError(
            self._qualified_name(), found, HEAD_REVISION, self._upgrade_command()
        )

    async def _revision(self) -> str | None:
        """The revision in the table's version table, or None when it has none (the catalog
        is asked whether the table exists: no error text is read)."""
        name = version_table_name(self._table_name)
        versions = sa.table(name, sa.column("version_num"), schema=self._schema)
        schema = self._schema

        def read(conn: sa.Connection) -> str | None:
            if not sa.inspect(conn).has_table(name, schema=schema):
                return None
            rows = conn.execute(sa.select(versions.c.version_num)).scalars().all()
            return rows[0] if len(rows) == 1 else None

        async with self._autocommit.connect() as conn:
            return await conn.run_sync(read)

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
        spawning_parent: ParentPointer | None = None,
    ) -> None:
        """Insert the step's row and return once it is committed; when it raises, the row is
        not stored, except for :class:`~burr_async.errors.CommitUnknownError` (saving the same
        step again settles that). A row already at this (partition_key, app_id, sequence_id)
        is never overwritten: :class:`~burr_async.errors.ConcurrentStepError`. A
        ``spawning_parent`` on a table before revision 0004_0003:
        :class:`~burr_async.errors.SchemaOutOfDateError`, nothing stored."""
        await self._save(
            partition_key,
            app_id,
            sequence_id,
            position,
            state,
            status,
            error,
            parent,
            None,
            spawning_parent,
        )

    _settled_save_of = save
    """The ``save`` that :meth:`_save_settled` stands for: a subclass that overrides ``save``
    has its own, which an application's step store then calls (in a task of its own)."""

    # -- reading ------------------------------------------------------------------------------
    def _to_data(
        self, partition_key: str | None, app_id: str, record: Sequence[Any], state: State
    ) -> PersistedStateData:
        (
            sequence_id,
            position,
            status,
            _text,
            error,
            created_at,
            parent_app,
            parent_pk,
            parent_seq,
            _delta_row,
            *spawn,  # none before revision 0004_0003
        ) = record
        return PersistedStateData(
            partition_key=partition_key or None,
            app_id=app_id,
            sequence_id=sequence_id,
            position=position,
            state=state,
            created_at=self._dialect.parse_created_at(created_at),
            status=status,
            error=error,
            parent=None
            if parent_app is None
            else ParentPointer(parent_app, parent_pk or None, parent_seq),
            spawning_parent=_rows.pointer(*spawn) if spawn else None,
        )

    def _state(self, text_or_json: str | dict[str, Any], tagged: bool = True) -> State:
        if isinstance(text_or_json, str):
            return State._wrap(self._serde.loads(text_or_json))
        return State._wrap(_delta.decode(self._serde, text_or_json, tagged))

    async def load(
        self, partition_key: str | None, app_id: str, sequence_id: int | None = None
    ) -> PersistedStateData | None:
        """The latest step of the app (or the one at ``sequence_id``), or None."""
        self._check_open("load")
        _check_ids(app_id, partition_key)
        with translated(
            self._errors,
            f"Loading app {quote(app_id)}",
            app_id=app_id,
            partition_key=partition_key,
            sequence_id=sequence_id,
        ):
            if not self._schema_checked:
                await self._check_schema()
            pk = partition_key or ""
            rows = await self._writer.read_step(pk, app_id, sequence_id)
            if not rows or (sequence_id is not None and rows[-1][0] != sequence_id):
                return None
            record = rows[-1]
            chain, deltas = _delta.chain_of(rows)
            if not deltas:
                state = self._state(record[_delta.TEXT])
            else:
                try:
                    rebuilt, tagged = _delta.rebuild_last(chain)
                except _delta.DamagedHistoryError as exc:
                    raise _delta.damaged(exc, app_id, partition_key, record[0]) from exc
                state = self._state(rebuilt, tagged)
            if self._encoder is not None:
                self._encoder.remember(
                    pk, app_id, _delta.Chain(record[0], weakref.ref(state), *_delta.seed(chain))
                )
            return self._to_data(partition_key, app_id, record, state)

    async def history(
        self,
        partition_key: str | None,
        app_id: str,
        *,
        after_sequence_id: int | None = None,
        limit: int | None = None,
    ) -> list[PersistedStateData]:
        """The app's steps, oldest first: every one, or a page of at most ``limit`` after
        ``after_sequence_id`` (pass the last one's ``sequence_id`` for the next page)."""
        self._check_open("history")
        _check_ids(app_id, partition_key)
        after, most = _rows.page(after_sequence_id, limit)
        with translated(
            self._errors,
            f"Reading the history of app {quote(app_id)}",
            app_id=app_id,
            partition_key=partition_key,
        ):
            if not self._schema_checked:
                await self._check_schema()
            records = await self._writer.read_history(partition_key or "", app_id, after, most)
            chain, deltas = _delta.chain_of(records)
            if not deltas:
                return [
                    self._to_data(partition_key, app_id, record, self._state(record[_delta.TEXT]))
                    for record in records
                    if record[0] > after
                ]
            steps = []
            try:
                for record, (seq, rebuilt, tagged) in zip(
                    records, _delta.rebuild(chain), strict=True
                ):
                    if seq > after:
                        state = self._state(rebuilt, tagged)
                        steps.append(self._to_data(partition_key, app_id, record, state))
            except _delta.DamagedHistoryError as exc:
                raise _delta.damaged(exc, app_id, partition_key, None) from exc
            return steps

    async def _select(self, statement: sa.Select[Any], what: str) -> Sequence[sa.Row[Any]]:
        return await self._retention.select(statement, what)

    async def _ready(self) -> None:
        if not self._schema_checked:
            await self._check_schema()

    async def list_app_ids(self, partition_key: str | None) -> list[str]:
        """The partition's app ids, most recently written first."""
        self._check_open("list_app_ids")
        _check_id("partition_key", partition_key, optional=True)
        t = self._table
        query = (
            sa.select(t.c.app_uid)
            .where(t.c.partition_key == (partition_key or ""))
            .group_by(t.c.app_uid)
            .order_by(sa.func.max(t.c.created_at).desc(), t.c.app_uid)
        )
        rows = await self._select(query, "Listing apps")
        return [row.app_uid for row in rows]

    async def list_apps(
        self,
        partition_key: str | None = None,
        *,
        all_partitions: bool = False,
        limit: int = 100,
        after: AppSummary | None = None,
        status: Status | None = None,
    ) -> list[AppSummary]:
        """The latest step of each app, most recently updated first: of ``partition_key``, or
        of every partition with ``all_partitions=True``; only those whose latest step has
        ``status`` when given. A page: pass its last item as ``after`` for the next one (a
        keyset cursor). While steps are written, an app untouched meanwhile is listed exactly
        once over the pages; an app that took a step moved to the top (no duplicate)."""
        self._check_open("list_apps")
        _check_id("partition_key", partition_key, optional=True)
        limit = _check_limit(limit, "apps")
        await self._ready()  # the query names the columns the table's revision has
        query = _retention.apps_page(
            self._table,
            partition_key,
            all_partitions=all_partitions,
            limit=limit,
            after=after,
            status=status,
        )
        return _rows.summaries(await self._select(query, "Listing apps"))

    async def list_children(
        self, partition_key: str | None, app_id: str, sequence_id: int | None = None
    ) -> list[AppSummary]:
        """The apps whose spawning parent is app ``app_id`` of ``partition_key`` (at step
        ``sequence_id``, when given), each with its latest step, most recently updated first:
        the sub-applications that app (that step) spawned, in whichever partition they live.
        An index lookup; none on a table before revision 0004_0003 (it stores no spawning
        parents)."""
        self._check_open("list_children")
        _check_ids(app_id, partition_key)
        if sequence_id is not None and (
            isinstance(sequence_id, bool) or not isinstance(sequence_id, int)
        ):
            raise ConfigurationError(f"sequence_id must be an int or None, not {sequence_id!r}.")
        await self._ready()
        if not self._spawning:
            return []
        t = self._table
        spawned = [t.c.spawn_app_uid == app_id, t.c.spawn_partition_key == (partition_key or "")]
        if sequence_id is not None:
            spawned.append(t.c.spawn_sequence_id == sequence_id)
        children = sa.select(t.c.partition_key, t.c.app_uid).where(*spawned).distinct()
        query = _retention.apps_page(
            t, None, all_partitions=True, limit=_rows.ALL, after=None, status=None, among=children
        )
        return _rows.summaries(
            await self._select(query, f"Listing the children of app {quote(app_id)}")
        )

    # -- bounded storage (run by _retention.Retention) ---------------------------------------
    async def delete_app(
        self, partition_key: str | None, app_id: str, *, dry_run: bool = False
    ) -> int:
        """Delete every step of the app in one transaction; the number of steps removed (0 for
        an unknown app). An application object still holding the app fails its next step with
        :class:`~burr_async.errors.AppDeletedError` and writes nothing. ``dry_run=True``: the
        number of steps it would remove, removing nothing."""
        self._check_open("delete_app")
        return await self._retention.delete_app(partition_key, app_id, dry_run=dry_run)

    async def delete_partition(self, partition_key: str | None, *, dry_run: bool = False) -> int:
        """Delete every app of the partition, in bounded batches; the number of steps
        removed (with ``dry_run=True``: that it would remove, removing nothing)."""
        self._check_open("delete_partition")
        return await self._retention.delete_partition(partition_key, dry_run=dry_run)

    async def prune(
        self, partition_key: str | None, app_id: str, *, keep_last: int, dry_run: bool = False
    ) -> int:
        """Delete all but the last ``keep_last`` (at least 1) steps of the app; the number of
        steps removed (with ``dry_run=True``: that it would remove, removing nothing).
        Resuming and forking from a kept step work as before; loading a pruned step finds
        nothing. Steps the app takes meanwhile are kept, and so is every step this was to keep:
        what is left starts with a full row."""
        self._check_open("prune")
        return await self._retention.prune(
            partition_key, app_id, keep_last=keep_last, dry_run=dry_run
        )

    async def prune_all(
        self, *, keep_last: int, partition_key: str | None = None, dry_run: bool = False
    ) -> int:
        """:meth:`prune` every app (of ``partition_key`` when given, else of every partition);
        the number of steps removed (with ``dry_run=True``: that it would remove). An app
        whose rows cannot be rebuilt into states (changed outside burr_async) is left as it
        is, with a warning on the ``burr_async.persistence`` logger."""
        self._check_open("prune_all")
        return await self._retention.prune_all(
            keep_last=keep_last, partition_key=partition_key, dry_run=dry_run
        )

    async def expire(
        self, *, idle_for: dt.timedelta, partition_key: str | None = None, dry_run: bool = False
    ) -> int:
        """Delete whole apps (of ``partition_key`` when given) whose latest step is older than
        ``idle_for``; the number of apps removed (with ``dry_run=True``: that it would remove,
        removing nothing). An app that takes a step while this runs is no longer idle and is
        spared; what is left of it still loads (an app of more steps than a batch is removed in
        parts, each ending before one of its full rows)."""
        self._check_open("expire")
        return await self._retention.expire(
            idle_for=idle_for, partition_key=partition_key, dry_run=dry_run
        )

    # -- lifecycle ----------------------------------------------------------------------------
    async def aclose(self) -> None:
        """Refuse new calls, let the writes and loads under way finish, return the held
        connections, and dispose the engine if the persister created it (``from_url``); a
        borrowed engine is left to its owner. Calling it again does nothing more."""
        self._closed = True
        with translated(self._errors, "Closing the persister"):
            await self._writer.aclose()
            if self._owns_engine:
                self._owns_engine = False
                await self._engine.dispose()
