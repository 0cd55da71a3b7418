"""The hot paths: group commit over a held writer connection, and loads on a held reader.

A step's row is handed to :meth:`GroupWriter.write`, which returns once the row is committed
(or raises). When no write is in flight the caller writes its row at once, one statement in
autocommit mode: one round trip on Postgres, one thread hop on SQLite. Rows that arrive while a
write is in flight queue up and go together in the next statement (one multi-row
``INSERT ... ON CONFLICT DO NOTHING RETURNING``, so one commit for all of them); every caller is
released when its row's statement has committed. A row whose key is taken fails alone with
:class:`~burr_async.errors.ConcurrentStepError`; a row the database or the driver rejects
(bad data) is retried alone so that it cannot sink the others; any other failure fails the
batch at once.

When a write fails in a way that leaves its outcome open (the connection broke, the reply was
lost, the database did not answer within the dialect's statement timeout), its connection is
dropped and the caller reads its key back on another one, comparing what is stored with the
exact row it sent: the same step means committed, no row means not stored (unless the statement
may still be running, after a timeout), another step is a conflict. The read-backs take at most
:data:`SETTLE_TIMEOUT` in all. If they cannot tell, :class:`~burr_async.errors.CommitUnknownError`;
writing the same step again then settles it (a taken key holding that very step counts as
committed, for keys left open that way). So no wait of a write is unbounded, although a write
cannot be cancelled: a silent connection holds a step for the statement timeout plus the
read-backs, at most.

Loading a step (what resuming costs) is one statement on a second held connection; a load that
overlaps another checks a connection out of the pool instead.

The writer knows no database: the statements and the meaning of errors come from a
:class:`~burr_async.persistence._dialect.Dialect`. It raises the driver's own errors (and
ConcurrentStepError / CommitUnknownError); the persister translates them at its seam.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from burr_async._shield import Shielded, settle
from burr_async.errors import AppDeletedError, CommitUnknownError, ConcurrentStepError
from burr_async.persistence._dialect import KEY, Dialect, Key, RowValues
from burr_async.persistence._observed import COMMIT_BATCH

__all__: list[str] = []

T = TypeVar("T")

MAX_BATCH = 200
SETTLE_DELAYS = (0.0, 0.1, 0.25, 0.5, 1.0)
"""Pauses before each read-back of a write whose outcome is open (about 2 s in all)."""
SETTLE_TIMEOUT = 5.0
"""The longest the read-backs of one write take in all, pauses included: past it (the database
does not answer, or a new connection cannot be opened), CommitUnknownError."""
_UNSETTLED_LIMIT = 10_000


class _NotInserted(Exception):
    """A row the INSERT skipped: its caller finds out why (see ``_not_inserted``)."""


class _Pending:
    """One row waiting to be written, and how its write ended."""

    __slots__ = ("_wake", "batch", "error", "finished", "values")

    def __init__(self, values: RowValues) -> None:
        self.values = values
        self._wake: anyio.Event | None = None
        self.finished = False
        self.error: BaseException | None = None
        self.batch = 1  # rows in the statement that wrote it

    async def wait(self) -> None:
        """Sleep until the row is written or its turn to lead a batch comes."""
        self._wake = anyio.Event()
        await self._wake.wait()

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def finish(self, error: BaseException | None = None, batch: int = 1) -> None:
        self.error = error
        self.batch = batch
        self.finished = True
        self.wake()


class _HeldConnection:
    """One connection of the engine's pool, held between uses (no checkout per statement) and
    replaced after a failure."""

    __slots__ = ("_abort", "_engine", "_invalidate", "connection", "driver")

    def __init__(
        self, engine: AsyncEngine, *, invalidate: bool, abort: Callable[[Any], None]
    ) -> None:
        self._engine = engine
        self._invalidate = invalidate
        self._abort = abort
        self.connection: AsyncConnection | None = None
        self.driver: Any = None

    async def get(self) -> Any:
        """The driver connection (asyncpg or aiosqlite), opened on first use."""
        if self.driver is None:
            self.connection = await self._engine.connect()
            raw = await self.connection.get_raw_connection()
            self.driver = raw.driver_connection
        return self.driver

    async def discard(self) -> None:
        """Let go of the connection after a failure; the next ``get`` checks one out again.
        A network connection is dropped at once and invalidated (it may be broken or silent);
        an embedded one is returned."""
        connection, driver = self.connection, self.driver
        self.connection, self.driver = None, None
        if connection is not None:
            await _release(connection, driver, invalidate=self._invalidate, abort=self._abort)

    async def aclose(self) -> None:
        """Return the connection to the pool."""
        connection, self.connection, self.driver = self.connection, None, None
        if connection is not None:
            await connection.close()


def _note_commit(rows: int) -> None:
    """Tell a tracing hook's save span, when one listens, how many rows the commit held."""
    note = COMMIT_BATCH.get()
    if note is not None:
        note.append(rows)


