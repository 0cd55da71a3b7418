"""The group-commit writer against a fake dialect: hand-off, batching, row isolation, failing
fast, and settling writes whose outcome is open. No database."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from burr_async.errors import CommitUnknownError, ConcurrentStepError
from burr_async.persistence import _writer
from burr_async.persistence._writer import GroupWriter

pytestmark = pytest.mark.anyio

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class RowRejected(Exception):
    """What the fake database raises for a row's bad data."""


class ServerError(Exception):
    """A statement error that says nothing about any one row (a timeout, a read-only server)."""


class Deadlock(Exception):
    """The fake database aborted a statement to break a cycle of lock waits."""


class _Connection:
    close_delay = 0.0  # how long returning a connection to the pool takes

    def __init__(self, driver: object) -> None:
        self.driver_connection = driver
        self.closed = False

    def __await__(self) -> Any:
        yield from asyncio.sleep(0).__await__()
        return self

    async def __aenter__(self) -> _Connection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get_raw_connection(self) -> _Connection:
        return self

    async def close(self) -> None:
        await anyio.sleep(self.close_delay)
        self.closed = True

    async def invalidate(self) -> None:
        self.closed = True


class FakeEngine:
    def __init__(self) -> None:
        self.opened: list[_Connection] = []

    def connect(self) -> _Connection:
        connection = _Connection(object())
        self.opened.append(connection)
        return connection


def row(app: str, seq: int = 0, state: str = "{}", position: str = "a") -> tuple[Any, ...]:
    return ("p", app, seq, position, "completed", state, None, NOW, None, None, None)


class FakeDialect:
    """Stores rows in a dict; each behaviour the writer must handle can be switched on."""

    invalidate_failed = True

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready  # whether an idle write goes from the caller's task (ready_to_write)
        self.rows: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self.statements: list[int] = []  # the batch size of every INSERT sent
        self.gate: anyio.Event | None = None
        self.bad_apps: set[str] = set()
        self.fail_batches: Exception | None = None
        self.lose_reply = False
        self.fail_write: Exception | None = None
        self.reads_fail = 0
        self.time_out: str | None = None  # "stored" / "not_stored": no answer in time
        self.reads_hang = False  # the database stops answering reads
        self.aborted: list[object] = []  # driver connections dropped after a failure

    def _insert(self, values: tuple[Any, ...]) -> bool:
        if values[1] in self.bad_apps:
            raise RowRejected(values[1])
        if values[:3] in self.rows:
            return False
        self.rows[values[:3]] = values
        return True

    async def insert_one(self, driver: object, values: tuple[Any, ...]) -> bool:
        self.statements.append(1)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_write is not None:
            raise self.fail_write
        if self.time_out == "not_stored":  # still running when the client gave up
            raise TimeoutError
        inserted = self._insert(values)
        if self.lose_reply:
            raise ConnectionResetError("the reply was lost")
        if self.time_out == "stored":  # committed, but the answer never came
            raise TimeoutError
        return inserted

    async def insert_many(
        self, driver: object, rows: Sequence[tuple[Any, ...]]
    ) -> set[tuple[Any, ...]]:
        self.statements.append(len(rows))
        if self.fail_batches is not None:
            raise self.fail_batches
        if any(values[1] in self.bad_apps for values in rows):
            raise RowRejected("a row in the batch")
        return {values[:3] for values in rows if self._insert(values)}

    async def before_write(self, connection: object, driver: object) -> None:
        return None

    def is_row_error(self, exc: BaseException) -> bool:
        return isinstance(exc, RowRejected)

    def is_deadlock(self, exc: BaseException) -> bool:
        return isinstance(exc, Deadlock)

    def outcome_unknown(self, exc: BaseException) -> bool:
        return isinstance(exc, ConnectionResetError | TimeoutError)

    def may_commit_later(self, exc: BaseException) -> bool:
        return isinstance(exc, TimeoutError)

    def is_broken(self, driver: object) -> bool:
        return False

    def ready_to_write(self, driver: object) -> bool:
        return self.ready

    def abort(self, driver: object) -> None:
        self.aborted.append(driver)

    async def is_stored(self, driver: object, values: tuple[Any, ...]) -> bool | None:
        if self.reads_hang:
            await anyio.sleep_forever()
        if self.reads_fail:
            self.reads_fail -= 1
            raise ConnectionResetError("the database is unreachable")
        stored = self.rows.get(values[:3])
        if stored is None:
            return None
        return stored[3:7] == values[3:7]


