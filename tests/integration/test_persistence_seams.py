"""Regressions from the persistence seams: errors keep their type through ``astep``, a lost
acknowledgement is judged by what was sent, only data errors isolate rows, an in-memory
database stays in autocommit, and ``import burr_async`` loads no database code."""

from __future__ import annotations

import enum
import math
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from burr_async import (
    ApplicationBuilder,
    PersistenceError,
    SchemaOutOfDateError,
    SQLAlchemyPersister,
    State,
    action,
)
from tests.databases import Database

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]


def new_id() -> str:
    return str(uuid.uuid4())


async def _counter_app(persister: SQLAlchemyPersister, state: dict[str, Any]) -> Any:
    @action(reads=[], writes=["n", *state])
    async def tick(s: State) -> State:
        return s.update(n=s.get("n", 0) + 1, **state)

    return await (
        ApplicationBuilder()
        .with_actions(tick)
        .with_transitions(("tick", "tick"))
        .with_entrypoint("tick")
        .with_state(n=0)
        .with_state_persister(persister)
        .with_identifiers(app_id=new_id(), partition_key="seams")
        .abuild()
    )


async def test_astep_keeps_the_type_and_message_of_a_schema_error(db: Database) -> None:
    async with db.persister(table_name="never_provisioned") as persister:
        app = await _counter_app(persister, {})
        with pytest.raises(SchemaOutOfDateError) as info:
            await app.astep()
    error = info.value
    assert str(error).count("is not provisioned") == 1  # not wrapped, not doubled
    assert str(error).startswith("Table ")
    assert (error.app_id, error.partition_key, error.sequence_id) == (app.uid, "seams", 0)
    assert any(app.uid in note for note in error.__notes__)
    assert app.sequence_id is None


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    "value",
    [(1, 2), Colour.RED, math.nan, [uuid.UUID(int=7)]],
    ids=["tuple", "enum", "nan", "uuid-in-list"],
)
async def test_a_lost_acknowledgement_of_a_state_json_changes_still_commits(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch, value: Any
) -> None:
    """The stored row is compared with the bytes that were sent, not with the state decoded
    back (which JSON changes: tuples become lists, enums values, NaN null, nested UUIDs text)."""
    app = await _counter_app(persister, {"v": value})
    original = persister._writer.dialect.insert_one

    async def lost_reply(driver: Any, values: Any) -> bool:
        await original(driver, values)
        raise ConnectionResetError("connection lost before the reply")

    monkeypatch.setattr(persister._writer.dialect, "insert_one", lost_reply)
    await app.astep()
    assert app.sequence_id == 0
    monkeypatch.undo()
    await app.astep()  # no ConcurrentStepError: the app is where the database is
    assert [h.sequence_id for h in await persister.history("seams", app.uid)] == [0, 1]


