"""SQLite through aiosqlite: everything burr_async knows about it lives here.

Connection set-up (WAL, ``synchronous``, busy timeout), the in-memory pool, the minimum SQLite
version, the write path's SQL (one multi-row ``INSERT ... RETURNING`` per batch, run with a
single hop to aiosqlite's thread), error classification by SQLite result code, and aiosqlite's
worker-thread quirk.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from burr_async.errors import ConfigurationError
from burr_async.persistence._dialect import Dialect, Key, RowValues
from burr_async.persistence.models import COLUMNS

__all__: list[str] = []

SQLiteSynchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

MINIMUM_VERSION = (3, 35, 0)
"""``RETURNING`` (which the write path needs to tell committed rows from taken keys)."""

_CREATED_AT = COLUMNS.index("created_at")


def check_version(version: tuple[int, int, int] = sqlite3.sqlite_version_info) -> None:
    """ConfigurationError when the SQLite library Python links is older than the write path
    needs, saying what to do."""
    if version < MINIMUM_VERSION:
        have = ".".join(map(str, version))
        need = ".".join(map(str, MINIMUM_VERSION))
        raise ConfigurationError(
            f"This Python links SQLite {have}; burr_async needs SQLite {need} or newer (for "
            "INSERT ... RETURNING). Use a Python built against a newer SQLite (python.org and "
            "most current distributions ship one), or use Postgres."
        )


def configure(engine: AsyncEngine, *, synchronous: SQLiteSynchronous = "FULL") -> None:
    """Set up every new SQLite connection of ``engine`` for concurrent, durable use:
    WAL journal (readers never block the writer), ``synchronous`` (``FULL``: a committed step
    survives power loss; ``NORMAL``: it survives a crash of the process, and the last steps may
    be lost on power loss, about 3x faster here), a 30 s busy timeout, and foreign keys on."""
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ConfigurationError(
            f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}."
        )

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    sa.event.listen(engine.sync_engine, "connect", on_connect)


def engine_options(url: sa.URL, options: dict[str, Any]) -> dict[str, Any]:
    """``create_async_engine`` options for ``url``: an in-memory database lives in one
    connection, so its pool is a ``StaticPool`` (every checkout shares it)."""
    check_version()
    database = url.database or ""
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        options.setdefault("poolclass", sa.pool.StaticPool)
    return options


class SQLiteDialect(Dialect):
    """aiosqlite: multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING`` per batch."""

    name = "sqlite"
    driver = "aiosqlite"
    invalidate_failed = False  # invalidating the only connection of :memory: destroys the data
    render_as_batch = True
    driver_errors = (sqlite3.Error,)

    def __init__(self, engine: AsyncEngine, table: sa.Table) -> None:
        super().__init__(engine, table)
        dialect = engine.dialect
        created = table.c.created_at.type.dialect_impl(dialect)
        bind = created.bind_processor(dialect)
        self._bind_created: Callable[[Any], Any] = bind or (lambda value: value)
        parse = created.result_processor(dialect, None)
        self._parse_created: Callable[[Any], Any] = parse or (lambda value: value)
        self._row_sql = "(" + ", ".join(["?"] * self.width) + ")"
        # SQLite names the columns of a VALUES list column1, column2, ...
        values = [f"column{i}" for i in range(1, self.width + 1)]
        self._selected = ", ".join(values)
        self._follows = self.follows_sql(
            values[0],
            values[1],
            values[COLUMNS.index("sequence_id")],
            values[COLUMNS.index("parent_sequence_id")],
        )
        self._sql_by_size: dict[int, str] = {}

    def _insert_sql(self, size: int) -> str:
        sql = self._sql_by_size.get(size)
        if sql is None:
            sql = self._sql_by_size[size] = (
                f"INSERT INTO {self.table_sql} ({self.columns_sql}) SELECT {self._selected} "
                f"FROM (VALUES {', '.join([self._row_sql] * size)}) WHERE {self._follows} "
                f"ON CONFLICT DO NOTHING RETURNING {self.key_sql}"
            )
        return sql

    def _params(self, row: RowValues) -> RowValues:
        created, width = self._bind_created(row[_CREATED_AT]), self.width
        return (*row[:_CREATED_AT], created, *row[_CREATED_AT + 1 : width])

    async def before_write(self, connection: AsyncConnection, driver: Any) -> None:
        """Keep the held connection in autocommit. With an in-memory database every checkout
        shares the one connection, and returning a pooled read to the pool resets its isolation
        level: the next INSERT would open a transaction that nothing commits. Reading the level
        is free; setting it goes through SQLAlchemy (sqlite3 allows it only on aiosqlite's
        thread)."""
        if driver.isolation_level is not None:
            await connection.execution_options(isolation_level="AUTOCOMMIT")

    def ready_to_write(self, driver: Any) -> bool:
        return driver.isolation_level is None  # in autocommit: before_write has nothing to do

    async def insert_one(self, driver: Any, row: RowValues) -> bool:
        return bool(await driver.execute_fetchall(self._insert_sql(1), self._params(row)))

    async def insert_many(self, driver: Any, rows: Sequence[RowValues]) -> set[Key]:
        params = [p for row in rows for p in self._params(row)]
        records = await driver.execute_fetchall(self._insert_sql(len(rows)), params)
        return {tuple(record) for record in records}

    async def fetch(self, driver: Any, sql: str, args: list[Any]) -> Sequence[Any] | None:
        rows = await driver.execute_fetchall(sql, args)
        return tuple(rows[0]) if rows else None

    async def fetch_all(self, driver: Any, sql: str, args: list[Any]) -> list[Sequence[Any]]:
        return list(await driver.execute_fetchall(sql, args))

    def same_state(self) -> sa.ColumnElement[Any]:
        # SQLite keeps the JSON text as it was sent: compare it as text
        return sa.cast(self.table.c.state, sa.Text) == sa.bindparam("state", type_=sa.Text)

    def parse_created_at(self, value: Any) -> Any:
        return super().parse_created_at(self._parse_created(value))

    def is_row_error(self, exc: BaseException) -> bool:
        # the CHECK or NOT NULL constraints, a value sqlite3 cannot bind, text it cannot encode
        return isinstance(
            exc,
            sqlite3.IntegrityError
            | sqlite3.DataError
            | sqlite3.InterfaceError
            | ValueError
            | TypeError
            | OverflowError,
        )

    def outcome_unknown(self, exc: BaseException) -> bool:
        # an error from sqlite3 is the statement's own outcome (autocommit: rolled back);
        # anything else (the worker thread gone, a cancelled hop) leaves the outcome open
        return not isinstance(exc, sqlite3.Error) and not self.is_row_error(exc)

    @staticmethod
    def join_driver_threads(timeout: float = 2.0) -> None:
        """After a failed connect aiosqlite stops its worker thread without awaiting it, and a
        thread that finishes after the event loop closed prints a traceback
        (omnilib/aiosqlite#389): wait for those threads, found by aiosqlite's thread name."""
        deadline = time.monotonic() + timeout
        for thread in threading.enumerate():
            if "_connection_worker_thread" in thread.name:
                thread.join(max(0.0, deadline - time.monotonic()))

    @staticmethod
    def lock_for_migration(connection: sa.Connection, table_name: str, schema: str | None) -> None:
        """Nothing to take: SQLite's own write lock serialises migrations (the first DDL
        statement waits for it, within the busy timeout), and the later ones find the table at
        head."""
        return

    def is_missing_table(self, exc: BaseException) -> bool:
        # SQLite reports a missing table as the generic SQLITE_ERROR: it cannot be told apart
        # from other errors without reading the message, so the schema check reads the catalog
        return False
