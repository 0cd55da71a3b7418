"""The hot paths: group commit over a held writer connection, and loads on a held reader.

A step's row is handed to :meth:`_GroupWriter.write`, which returns once the row is committed
(or raises). When no write is in flight the caller writes its row at once, one statement in
autocommit mode: one round trip on Postgres, one thread hop on SQLite. Rows that arrive while a
write is in flight queue up and go together in the next statement (one multi-row
``INSERT ... ON CONFLICT DO NOTHING RETURNING``, so one commit for all of them); every caller is
released when its row's statement has committed. A row whose key is taken fails alone with
:class:`~burr_async.errors.ConcurrentStepError`; a row the database or the driver rejects
(bad data) is retried alone so that it cannot sink the others.

Loading a step (what resuming costs) is one statement on a second held connection; a load that
overlaps another checks a connection out of the pool instead.

Statements go straight to the driver connection that SQLAlchemy's pool hands out (asyncpg or
aiosqlite), with SQL rendered once from the table's metadata and SQLAlchemy's identifier
quoting: the hot path skips statement compilation and result processing, which dominate the
cost of a small INSERT.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from burr_async._shield import run_to_completion
from burr_async.errors import ConcurrentStepError, ConfigurationError, PersistenceError

__all__: list[str] = []

COLUMNS = (
    "partition_key",
    "app_uid",
    "sequence_id",
    "position",
    "status",
    "state",
    "error",
    "created_at",
    "parent_app_uid",
    "parent_partition_key",
    "parent_sequence_id",
)
_KEY = slice(0, 3)
_MAX_BATCH = 200

RowValues = tuple[Any, ...]
"""Values in :data:`COLUMNS` order; ``state`` is JSON text, ``created_at`` an aware datetime."""
ErrorFactory = Callable[[str, BaseException, RowValues], PersistenceError]


class _Pending:
    """One row waiting to be written, and how its write ended."""

    __slots__ = ("_wake", "error", "finished", "values")

    def __init__(self, values: RowValues) -> None:
        self.values = values
        self._wake: anyio.Event | None = None
        self.finished = False
        self.error: BaseException | None = None

    async def wait(self) -> None:
        """Sleep until the row is written or its turn to lead a batch comes."""
        self._wake = anyio.Event()
        await self._wake.wait()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def finish(self, error: BaseException | None = None) -> None:
        self.error = error
        self.finished = True
        self.wake()


class _HeldConnection:
    """One connection of the engine's pool, held between uses (no checkout per statement) and
    replaced after a failure."""

    __slots__ = ("_connection", "_engine", "_invalidate", "driver")

    def __init__(self, engine: AsyncEngine, *, invalidate: bool) -> None:
        self._engine = engine
        self._invalidate = invalidate
        self._connection: AsyncConnection | None = None
        self.driver: Any = None

    async def get(self) -> Any:
        """The driver connection (asyncpg or aiosqlite), opened on first use."""
        if self.driver is None:
            self._connection = await self._engine.connect()
            raw = await self._connection.get_raw_connection()
            self.driver = raw.driver_connection
        return self.driver

    async def discard(self) -> None:
        """Let go of the connection after a failure; the next ``get`` checks one out again.
        A network connection is invalidated (it may be broken). A SQLite connection survives
        any statement error and is returned to the pool: invalidating the only connection of an
        in-memory database would destroy the database."""
        connection, self._connection, self.driver = self._connection, None, None
        if connection is not None:
            try:
                if self._invalidate:
                    await connection.invalidate()
                await connection.close()
            except Exception:  # the connection is already gone; nothing left to release
                return

    async def aclose(self) -> None:
        """Return the connection to the pool."""
        connection, self._connection, self.driver = self._connection, None, None
        if connection is not None:
            await connection.close()


class _GroupWriter:
    """Serialises the rows of every application using one persister through one connection,
    batching those that arrive together. Dialect specifics live in the subclasses."""

    #: Errors after which the connection is still usable, so a batch can be retried row by row:
    #: the database's rejection of a row, or the driver's refusal to encode a value.
    statement_errors: tuple[type[Exception], ...] = (ValueError, TypeError, OverflowError)
    #: Whether a connection that failed must be invalidated rather than returned to the pool.
    invalidate_failed = True

    def __init__(self, engine: AsyncEngine, table: sa.Table, error: ErrorFactory) -> None:
        self._engine = engine  # in autocommit mode: each statement is its own transaction
        self._table = table
        self._error = error
        self._queue: list[_Pending] = []
        self._leading = False
        self._held = _HeldConnection(self._engine, invalidate=self.invalidate_failed)
        self._reader = _HeldConnection(self._engine, invalidate=self.invalidate_failed)
        self._reading = False
        self._closed = False
        self._drained: anyio.Event | None = None
        preparer = engine.dialect.identifier_preparer
        self._table_sql = preparer.format_table(table)
        self._columns_sql = ", ".join(preparer.quote(c) for c in COLUMNS)
        self._key_sql = ", ".join(preparer.quote(c) for c in COLUMNS[_KEY])
        selected = ", ".join(  # the key's first two columns are what the caller asks by
            f"CAST({preparer.quote(c)} AS TEXT)" if c == "state" else preparer.quote(c)
            for c in COLUMNS[2:]
        )
        pk, app, seq = (preparer.quote(c) for c in COLUMNS[_KEY])
        p1, p2, p3 = self._placeholders(3)
        steps = f"SELECT {selected} FROM {self._table_sql} WHERE {pk} = {p1} AND {app} = {p2}"
        self._latest_sql = f"{steps} ORDER BY {seq} DESC LIMIT 1"
        self._step_sql = f"{steps} AND {seq} = {p3}"

    @staticmethod
    def _placeholders(count: int) -> list[str]:
        return [f"${i}" for i in range(1, count + 1)]

    async def write(self, values: RowValues) -> None:
        """Commit one row; raises ConcurrentStepError when its key is taken, PersistenceError
        when the database fails. Once called it runs to completion: a cancellation (anyio or
        asyncio) is raised only after the row's fate is settled, so the writer's queue and
        connection are never left half-way."""
        _, cancelled = await run_to_completion(self._write(values))
        if cancelled:
            raise asyncio.CancelledError

    async def _write(self, values: RowValues) -> None:
        if self._closed:
            raise self._error(
                "Saving the step failed", RuntimeError("the persister is closed"), values
            )
        pending = _Pending(values)
        self._queue.append(pending)
        if self._leading:
            await pending.wait()
        if not pending.finished:  # idle writer, or leadership handed over to this row
            self._leading = True
            batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
            try:
                await self._flush(batch)
            except Exception as exc:  # unexpected: still, no caller is left waiting
                for row in batch:
                    if not row.finished:
                        row.finish(self._error("Saving the step failed", exc, row.values))
            finally:
                if self._queue:
                    self._queue[0].wake()  # the next waiting row leads the next batch
                else:
                    self._leading = False
                    if self._drained is not None:
                        self._drained.set()
        if pending.error is not None:
            raise pending.error

    async def _flush(self, batch: list[_Pending]) -> None:
        unique: dict[tuple[Any, ...], _Pending] = {}
        repeats: list[_Pending] = []
        for pending in batch:
            key = pending.values[_KEY]
            if key in unique:  # two writes of one step: decided once the first has settled
                repeats.append(pending)
            else:
                unique[key] = pending
        await self._flush_unique(list(unique.values()))
        for pending in repeats:
            if unique[pending.values[_KEY]].error is None:
                pending.finish(self._conflict(pending.values))
            else:  # the first was refused: this one may still be the one that commits
                await self._write_alone(pending)

    async def _flush_unique(self, rows: list[_Pending]) -> None:
        try:
            driver = await self._driver_connection()
            if len(rows) == 1:
                inserted = (
                    {rows[0].values[_KEY]}
                    if await self._insert_one(driver, rows[0].values)
                    else set()
                )
            else:
                inserted = await self._insert_many(driver, [p.values for p in rows])
        except self.statement_errors as exc:
            if len(rows) == 1:
                await self._fail(rows, exc)
                return
            for pending in rows:  # find the bad row(s): the others still commit
                await self._write_alone(pending)
            return
        except Exception as exc:
            await self._fail(rows, exc)
            return
        for pending in rows:
            key = pending.values[_KEY]
            pending.finish(None if key in inserted else self._conflict(pending.values))

    async def _write_alone(self, pending: _Pending) -> None:
        try:
            driver = await self._driver_connection()
            ok = await self._insert_one(driver, pending.values)
        except Exception as exc:
            await self._fail([pending], exc)
            return
        pending.finish(None if ok else self._conflict(pending.values))

    async def _fail(self, rows: Sequence[_Pending], exc: Exception) -> None:
        if not isinstance(exc, self.statement_errors) or self._broken():
            await self._discard_connection()
        for pending in rows:
            error = self._error("Saving the step failed", exc, pending.values)
            error.__cause__ = exc
            pending.finish(error)

    @staticmethod
    def _conflict(values: RowValues) -> ConcurrentStepError:
        return ConcurrentStepError(
            app_id=values[1],
            partition_key=values[0] or None,
            sequence_id=values[2],
            action=values[3],
        )

    async def _driver_connection(self) -> Any:
        return await self._held.get()

    def _broken(self) -> bool:
        return False

    async def _discard_connection(self) -> None:
        await self._held.discard()

    async def aclose(self) -> None:
        """Let writes under way finish, refuse new ones, and return the held connections."""
        self._closed = True
        while self._leading:
            self._drained = anyio.Event()
            await self._drained.wait()
        await self._held.aclose()
        await self._reader.aclose()

    async def read_step(
        self, partition_key: str, app_id: str, sequence_id: int | None
    ) -> Sequence[Any] | None:
        """A step's row (see :meth:`fetch_step`), read on the held reader connection, or on a
        connection from the pool while another read holds it."""
        if self._reading:
            async with self._engine.connect() as conn:
                raw = await conn.get_raw_connection()
                return await self.fetch_step(
                    raw.driver_connection, partition_key, app_id, sequence_id
                )
        self._reading = True
        try:
            return await self.fetch_step(
                await self._reader.get(), partition_key, app_id, sequence_id
            )
        except BaseException:  # failed or cancelled mid-statement: never reuse that connection
            with anyio.CancelScope(shield=True):
                await self._reader.discard()
            raise
        finally:
            self._reading = False

    def parse_created_at(self, value: Any) -> dt.datetime:
        """``created_at`` as the driver returns it, as a datetime."""
        return value  # type: ignore[no-any-return]

    async def fetch_step(
        self, driver: Any, partition_key: str, app_id: str, sequence_id: int | None
    ) -> Sequence[Any] | None:
        """The row of a step (the latest when ``sequence_id`` is None): the values of
        :data:`COLUMNS` from ``sequence_id`` on, ``state`` as JSON text, read on ``driver``."""
        raise NotImplementedError

    async def _insert_one(self, driver: Any, values: RowValues) -> bool:
        raise NotImplementedError

    async def _insert_many(self, driver: Any, rows: list[RowValues]) -> set[tuple[Any, ...]]:
        raise NotImplementedError


class _PostgresWriter(_GroupWriter):
    """asyncpg: a prepared single-row INSERT, and ``unnest`` of column arrays for a batch (one
    prepared statement whatever the batch size)."""

    def __init__(self, engine: AsyncEngine, table: sa.Table, error: ErrorFactory) -> None:
        import asyncpg

        super().__init__(engine, table, error)
        self.statement_errors = (asyncpg.PostgresError, ValueError, TypeError, OverflowError)
        placeholders = ", ".join(
            f"${i}::text::jsonb" if name == "state" else f"${i}"
            for i, name in enumerate(COLUMNS, start=1)
        )
        self._one_sql = (
            f"INSERT INTO {self._table_sql} ({self._columns_sql}) VALUES ({placeholders}) "
            "ON CONFLICT DO NOTHING"
        )
        types = (
            "text",
            "text",
            "int",
            "text",
            "text",
            "text",
            "text",
            "timestamptz",
            "text",
            "text",
            "int",
        )
        arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, start=1))
        aliases = ", ".join(f"c{i}" for i in range(len(COLUMNS)))
        selected = ", ".join(
            f"c{i}::jsonb" if name == "state" else f"c{i}" for i, name in enumerate(COLUMNS)
        )
        self._many_sql = (
            f"INSERT INTO {self._table_sql} ({self._columns_sql}) SELECT {selected} FROM "
            f"unnest({arrays}) AS u({aliases}) ON CONFLICT DO NOTHING RETURNING {self._key_sql}"
        )

    def _broken(self) -> bool:
        driver = self._held.driver
        return driver is None or bool(driver.is_closed())

    async def fetch_step(
        self, driver: Any, partition_key: str, app_id: str, sequence_id: int | None
    ) -> Sequence[Any] | None:
        if sequence_id is None:
            record = await driver.fetchrow(self._latest_sql, partition_key, app_id)
        else:
            record = await driver.fetchrow(self._step_sql, partition_key, app_id, sequence_id)
        return None if record is None else tuple(record)

    async def _insert_one(self, driver: Any, values: RowValues) -> bool:
        status: str = await driver.execute(self._one_sql, *values)
        return status.endswith(" 1")

    async def _insert_many(self, driver: Any, rows: list[RowValues]) -> set[tuple[Any, ...]]:
        columns = list(zip(*rows, strict=True))
        records = await driver.fetch(self._many_sql, *columns)
        return {tuple(record) for record in records}


class _SQLiteWriter(_GroupWriter):
    """aiosqlite: one multi-row ``INSERT ... RETURNING`` per batch, run with a single hop to
    aiosqlite's thread (``execute_fetchall``)."""

    statement_errors = (
        sqlite3.IntegrityError,
        sqlite3.DataError,
        sqlite3.InterfaceError,
        ValueError,
        TypeError,
        OverflowError,
    )
    invalidate_failed = False

    def __init__(self, engine: AsyncEngine, table: sa.Table, error: ErrorFactory) -> None:
        super().__init__(engine, table, error)
        dialect = engine.dialect
        created = table.c.created_at.type.dialect_impl(dialect).bind_processor(dialect)
        self._created: Callable[[dt.datetime], Any] = created or (lambda value: value)
        parse = table.c.created_at.type.dialect_impl(dialect).result_processor(dialect, None)
        self._parse_created: Callable[[Any], Any] = parse or (lambda value: value)
        self._row_sql = "(" + ", ".join(self._placeholders(len(COLUMNS))) + ")"
        self._sql_by_size: dict[int, str] = {}

    def _sql(self, size: int) -> str:
        sql = self._sql_by_size.get(size)
        if sql is None:
            sql = (
                f"INSERT INTO {self._table_sql} ({self._columns_sql}) VALUES "
                + ", ".join([self._row_sql] * size)
                + f" ON CONFLICT DO NOTHING RETURNING {self._key_sql}"
            )
            self._sql_by_size[size] = sql
        return sql

    def parse_created_at(self, value: Any) -> dt.datetime:
        return self._parse_created(value)  # type: ignore[no-any-return]

    @staticmethod
    def _placeholders(count: int) -> list[str]:
        return ["?"] * count

    async def fetch_step(
        self, driver: Any, partition_key: str, app_id: str, sequence_id: int | None
    ) -> Sequence[Any] | None:
        if sequence_id is None:
            rows = await driver.execute_fetchall(self._latest_sql, (partition_key, app_id))
        else:
            rows = await driver.execute_fetchall(
                self._step_sql, (partition_key, app_id, sequence_id)
            )
        return tuple(rows[0]) if rows else None

    def _params(self, values: RowValues) -> RowValues:
        return (*values[:7], self._created(values[7]), *values[8:])

    async def _insert_one(self, driver: Any, values: RowValues) -> bool:
        return bool(await driver.execute_fetchall(self._sql(1), self._params(values)))

    async def _insert_many(self, driver: Any, rows: list[RowValues]) -> set[tuple[Any, ...]]:
        params = [p for values in rows for p in self._params(values)]
        records = await driver.execute_fetchall(self._sql(len(rows)), params)
        return {tuple(record) for record in records}


def make_writer(engine: AsyncEngine, table: sa.Table, error: ErrorFactory) -> _GroupWriter:
    """The writer for ``engine``'s driver: asyncpg (Postgres) or aiosqlite (SQLite).
    ``engine`` must be in autocommit mode (``execution_options(isolation_level="AUTOCOMMIT")``):
    a row is committed by the statement that inserts it."""
    writers: dict[tuple[str, str], type[_GroupWriter]] = {
        ("postgresql", "asyncpg"): _PostgresWriter,
        ("sqlite", "aiosqlite"): _SQLiteWriter,
    }
    writer = writers.get((engine.dialect.name, engine.dialect.driver))
    if writer is None:
        raise ConfigurationError(
            f"The engine uses {engine.dialect.name}+{engine.dialect.driver}; burr_async's "
            "persister runs on postgresql+asyncpg or sqlite+aiosqlite. Create the engine with "
            "one of those drivers (burr_async.persistence.create_engine picks them for you)."
        )
    return writer(engine, table, error)