@pytest.fixture(params=[True, False], ids=["inline", "in-a-task"])
def dialect(request: pytest.FixtureRequest) -> FakeDialect:
    """Every test twice: an idle write sent from the caller's task, and from a task of its
    own (as when the held connection needs preparing first)."""
    return FakeDialect(ready=request.param)


@pytest.fixture
async def writer(dialect: FakeDialect, monkeypatch: pytest.MonkeyPatch) -> GroupWriter:
    monkeypatch.setattr(_writer, "SETTLE_DELAYS", (0.0, 0.0, 0.0))
    writer = GroupWriter(FakeEngine(), dialect)  # type: ignore[arg-type]
    if dialect.ready:  # a held connection already open: an idle write goes inline at once
        await writer._held.get()
    return writer


async def write_all(writer: GroupWriter, rows: list[tuple[Any, ...]]) -> list[Any]:
    """Each row's outcome: None, or the exception its write raised."""
    outcomes: list[Any] = [None] * len(rows)

    async def write(index: int) -> None:
        try:
            await writer.write(rows[index])
        except Exception as exc:
            outcomes[index] = exc

    async with anyio.create_task_group() as tg:
        for index in range(len(rows)):
            tg.start_soon(write, index)
            await anyio.lowlevel.checkpoint()  # the first one is now leading
    return outcomes


async def write_behind_a_slow_first(
    writer: GroupWriter, dialect: FakeDialect, rows: list[tuple[Any, ...]]
) -> list[Any]:
    """:func:`write_all`, the first statement held for 10 ms: the rows after the first queue
    up behind it and go as the next batch."""
    dialect.gate = anyio.Event()

    async def release() -> None:
        await anyio.sleep(0.01)
        assert dialect.gate is not None
        dialect.gate.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(release)
        return await write_all(writer, rows)


async def test_an_idle_writer_writes_at_once(writer: GroupWriter, dialect: FakeDialect) -> None:
    await writer.write(row("a"))
    assert dialect.statements == [1]
    assert ("p", "a", 0) in dialect.rows


async def test_rows_arriving_during_a_write_share_the_next_statement(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    outcomes = await write_behind_a_slow_first(writer, dialect, [row(f"a{i}") for i in range(6)])
    assert outcomes == [None] * 6
    assert dialect.statements == [1, 5]  # the leader alone, then everyone who queued behind it


async def test_a_taken_key_fails_alone(writer: GroupWriter, dialect: FakeDialect) -> None:
    await writer.write(row("taken"))
    dialect.gate = anyio.Event()
    dialect.gate.set()
    outcomes = await write_all(writer, [row("x"), row("taken", state='{"v": 2}'), row("y")])
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], ConcurrentStepError)
    assert outcomes[1].app_id == "taken"