async def _release(
    connection: AsyncConnection, driver: Any, *, invalidate: bool, abort: Callable[[Any], None]
) -> None:
    """Give a connection back after a failure: a network one (``invalidate``) is dropped at once
    and invalidated, so that the pool opens a new one; an embedded one is returned."""
    try:
        if invalidate:
            abort(driver)
            await connection.invalidate()
        await connection.close()
    except Exception:  # the connection is already gone; nothing left to release
        return


class GroupWriter:
    """Serialises the rows of every application using one persister through one connection,
    batching those that arrive together (see the module docstring)."""

    def __init__(self, engine: AsyncEngine, dialect: Dialect) -> None:
        self._engine = engine  # in autocommit mode: each statement is its own transaction
        self.dialect = dialect
        self._queue: list[_Pending] = []
        self._leading = False
        self._held = _HeldConnection(
            engine, invalidate=dialect.invalidate_failed, abort=dialect.abort
        )
        self._reader = _HeldConnection(
            engine, invalidate=dialect.invalidate_failed, abort=dialect.abort
        )
        self._reading = False
        self._active_reads = 0
        # made by aclose() when it must wait: set once the writes and reads under way end
        self._idle: anyio.Event | None = None
        self._closed: anyio.Event | None = None  # set once aclose has returned the connections
        self._unsettled: dict[Key, None] = {}  # keys whose write's outcome was left open

    # -- writing ------------------------------------------------------------------------------
    async def write(self, values: RowValues) -> None:
        """Commit one row. Raises ConcurrentStepError when its key holds another step,
        CommitUnknownError when whether it committed cannot be told, and the driver's error
        when it was not stored. Once called it runs to completion: a cancellation (anyio or
        asyncio) is raised only after the row's fate is settled (instead of its error, if it
        failed)."""
        error, cancellation = await self.write_settled(values)
        if cancellation is not None:
            raise cancellation
        if error is not None:
            raise error

    async def write_settled(
        self, values: RowValues
    ) -> tuple[Exception | None, asyncio.CancelledError | None]:
        """:meth:`write`, telling how it ended instead of raising: ``(error, cancellation)``,
        the error :meth:`write` would raise (None: the row is committed) and the cancellation
        of the caller that arrived meanwhile, if one did (the caller raises it once its own
        bookkeeping is done). Runs to its end whatever cancels the caller.

        An idle writer whose held connection is ready sends the row from the calling task
        itself, the statement awaited :class:`~burr_async._shield.Shielded` (no task, one turn
        of the event loop more than the bare statement); a failed statement is settled as
        :meth:`write` settles it. Otherwise the row joins the group as above, in a task of its
        own (:func:`~burr_async._shield.settle`)."""
        driver = self._held.driver
        if (
            self._leading
            or self._queue
            or driver is None
            or not self.dialect.ready_to_write(driver)
        ):
            outcome = await settle(self._write(values))
            return outcome.error, outcome.cancellation
        self._leading = True  # rows arriving meanwhile queue up behind this one, as in _group
        statement = Shielded(self.dialect.insert_one(driver, values))
        failure: Exception | None = None
        cancellation: asyncio.CancelledError | None = None
        try:
            try:
                inserted = await statement
            except Exception as exc:
                failure = exc
            else:
                failure = None if inserted else _NotInserted()
            cancellation = statement.cancellation
            if (
                failure is not None
                and not isinstance(failure, _NotInserted)
                and self._left_unfit(failure)
            ):
                dropped = await settle(self._held.discard())
                cancellation = cancellation or dropped.cancellation
        finally:
            self._hand_over()
        if failure is None:
            self._unsettled.pop(values[KEY], None)
            _note_commit(1)
            return None, cancellation
        outcome = await settle(self._finish(values, failure))
        return outcome.error, cancellation or outcome.cancellation

    async def _write(self, values: RowValues) -> None:
        try:
            await self._group(values)
        except Exception as exc:
            await self._finish(values, exc)
        else:
            await self._finish(values, None)

    async def _finish(self, values: RowValues, failure: Exception | None) -> None:
        """What follows a row's statement: nothing when it was inserted (``failure`` None),
        else finding out why it was not (a taken key, a deleted app) or settling a write whose
        outcome is open; raises what the write raises."""
        if isinstance(failure, _NotInserted):
            await self._not_inserted(values)
        elif isinstance(failure, ConcurrentStepError):  # a repeat of a step its batch committed
            raise failure
        elif failure is not None:
            if not self.dialect.outcome_unknown(failure):
                raise failure
            await self._settle(values, failure)
        self._unsettled.pop(values[KEY], None)

    async def _settle(self, values: RowValues, cause: Exception) -> None:
        """After a write failed with its outcome open: read the key back until it can be told
        whether this row is stored, for at most SETTLE_TIMEOUT."""
        absent = False  # read back, and not stored (yet)
        with anyio.move_on_after(SETTLE_TIMEOUT):
            for delay in SETTLE_DELAYS:
                await anyio.sleep(delay)
                try:
                    stored = await self._read(self._stored, values)
                except Exception:  # still unreachable: try again after a pause
                    continue
                if stored:
                    return
                if stored is not None:
                    raise self._conflict(values) from cause
                if not self.dialect.may_commit_later(cause):
                    raise cause  # not stored: the caller may retry
                absent = True
                break
        key: Key = values[KEY]
        self._unsettled[key] = None
        while len(self._unsettled) > _UNSETTLED_LIMIT:
            del self._unsettled[next(iter(self._unsettled))]
        if absent:
            what = (
                "The step's write got no answer in time and is not stored yet, but the database "
                "may still be running it"
            )
        else:
            what = (
                "The step's write was sent but the connection failed (or went silent) before the "
                "database answered, and reading it back failed too"
            )
        raise CommitUnknownError(
            f"{what}; whether it committed is unknown. Writing this same step again settles it "
            "(the application does this on its next call)",
            app_id=key[1],
            partition_key=key[0] or None,
            sequence_id=key[2],
            action=values[KEY.stop],
        ) from cause

    async def _stored(self, driver: Any, values: RowValues) -> bool | None:
        return await self.dialect.is_stored(driver, values)

    async def _not_inserted(self, values: RowValues) -> None:
        """The row was not inserted: its key is taken (a conflict, unless it holds this very
        step after a write of it was left open), or the step before it is not stored."""
        try:
            stored = await self._read(self._stored, values)
        except Exception:  # cannot tell: report the likelier conflict
            stored = False
        if stored is None:
            raise AppDeletedError(
                app_id=values[1],
                partition_key=values[0] or None,
                sequence_id=values[2],
                action=values[KEY.stop],
            )
        if not (stored and values[KEY] in self._unsettled):
            raise self._conflict(values)

    async def _group(self, values: RowValues) -> None:
        pending = _Pending(values)
        self._queue.append(pending)
        if self._leading:
            await pending.wait()
        if not pending.finished:  # idle writer, or leadership handed over to this row
            self._leading = True
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                await self._flush(batch)
            except Exception as exc:  # unexpected: still, no caller is left waiting
                for row in batch:
                    if not row.finished:
                        row.finish(exc)
            finally:
                self._hand_over()
        if pending.error is not None:
            raise pending.error
        _note_commit(pending.batch)

    def _hand_over(self) -> None:
        """End this leader's turn: the next waiting row leads the next batch, or the writer
        is idle."""
        if self._queue:
            self._queue[0].wake()
        else:
            self._leading = False
            self._set_idle()

    async def _flush(self, batch: list[_Pending]) -> None:
        unique: dict[Key, _Pending] = {}
        repeats: list[_Pending] = []
        for pending in batch:
            key = pending.values[KEY]
            if key in unique:  # two writes of one step: decided once the first has settled
                repeats.append(pending)
            else:
                unique[key] = pending
        await self._flush_unique(list(unique.values()))
        for pending in repeats:
            if unique[pending.values[KEY]].error is None:
                pending.finish(self._conflict(pending.values))
            else:  # the first was refused: this one may still be the one that commits
                await self._write_alone(pending)

    async def _flush_unique(self, rows: list[_Pending]) -> None:
        try:
            driver = await self._writer_connection()
            if len(rows) == 1:
                ok = await self.dialect.insert_one(driver, rows[0].values)
                inserted = {rows[0].values[KEY]} if ok else set()
            else:
                inserted = await self.dialect.insert_many(driver, [p.values for p in rows])
        except Exception as exc:
            if len(rows) > 1 and (self.dialect.is_row_error(exc) or self.dialect.is_deadlock(exc)):
                # find the bad row(s), or step out of the lock cycle: the others still commit
                for pending in rows:
                    await self._write_alone(pending)
                return
            await self._fail(rows, exc)
            return
        for pending in rows:
            key = pending.values[KEY]
            pending.finish(None if key in inserted else _NotInserted(), len(rows))

    async def _write_alone(self, pending: _Pending) -> None:
        try:
            driver = await self._writer_connection()
            ok = await self.dialect.insert_one(driver, pending.values)
        except Exception as exc:
            await self._fail([pending], exc)
            return
        pending.finish(None if ok else _NotInserted())

    async def _writer_connection(self) -> Any:
        driver = await self._held.get()
        assert self._held.connection is not None
        await self.dialect.before_write(self._held.connection, driver)
        return driver

    async def _fail(self, rows: Sequence[_Pending], exc: Exception) -> None:
        if self._left_unfit(exc):
            await self._held.discard()
        for pending in rows:
            pending.finish(exc)

    def _left_unfit(self, exc: Exception) -> bool:
        """Whether a statement's failure ``exc`` leaves the held writer connection unfit for
        the next leader (it is then let go of)."""
        return self.dialect.outcome_unknown(exc) or self.dialect.is_broken(self._held.driver)

    @staticmethod
    def _conflict(values: RowValues) -> ConcurrentStepError:
        return ConcurrentStepError(
            app_id=values[1],
            partition_key=values[0] or None,
            sequence_id=values[2],
            action=values[KEY.stop],
        )

    # -- reading ------------------------------------------------------------------------------
    async def read_step(
        self, partition_key: str, app_id: str, sequence_id: int | None
    ) -> list[Sequence[Any]]:
        """A step's stored columns, after the rows its state is rebuilt from (see
        :meth:`Dialect.fetch_step`)."""
        return await self._read(self.dialect.fetch_step, partition_key, app_id, sequence_id)

    async def read_history(
        self, partition_key: str, app_id: str, after: int, limit: int
    ) -> list[Sequence[Any]]:
        """The stored columns of the steps after ``after``, oldest first, at most ``limit``."""
        return await self._read(self.dialect.fetch_history, partition_key, app_id, after, limit)

    async def _read(self, query: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``query(driver, *args)`` on the held reader connection, or on a connection from the
        pool while another read holds it."""
        self._active_reads += 1
        try:
            if self._reading:
                async with self._engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    try:
                        return await query(raw.driver_connection, *args)
                    except BaseException:  # as below: never back to the pool mid-statement
                        with anyio.CancelScope(shield=True):
                            await _release(
                                conn,
                                raw.driver_connection,
                                invalidate=self.dialect.invalidate_failed,
                                abort=self.dialect.abort,
                            )
                        raise
            self._reading = True
            try:
                return await query(await self._reader.get(), *args)
            except BaseException:  # failed or cancelled mid-statement: never reuse it
                with anyio.CancelScope(shield=True):
                    await self._reader.discard()
                raise
            finally:
                self._reading = False
        finally:
            self._active_reads -= 1
            self._set_idle()

    def parse_created_at(self, value: Any) -> Any:
        """``created_at`` as the driver returns it, as an aware datetime."""
        return self.dialect.parse_created_at(value)

    # -- lifecycle ----------------------------------------------------------------------------
    def _set_idle(self) -> None:
        if self._idle is not None and not self._leading and not self._active_reads:
            self._idle.set()
            self._idle = None

    async def aclose(self) -> None:
        """Wait for the writes and reads under way, then return the held connections. Safe to
        call several times, and concurrently: every caller waits for the same end, the held
        connections back in the pool (so that a caller may dispose the engine next)."""
        while self._leading or self._active_reads:  # writes or reads under way
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()
        if self._closed is not None:  # another caller is returning them: wait for it
            await self._closed.wait()
            return
        self._closed = closed = anyio.Event()
        try:
            await self._held.aclose()
            await self._reader.aclose()
        finally:
            self._closed = None
            closed.set()
