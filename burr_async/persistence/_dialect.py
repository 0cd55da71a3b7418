"""The seam between the persister and a database: what every dialect module provides.

The persister and its group-commit writer are written against :class:`Dialect` alone; each
supported database has one private module that owns its specifics (``_sqlite.py`` for
aiosqlite, ``_postgres.py`` for asyncpg): engine set-up, the SQL of the hot paths, how its
driver reports errors (classified by SQLSTATE or SQLite error code, never by message text), the
provisioning lock and its driver quirks. :func:`dialect_for` picks the module by the engine's
dialect name, so nothing outside this package names a driver.

Statements go straight to the driver connection that SQLAlchemy's pool hands out, with SQL
rendered once from the table's metadata: the hot path skips statement compilation and result
processing, which dominate the cost of a small INSERT.
"""

from __future__ import annotations

import datetime as dt
import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from burr_async.errors import ConfigurationError
from burr_async.persistence.models import COLUMNS, KEY_COLUMNS

__all__: list[str] = []

RowValues = tuple[Any, ...]
"""One step's row: values in :data:`~burr_async.persistence.models.COLUMNS` order (all of them,
whatever the table's revision: a dialect for a table without the last columns leaves their
values out); ``state`` is JSON text, ``created_at`` an aware datetime, ``partition_key`` never
None (``""``)."""
Key = tuple[str, str, int]
"""(partition_key, app_uid, sequence_id) of a row."""

KEY = slice(0, len(KEY_COLUMNS))
_STATE = COLUMNS.index("state")
_CREATED_AT = COLUMNS.index("created_at")
# what makes two rows "the same step": every column but the key, the state and the time written
_SAME_STEP = tuple(
    i for i, c in enumerate(COLUMNS) if i >= KEY.stop and i not in (_STATE, _CREATED_AT)
)
STORED_COLUMNS = COLUMNS[KEY.stop - 1 :]
"""What a load returns, in order: ``sequence_id`` and the columns after the key (of those the
table has: a table before revision 0004_0003 has no ``spawn_*`` columns, the last ones)."""