async def test_a_bad_row_is_isolated_and_the_others_commit(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    dialect.bad_apps = {"bad"}
    outcomes = await write_behind_a_slow_first(
        writer, dialect, [row("lead"), row("b1"), row("bad"), row("b2")]
    )
    assert [type(o).__name__ if o else None for o in outcomes] == [
        None,
        None,
        "RowRejected",
        None,
    ]
    assert dialect.statements == [1, 3, 1, 1, 1]  # the batch failed, then row by row


async def test_an_error_about_no_row_fails_the_whole_batch_at_once(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    dialect.fail_batches = ServerError("statement timeout")
    outcomes = await write_behind_a_slow_first(writer, dialect, [row(f"a{i}") for i in range(5)])
    assert outcomes[0] is None
    assert all(isinstance(o, ServerError) for o in outcomes[1:])
    assert dialect.statements == [1, 4]  # nothing retried alone


async def test_a_batch_aborted_to_break_a_deadlock_is_written_row_by_row(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    dialect.fail_batches = Deadlock("deadlock detected")
    outcomes = await write_behind_a_slow_first(writer, dialect, [row(f"a{i}") for i in range(4)])
    assert outcomes == [None] * 4  # every row stored
    assert dialect.statements == [1, 3, 1, 1, 1]  # the batch was aborted, then row by row
    assert len(dialect.rows) == 4


async def test_a_lost_reply_of_a_stored_row_counts_as_committed(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    dialect.lose_reply = True
    await writer.write(row("a"))
    assert ("p", "a", 0) in dialect.rows


async def test_a_lost_write_that_was_not_stored_raises_its_error(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    dialect.fail_write = ConnectionResetError("lost before the insert")
    with pytest.raises(ConnectionResetError, match="before the insert"):
        await writer.write(row("a"))


async def test_a_lost_write_whose_key_holds_another_step_is_a_conflict(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    dialect.rows[("p", "a", 0)] = row("a", position="other")
    dialect.fail_write = ConnectionResetError("lost")
    with pytest.raises(ConcurrentStepError):
        await writer.write(row("a"))


async def test_an_outcome_that_cannot_be_read_back_is_unknown_until_written_again(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    dialect.lose_reply = True
    dialect.reads_fail = 100
    with pytest.raises(CommitUnknownError) as info:
        await writer.write(row("a", state='{"v": 1}'))
    assert (info.value.app_id, info.value.sequence_id) == ("a", 0)
    dialect.lose_reply = False
    dialect.reads_fail = 0
    await writer.write(row("a", state='{"v": 1}'))  # the very same step: it had landed
    # settled: a write of the same key is an ordinary conflict again
    with pytest.raises(ConcurrentStepError):
        await writer.write(row("a", state='{"v": 1}'))


async def test_writing_another_step_after_an_unknown_outcome_is_a_conflict(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    dialect.lose_reply = True
    dialect.reads_fail = 100
    with pytest.raises(CommitUnknownError):
        await writer.write(row("a", state='{"v": 1}'))
    dialect.lose_reply = False
    dialect.reads_fail = 0
    with pytest.raises(ConcurrentStepError):
        await writer.write(row("a", state='{"v": 2}'))


async def test_a_write_without_an_answer_in_time_is_dropped_and_read_back_on_a_new_connection(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    """The statement timed out after it committed: the silent connection is dropped at once
    (not closed gracefully: it would wait for an answer too) and the read-back settles it."""
    engine: FakeEngine = writer._engine  # type: ignore[assignment]
    dialect.time_out = "stored"
    await writer.write(row("a"))
    assert ("p", "a", 0) in dialect.rows
    silent = engine.opened[0]
    assert dialect.aborted == [silent.driver_connection] and silent.closed
    dialect.time_out = None
    await writer.write(row("b"))  # on a new writer connection
    writers = [c for c in engine.opened if c is not silent and not c.closed]
    assert len(writers) == 2  # the new writer and the reader


async def test_a_timed_out_write_not_stored_yet_is_unknown_not_failed(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    """No row at the key proves nothing after a timeout: the database may still commit the
    statement. CommitUnknownError, and writing the same step again counts it either way."""
    dialect.time_out = "not_stored"
    with pytest.raises(CommitUnknownError, match="may still be running it"):
        await writer.write(row("a", state='{"v": 1}'))
    dialect.time_out = None
    dialect.rows[("p", "a", 0)] = row("a", state='{"v": 1}')  # it committed after all
    await writer.write(row("a", state='{"v": 1}'))
    with pytest.raises(ConcurrentStepError):  # settled
        await writer.write(row("a", state='{"v": 1}'))


async def test_read_backs_that_get_no_answer_end_within_the_settle_timeout(
    writer: GroupWriter, dialect: FakeDialect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that stops answering altogether: the write times out, then every read-back
    would wait too; the whole settling is cut at SETTLE_TIMEOUT and the step is unknown."""
    monkeypatch.setattr(_writer, "SETTLE_TIMEOUT", 0.2)
    dialect.time_out = "stored"
    dialect.reads_hang = True
    started = anyio.current_time()
    with anyio.fail_after(5), pytest.raises(CommitUnknownError, match="went silent"):
        await writer.write(row("a", state='{"v": 1}'))
    assert 0.2 <= anyio.current_time() - started < 1
    assert len(dialect.aborted) == 2  # the writer's connection and the reader's
    dialect.time_out, dialect.reads_hang = None, False
    await writer.write(row("a", state='{"v": 1}'))  # the same step again: committed
    await writer.aclose()


async def test_a_taken_key_never_counts_as_this_step_unless_its_outcome_was_open(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    """Two writers racing with identical rows: the loser still gets ConcurrentStepError."""
    dialect.rows[("p", "a", 0)] = row("a")
    with pytest.raises(ConcurrentStepError):
        await writer.write(row("a"))


async def test_concurrent_acloses_wait_for_the_write_in_flight(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    dialect.gate = anyio.Event()
    closed: list[int] = []

    async def close(index: int) -> None:
        await writer.aclose()
        closed.append(index)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.write, row("a"))
            await anyio.sleep(0.01)
            tg.start_soon(close, 1)
            tg.start_soon(close, 2)
            await anyio.sleep(0.01)
            assert closed == []  # both wait for the write
            dialect.gate.set()
    assert sorted(closed) == [1, 2]
    assert ("p", "a", 0) in dialect.rows


async def test_concurrent_acloses_return_once_every_held_connection_is_back(
    writer: GroupWriter, dialect: FakeDialect, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each caller may dispose the engine as soon as aclose returns: a connection still on its
    way back to the pool then would never be closed (aiosqlite: "deleted before being
    closed")."""
    engine: FakeEngine = writer._engine  # type: ignore[assignment]
    await writer.write(row("a"))
    await writer._read(dialect.is_stored, row("a"))  # now the writer and the reader are held
    assert len(engine.opened) == 2
    monkeypatch.setattr(_Connection, "close_delay", 0.01)
    still_open: list[int] = []

    async def close() -> None:
        await writer.aclose()
        still_open.append(sum(not c.closed for c in engine.opened))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(close)
            tg.start_soon(close)
    assert still_open == [0, 0]
    await writer.aclose()  # and again, later: nothing left to do


async def test_a_cancelled_write_still_settles_before_the_cancellation(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    dialect.gate = anyio.Event()
    scope = anyio.CancelScope()
    returned: list[bool] = []

    async def cancelled_write() -> None:
        with scope:
            await writer.write(row("a"))  # runs to its end under the cancelled scope
            await anyio.lowlevel.checkpoint()  # where the scope's cancellation arrives
            returned.append(True)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancelled_write)
            await anyio.sleep(0.01)
            scope.cancel()
            await anyio.sleep(0.01)
            assert ("p", "a", 0) not in dialect.rows  # still writing, despite the cancel
            dialect.gate.set()
    assert returned == []
    assert scope.cancelled_caught
    assert ("p", "a", 0) in dialect.rows


async def test_a_cancelled_write_that_fails_tells_both_and_raises_the_cancellation(
    writer: GroupWriter, dialect: FakeDialect
) -> None:
    """The row is refused while its caller is being cancelled: ``write_settled`` hands back
    the error and the cancellation, ``write`` raises the cancellation (as a task's would);
    nothing is stored, and the writer leads the next write as before."""
    for settled in (True, False):
        dialect.gate = anyio.Event()
        dialect.fail_write = RowRejected("a")
        call = writer.write_settled(row("a")) if settled else writer.write(row("a"))
        task = asyncio.ensure_future(call)
        await asyncio.sleep(0.01)
        task.cancel("stop")
        await asyncio.sleep(0.01)
        assert not task.done()  # the statement is still running
        dialect.gate.set()
        if settled:
            error, cancellation = await task  # type: ignore[misc]
            assert isinstance(error, RowRejected)
            assert cancellation is not None and cancellation.args == ("stop",)
        else:
            with pytest.raises(asyncio.CancelledError, match="stop"):
                await task
        assert ("p", "a", 0) not in dialect.rows
    dialect.gate, dialect.fail_write = None, None
    with anyio.fail_after(5):
        await writer.write(row("a"))
    assert ("p", "a", 0) in dialect.rows