async def test_a_statement_error_that_is_not_about_data_fails_the_batch_at_once(
    postgres_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement_timeout (SQLSTATE 57014) on a batch says nothing about any one row: every
    caller gets the error at once, no row is retried alone."""
    import anyio
    import asyncpg

    async with postgres_db.persister() as persister:
        await persister.save("p", new_id(), 0, "a", State({}), "completed")  # warm
        dialect = persister._writer.dialect
        original_one = dialect.insert_one
        singles: list[Any] = []

        async def slow_one(driver: Any, values: Any) -> bool:
            singles.append(values)
            if len(singles) == 1:
                await anyio.sleep(0.05)  # the others queue up behind this write
                return await original_one(driver, values)
            raise AssertionError("a row was retried alone")

        async def timed_out(driver: Any, rows: Any) -> Any:
            raise asyncpg.exceptions.QueryCanceledError("canceling statement due to timeout")

        monkeypatch.setattr(dialect, "insert_one", slow_one)
        monkeypatch.setattr(dialect, "insert_many", timed_out)
        outcomes: list[BaseException | None] = []

        async def save(app_id: str) -> None:
            try:
                await persister.save("p", app_id, 0, "a", State({}), "completed")
                outcomes.append(None)
            except PersistenceError as exc:
                outcomes.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(save, new_id())
        assert outcomes.count(None) == 1  # the leader, written alone before the batch
        failed = [o for o in outcomes if o is not None]
        assert len(failed) == 5
        assert all("QueryCanceledError" in str(o) for o in failed)
        assert len(singles) == 1


async def test_a_pooled_read_leaves_an_in_memory_database_in_autocommit() -> None:
    """With an in-memory database every checkout shares one connection; a read returned to the
    pool resets its isolation level, and the writer's next row was left in an open
    transaction (reported durable, visible to no other connection)."""
    name = f"memdb_{uuid.uuid4().hex}"
    url = f"sqlite+aiosqlite:///file:{name}?mode=memory&cache=shared&uri=true"
    async with SQLAlchemyPersister.from_url(url) as persister:
        await persister.initialize()
        await persister.save(None, "a", 0, "x", State({"v": 0}), "completed")
        await persister.list_apps()  # a pooled read, returned to the (static) pool
        await persister.save(None, "a", 1, "x", State({"v": 1}), "completed")
        other = sqlite3.connect(f"file:{name}?mode=memory&cache=shared", uri=True, timeout=0.1)
        try:
            count = other.execute("SELECT count(*) FROM burr_state").fetchone()[0]
        finally:
            other.close()
    assert count == 2


def test_importing_burr_async_loads_no_database_code() -> None:
    probe = (
        "import sys, burr_async; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'sqlalchemy', "
        "'asyncpg', 'aiosqlite'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert done.stdout.strip() == "[]"


def test_the_persister_is_imported_on_first_use() -> None:
    probe = (
        "import sys, burr_async; p = burr_async.SQLAlchemyPersister; "
        "from burr_async.persistence import create_engine; "
        "print(p.__module__, 'alembic' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert done.stdout.split() == ["burr_async.persistence.sqlalchemy", "False"]


async def _unreachable_after_the_commit(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next write commits but its reply is lost, and every read-back fails."""
    from burr_async.persistence import _writer

    dialect = persister._writer.dialect
    original = dialect.insert_one

    async def lost_reply(driver: Any, values: Any) -> bool:
        await original(driver, values)
        raise ConnectionResetError("connection lost before the reply")

    async def unreachable(driver: Any, values: Any) -> bool | None:
        raise ConnectionResetError("the database is unreachable")

    monkeypatch.setattr(_writer, "SETTLE_DELAYS", (0.0, 0.0))
    monkeypatch.setattr(dialect, "insert_one", lost_reply)
    monkeypatch.setattr(dialect, "is_stored", unreachable)


async def test_an_unsettled_step_is_settled_by_the_next_call_without_running_again(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reply of a committed write is lost and the database stays unreachable for the
    read-back: astep raises CommitUnknownError and does not advance; the next astep saves the
    very same step again, which lands as committed, and the action is not run a second time."""
    from burr_async import CommitUnknownError

    calls: list[int] = []

    @action(reads=["n"], writes=["n"])
    async def tick(state: State) -> State:
        calls.append(state["n"])
        return state.update(n=state["n"] + 1)

    app = await (
        ApplicationBuilder()
        .with_actions(tick)
        .with_transitions(("tick", "tick"))
        .with_entrypoint("tick")
        .with_state(n=0)
        .with_state_persister(persister)
        .with_identifiers(app_id=new_id(), partition_key="seams")
        .abuild()
    )
    await app.astep()
    await _unreachable_after_the_commit(persister, monkeypatch)
    with pytest.raises(CommitUnknownError) as info:
        await app.astep()
    assert (info.value.app_id, info.value.sequence_id) == (app.uid, 1)
    assert (app.sequence_id, app.state["n"]) == (0, 1)  # not advanced
    monkeypatch.undo()
    outcome = await app.astep()  # settles step 1: stored already, so it simply advances
    assert outcome is not None
    assert (app.sequence_id, app.state["n"]) == (1, 2)
    assert calls == [0, 1]  # tick ran once per step
    await app.astep()
    history = await persister.history("seams", app.uid)
    assert [(h.sequence_id, h.state["n"]) for h in history] == [(0, 1), (1, 2), (2, 3)]


async def test_an_unsettled_step_that_had_not_landed_is_written_by_the_next_call(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    from burr_async import CommitUnknownError
    from burr_async.persistence import _writer

    app = await _counter_app(persister, {})
    dialect = persister._writer.dialect

    async def lost_request(driver: Any, values: Any) -> bool:
        raise ConnectionResetError("connection lost before the insert")

    async def unreachable(driver: Any, values: Any) -> bool | None:
        raise ConnectionResetError("the database is unreachable")

    monkeypatch.setattr(_writer, "SETTLE_DELAYS", (0.0,))
    monkeypatch.setattr(dialect, "insert_one", lost_request)
    monkeypatch.setattr(dialect, "is_stored", unreachable)
    with pytest.raises(CommitUnknownError):
        await app.astep()
    monkeypatch.undo()
    await app.astep()
    assert app.sequence_id == 0
    assert [h.sequence_id for h in await persister.history("seams", app.uid)] == [0]


async def test_a_cancelled_step_whose_outcome_is_unknown_is_settled_next(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled while its save could not be settled: the cancellation wins, and the next call
    still settles the step instead of failing with ConcurrentStepError forever."""
    import asyncio

    app = await _counter_app(persister, {})
    await app.astep()
    await _unreachable_after_the_commit(persister, monkeypatch)
    task = asyncio.ensure_future(app.astep())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert app.sequence_id == 0
    monkeypatch.undo()
    await app.astep()
    await app.astep()
    assert app.sequence_id == 2
    history = await persister.history("seams", app.uid)
    assert [(h.sequence_id, h.state["n"]) for h in history] == [(0, 1), (1, 2), (2, 3)]