def as_utc(value: Any) -> dt.datetime:
    """A stored time as an aware datetime in UTC (a naive one is UTC: that is how it was
    written)."""
    if not isinstance(value, dt.datetime):
        raise TypeError(f"a stored time came back as {type(value).__name__}, not a datetime")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class _Compiled:
    """A Core statement rendered once for a driver's positional paramstyle, with the order in
    which its parameters are passed."""

    __slots__ = ("_defaults", "_names", "sql")

    def __init__(self, statement: sa.ClauseElement, dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._names: tuple[str, ...] = tuple(getattr(compiled, "positiontup", None) or ())
        binds: dict[str, sa.BindParameter[Any]] = getattr(compiled, "binds", {})
        self._defaults = {name: bind.value for name, bind in binds.items()}

    def args(self, **values: Any) -> list[Any]:
        """The positional parameters, from ``values`` by name, else the statement's own
        literals (``LIMIT 1``)."""
        defaults = self._defaults
        return [values[n] if n in values else defaults[n] for n in self._names]


class Dialect(ABC):
    """One database's side of the persister: statements on its driver's connections and the
    meaning of its driver's errors. Instances are per table (the SQL names it)."""

    #: The SQLAlchemy dialect name this module serves.
    name: ClassVar[str]
    #: The async driver it runs on.
    driver: ClassVar[str]
    #: Whether a connection that failed must be invalidated rather than returned to the pool
    #: (a network connection may be broken; an embedded one survives any statement error).
    invalidate_failed: ClassVar[bool] = True
    #: Whether tables may live in a named schema.
    supports_schema: ClassVar[bool] = False
    #: The driver's exception base classes, translated into PersistenceError at the seam.
    driver_errors: tuple[type[Exception], ...] = ()
    #: The locking clause of the read of a step's predecessor in its INSERT (see
    #: :meth:`follows_sql`): where writers run at once, a lock that makes the INSERT wait for a
    #: removal that has deleted the predecessor but not committed, and then refuse the step.
    predecessor_lock: ClassVar[str] = ""

    def __init__(self, engine: AsyncEngine, table: sa.Table) -> None:
        self.table = table
        t = table
        # the table's columns (build_table's): COLUMNS, or the first ones at an older revision;
        # ``width``: how many of a row's values (RowValues) the table takes
        self.columns: tuple[str, ...] = COLUMNS[: len(table.columns)]
        self.width = len(self.columns)
        self._same_step = tuple(i for i in _SAME_STEP if i < self.width)
        self._preparer = engine.dialect.identifier_preparer
        self.table_sql = self._preparer.format_table(table)
        self.columns_sql = ", ".join(self.quote(c) for c in self.columns)
        self.key_sql = ", ".join(self.quote(c) for c in KEY_COLUMNS)
        stored = [
            sa.cast(t.c.state, sa.Text).label("state") if c == "state" else t.c[c]
            for c in STORED_COLUMNS
            if c in t.c
        ]
        where = (
            t.c.partition_key == sa.bindparam("pk", type_=sa.Text),
            t.c.app_uid == sa.bindparam("app", type_=sa.Text),
        )
        steps = sa.select(*stored).where(*where)
        seq = t.c.sequence_id

        def nearest_full(*bound: sa.ColumnElement[bool]) -> sa.ScalarSelect[Any]:
            # the latest row holding a full state (within ``bound``): where a rebuild starts
            return (
                sa.select(seq)
                .where(*where, t.c.delta == sa.false(), *bound)
                .order_by(seq.desc())
                .limit(1)
                .scalar_subquery()
            )

        at = sa.bindparam("seq", type_=sa.Integer)
        self._latest = _Compiled(
            steps.where(seq >= sa.func.coalesce(nearest_full(), -1)).order_by(seq),
            engine.dialect,
        )
        self._step = _Compiled(
            steps.where(seq <= at, seq >= sa.func.coalesce(nearest_full(seq <= at), -1)).order_by(
                seq
            ),
            engine.dialect,
        )
        after = sa.bindparam("after", type_=sa.Integer)
        page = (
            steps.where(seq > after)
            .order_by(seq)
            .limit(sa.bindparam("limit", type_=sa.Integer))
            .subquery()
        )
        # the page, and the rows before it that its first state is rebuilt from
        prefix = steps.where(
            seq <= after, seq >= sa.func.coalesce(nearest_full(seq <= after + 1), after + 1)
        )
        history = sa.union_all(prefix, sa.select(page))
        self._history = _Compiled(
            history.order_by(sa.literal_column("sequence_id")), engine.dialect
        )
        at_seq = seq == at
        same = sa.select(
            *(t.c[COLUMNS[i]] for i in self._same_step), self.same_state().label("same_state")
        ).where(*where, at_seq)
        self._same = _Compiled(same, engine.dialect)

    def quote(self, name: str) -> str:
        """``name`` as a quoted identifier of this database."""
        return self._preparer.quote(name)

    def follows_sql(self, pk: str, app: str, seq: str, parent_seq: str) -> str:
        """SQL that holds when a row (its columns given as SQL expressions) extends its app's
        history: the first step, the first step of a fork (copied at its source's sequence id),
        or the step right after one that is stored. An app deleted while an application still
        held it therefore takes no more steps from that application.

        The stored predecessor is found as the app's latest step below ``seq``, which must be
        ``seq - 1``: only the primary key (partition_key, app_uid, sequence_id) yields that
        order, so any other plan needs a sort on top of reading at least as many rows, and the
        primary key's one-row probe is the cheapest whatever the statistics. A plain ``EXISTS``
        on the three key columns costs the planner the same through the (partition_key,
        created_at) index while the table has no statistics (it expects one row per partition):
        Postgres chose that index for the generic plan of the prepared INSERT, made at its sixth
        execution and then kept (and a hashed scan of the whole table for a batch), so that
        every insert read all of the partition's rows.

        The read takes :attr:`predecessor_lock`: without it, on a database that runs writers at
        once, an INSERT would still see (in its snapshot) a predecessor that a deletion of its
        app has removed but not yet committed, and store the step alone in an app that is gone.
        """
        q = self.quote
        latest_below = (
            f"SELECT prev.{q('sequence_id')} FROM {self.table_sql} AS prev "
            f"WHERE prev.{q('partition_key')} = {pk} AND prev.{q('app_uid')} = {app} "
            f"AND prev.{q('sequence_id')} < {seq} ORDER BY prev.{q('sequence_id')} DESC LIMIT 1"
            f"{self.predecessor_lock}"
        )
        return f"({seq} = 0 OR {seq} = {parent_seq} OR ({latest_below}) = {seq} - 1)"

    # -- statements ---------------------------------------------------------------------------
    @abstractmethod
    async def insert_one(self, driver: Any, row: RowValues) -> bool:
        """Insert one row in its own transaction; False when its key is already taken."""

    @abstractmethod
    async def insert_many(self, driver: Any, rows: Sequence[RowValues]) -> set[Key]:
        """Insert rows (distinct keys) in one statement and transaction; the keys inserted
        (the others were already taken)."""

    @abstractmethod
    async def fetch(self, driver: Any, sql: str, args: list[Any]) -> Sequence[Any] | None:
        """The first row of a query, as a sequence, or None."""

    @abstractmethod
    async def fetch_all(self, driver: Any, sql: str, args: list[Any]) -> list[Sequence[Any]]:
        """Every row of a query, each as a sequence."""

    async def fetch_history(
        self, driver: Any, partition_key: str, app_id: str, after: int, limit: int
    ) -> list[Sequence[Any]]:
        """The stored columns (as :meth:`fetch_step`) of an app's steps after sequence id
        ``after``, oldest first, at most ``limit`` of them; preceded, when the first is a
        delta, by the rows from the full state it is rebuilt from."""
        query = self._history
        return await self.fetch_all(
            driver, query.sql, query.args(pk=partition_key, app=app_id, after=after, limit=limit)
        )

    async def fetch_step(
        self, driver: Any, partition_key: str, app_id: str, sequence_id: int | None
    ) -> list[Sequence[Any]]:
        """The stored columns (:data:`STORED_COLUMNS`, ``state`` as JSON text) of a step,
        the latest when ``sequence_id`` is None, preceded by the rows from the nearest full
        state at or before it (oldest first: what its state is rebuilt from). When there is
        no such step, no rows, or rows that end before ``sequence_id``."""
        if sequence_id is None:
            query = self._latest
            return await self.fetch_all(driver, query.sql, query.args(pk=partition_key, app=app_id))
        query = self._step
        return await self.fetch_all(
            driver, query.sql, query.args(pk=partition_key, app=app_id, seq=sequence_id)
        )

    async def is_stored(self, driver: Any, row: RowValues) -> bool | None:
        """Whether the row stored at ``row``'s key is this very step (same action, status,
        error, parent and state as sent): True, False for another step, None for no row."""
        pk, app, seq = row[KEY]
        query = self._same
        found = await self.fetch(
            driver, query.sql, query.args(pk=pk, app=app, seq=seq, state=row[_STATE])
        )
        if found is None:
            return None
        *stored, same_state = found
        return bool(same_state) and tuple(stored) == tuple(row[i] for i in self._same_step)

    @abstractmethod
    def same_state(self) -> sa.ColumnElement[Any]:
        """A SQL expression: whether the stored state equals the bound JSON text ``state``."""

    def parse_created_at(self, value: Any) -> dt.datetime:
        """``created_at`` as the driver returns it, as an aware datetime in UTC."""
        return as_utc(value)

    @abstractmethod
    async def before_write(self, connection: AsyncConnection, driver: Any) -> None:
        """Make the held writer connection (``connection``, whose driver connection is
        ``driver``) fit to write: a hook for driver quirks, cheap when there is nothing to do."""

    # -- errors -------------------------------------------------------------------------------
    @abstractmethod
    def is_row_error(self, exc: BaseException) -> bool:
        """Whether ``exc`` rejects the data of a statement (a data or integrity error, or a
        value the driver cannot encode): the connection is still good, and a batch is retried
        row by row so that one bad row cannot sink the others."""

    def is_deadlock(self, exc: BaseException) -> bool:
        """Whether the database aborted the statement ``exc`` came from to break a cycle of
        lock waits (nothing of it is stored). The writer then writes a batch's rows one by
        one: a single row's INSERT holds no lock while it waits, so it cannot be in a cycle."""
        return False

    @abstractmethod
    def outcome_unknown(self, exc: BaseException) -> bool:
        """Whether a write that raised ``exc`` may all the same have committed: the connection
        broke, or the reply was lost. Any error the database itself reported for the
        statement means it did not commit."""

    def may_commit_later(self, exc: BaseException) -> bool:
        """Whether a write that raised ``exc`` may still be running in the database, so that a
        read-back finding no row proves nothing: the client stopped waiting for the answer (a
        timeout) without the database saying that the statement ended."""
        return False

    @abstractmethod
    def is_missing_table(self, exc: BaseException) -> bool:
        """Whether ``exc`` says the table (or its schema) does not exist."""

    def is_broken(self, driver: Any) -> bool:
        """Whether a held driver connection can no longer be used."""
        return False

    def ready_to_write(self, driver: Any) -> bool:
        """Whether the held driver connection ``driver`` takes a statement as it is
        (:meth:`before_write` would do nothing): the writer then sends an idle write from the
        calling task."""
        return False

    def abort(self, driver: Any) -> None:
        """Drop a driver connection that failed, at once and without a word to the server,
        before it is invalidated: a graceful close would wait for a server that may have
        stopped answering. Nothing to do where a connection cannot go silent."""
        return

    # -- provisioning -------------------------------------------------------------------------
    @staticmethod
    @abstractmethod
    def lock_for_migration(connection: sa.Connection, table_name: str, schema: str | None) -> None:
        """Inside a migration's transaction: serialise provisioning of one table across
        processes, and create its schema when needed."""

    @staticmethod
    @abstractmethod
    def join_driver_threads(timeout: float = 2.0) -> None:
        """Wait (up to ``timeout``, from a worker thread) for threads the driver left running
        after a failed connect, so that none outlives the event loop."""

    #: Whether Alembic must run in batch mode (copy-and-move table alterations).
    render_as_batch: ClassVar[bool] = False


# dialect name: (module, class, its async driver, what to install for it)
_MODULES = {
    "sqlite": ("burr_async.persistence._sqlite", "SQLiteDialect", "aiosqlite", "aiosqlite"),
    "postgresql": (
        "burr_async.persistence._postgres",
        "PostgresDialect",
        "asyncpg",
        "burr_async[postgres]",
    ),
}
_ALIASES = {"postgres": "postgresql"}


def async_drivername(drivername: str) -> str | None:
    """The SQLAlchemy ``dialect+driver`` name burr_async uses for a URL's plain dialect name
    (``sqlite``, ``postgresql`` or ``postgres``), or None for any other."""
    name = _ALIASES.get(drivername, drivername)
    found = _MODULES.get(name)
    return None if found is None else f"{name}+{found[2]}"


def dialect_class(name: str) -> type[Dialect]:
    """The dialect module's class for a SQLAlchemy dialect name (``sqlite``, ``postgresql``),
    imported on first use (a SQLite user never imports asyncpg); ConfigurationError for any
    other database, or when the database's driver is not installed."""
    found = _MODULES.get(name)
    if found is None:
        raise ConfigurationError(
            f"burr_async's persister supports SQLite and Postgres, not {name!r}: use a "
            "sqlite:// or postgresql:// URL."
        )
    module_name, class_name, _driver, package = found
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"Using {name} needs its driver, which is not installed ({exc}): "
            f"pip install '{package}'."
        ) from exc
    cls: type[Dialect] = getattr(module, class_name)
    return cls


def dialect_for(engine: AsyncEngine, table: sa.Table) -> Dialect:
    """The dialect of ``engine``'s database for ``table``; ConfigurationError when the engine
    runs on a driver other than the one burr_async's SQL is written for."""
    cls = dialect_class(engine.dialect.name)
    if engine.dialect.driver != cls.driver:
        raise ConfigurationError(
            f"The engine uses {engine.dialect.name}+{engine.dialect.driver}; burr_async's "
            f"persister runs {cls.name} on {cls.name}+{cls.driver}. Create the engine with that "
            "driver (burr_async.persistence.create_engine picks it for you)."
        )
    return cls(engine, table)
