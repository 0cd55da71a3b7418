"""Postgres through asyncpg: everything burr_async knows about it lives here.

The write path's SQL (a prepared single-row INSERT, and ``unnest`` of column arrays for a batch:
one prepared statement whatever the batch size), the bound on how long each of its statements
waits for the server, error classification by SQLSTATE, and the advisory lock that lets several
processes provision one table at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from burr_async.persistence._dialect import Dialect, Key, RowValues
from burr_async.persistence.models import COLUMNS

__all__: list[str] = []

# SQLSTATE classes (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_ROW_CLASSES = ("22", "23")  # data exception, integrity constraint violation
_CONNECTION_CLASS = "08"  # connection exception
# operator intervention that ends the session: the statement may have committed before it
_SESSION_ENDED = ("57P01", "57P02", "57P03", "57P04", "57P05")
_UNDEFINED = ("42P01", "3F000")  # undefined_table, invalid_schema_name
_DEADLOCK = "40P01"  # deadlock_detected: the statement was rolled back

STATEMENT_TIMEOUT = 30.0
"""Seconds a statement of the write path or of a load waits for the server's answer, unless the
connection has asyncpg's own ``command_timeout`` (``connect_args={"command_timeout": ...}``),
which then applies instead. A connection that stops answering (a network partition: no reply,
no reset) would otherwise hold a write, which cancellation cannot interrupt, for as long as TCP
keeps the socket. Past it, asyncpg asks the server to cancel the statement and raises
TimeoutError: the write's outcome is open, its connection is dropped, and the writer reads the
row back on another one (see ``_writer``). 30 s, as SQLite's busy timeout: one INSERT takes
milliseconds, a batch of large states on a loaded server seconds."""


def _timeout(driver: Any) -> float:
    """The bound for one statement on ``driver``: its ``command_timeout`` when it has one."""
    # asyncpg keeps the connection's settings in ``_config`` and offers no public accessor;
    # without it, the default applies
    own = getattr(getattr(driver, "_config", None), "command_timeout", None)
    return float(own) if own is not None else STATEMENT_TIMEOUT


def _sqlstate(exc: BaseException) -> str:
    """The SQLSTATE of an asyncpg error, or of the asyncpg error SQLAlchemy wrapped."""
    for candidate in (exc, getattr(exc, "orig", None), exc.__cause__):
        code = getattr(candidate, "sqlstate", None)
        if isinstance(code, str):
            return code
    return ""


class PostgresDialect(Dialect):
    """asyncpg: prepared statements, ``unnest`` batches, JSONB state."""

    name = "postgresql"
    driver = "asyncpg"
    supports_schema = True
    driver_errors = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    # KEY SHARE: the weakest lock a DELETE waits for (and the other writers of the app do not)
    predecessor_lock = " FOR KEY SHARE"

    def __init__(self, engine: AsyncEngine, table: sa.Table) -> None:
        super().__init__(engine, table)
        state = COLUMNS.index("state")
        seq, parent_seq = COLUMNS.index("sequence_id"), COLUMNS.index("parent_sequence_id")
        # the state travels as text and becomes JSONB in the server
        types = [
            "text" if name == "state" else column.type.compile(engine.dialect)
            for name, column in zip(self.columns, (table.c[c] for c in self.columns), strict=True)
        ]
        params = [f"${i}::{t}" for i, t in enumerate(types, start=1)]
        selected = ", ".join(f"{p}::jsonb" if i == state else p for i, p in enumerate(params))
        follows = self.follows_sql(params[0], params[1], params[seq], params[parent_seq])
        self._one_sql = (
            f"INSERT INTO {self.table_sql} ({self.columns_sql}) SELECT {selected} "
            f"WHERE {follows} ON CONFLICT DO NOTHING"
        )
        arrays = ", ".join(f"${i}::{t}[]" for i, t in enumerate(types, start=1))
        aliases = ", ".join(f"c{i}" for i in range(self.width))
        selected = ", ".join(
            f"u.c{i}::jsonb" if i == state else f"u.c{i}" for i in range(self.width)
        )
        follows = self.follows_sql("u.c0", "u.c1", f"u.c{seq}", f"u.c{parent_seq}")
        self._many_sql = (
            f"INSERT INTO {self.table_sql} ({self.columns_sql}) SELECT {selected} FROM "
            f"unnest({arrays}) AS u({aliases}) WHERE {follows} "
            f"ON CONFLICT DO NOTHING RETURNING {self.key_sql}"
        )

    async def insert_one(self, driver: Any, row: RowValues) -> bool:
        args = row[: self.width]  # a table at an older revision takes the first values only
        status: str = await driver.execute(self._one_sql, *args, timeout=_timeout(driver))
        return status.endswith(" 1")

    async def insert_many(self, driver: Any, rows: Sequence[RowValues]) -> set[Key]:
        columns = list(zip(*rows, strict=True))[: self.width]
        records = await driver.fetch(self._many_sql, *columns, timeout=_timeout(driver))
        return {tuple(record) for record in records}

    async def fetch(self, driver: Any, sql: str, args: list[Any]) -> Sequence[Any] | None:
        record = await driver.fetchrow(sql, *args, timeout=_timeout(driver))
        return None if record is None else tuple(record)

    async def fetch_all(self, driver: Any, sql: str, args: list[Any]) -> list[Sequence[Any]]:
        return list(await driver.fetch(sql, *args, timeout=_timeout(driver)))

    def same_state(self) -> sa.ColumnElement[Any]:
        # JSONB normalises what it stores (key order, spacing): compare as JSONB
        return self.table.c.state == sa.cast(sa.bindparam("state", type_=sa.Text), JSONB)

    async def before_write(self, connection: AsyncConnection, driver: Any) -> None:
        """Nothing to do: asyncpg has no client-side transaction state to drift."""
        return

    def is_broken(self, driver: Any) -> bool:
        return driver is None or bool(driver.is_closed())

    def ready_to_write(self, driver: Any) -> bool:
        return not self.is_broken(driver)  # before_write has nothing to do on asyncpg

    def abort(self, driver: Any) -> None:
        """Close the socket at once (asyncpg's ``terminate``): SQLAlchemy's invalidation would
        first try a graceful close, which waits up to 2 s on a connection gone silent."""
        if driver is not None:
            driver.terminate()

    def is_row_error(self, exc: BaseException) -> bool:
        if isinstance(exc, ValueError | TypeError | OverflowError):
            return True  # asyncpg could not encode a value (its DataError is a ValueError)
        return isinstance(exc, asyncpg.PostgresError) and _sqlstate(exc)[:2] in _ROW_CLASSES

    def is_deadlock(self, exc: BaseException) -> bool:
        # a batch's INSERT locks its rows' predecessors one by one (predecessor_lock), and a
        # DELETE of several apps' rows locks those: each may hold what the other waits for
        return isinstance(exc, asyncpg.PostgresError) and _sqlstate(exc) == _DEADLOCK

    def outcome_unknown(self, exc: BaseException) -> bool:
        if self.is_row_error(exc):
            return False
        if isinstance(exc, asyncpg.PostgresError):
            code = _sqlstate(exc)
            return code[:2] == _CONNECTION_CLASS or code in _SESSION_ENDED
        return True  # the connection broke, a timeout, the reply lost on the way

    def may_commit_later(self, exc: BaseException) -> bool:
        # asyncpg stopped waiting (STATEMENT_TIMEOUT); the server finishes the statement unless
        # the cancel request reached it, and the socket's close alone does not stop it
        return isinstance(exc, TimeoutError)

    def is_missing_table(self, exc: BaseException) -> bool:
        return _sqlstate(exc) in _UNDEFINED

    @staticmethod
    def join_driver_threads(timeout: float = 2.0) -> None:
        """Nothing to wait for: asyncpg runs on the event loop, in no thread of its own."""
        return

    @staticmethod
    def lock_for_migration(connection: sa.Connection, table_name: str, schema: str | None) -> None:
        """Several processes may provision at once (workers starting together): they queue on a
        transaction-scoped lock named after the table, and the later ones find it at head."""
        lock_name = f"burr_async:{schema or ''}.{table_name}"
        connection.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": lock_name}
        )
        if schema is not None:
            connection.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
