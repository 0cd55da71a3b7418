"""The group-commit write path: batching, isolation of bad rows, and losing the connection."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sqlalchemy as sa

from burr_async import (
    ApplicationBuilder,
    CommitUnknownError,
    ConcurrentStepError,
    PersistenceError,
    SQLAlchemyPersister,
    State,
    action,
    default,
)
from tests.databases import Database

pytestmark = pytest.mark.anyio


def new_id() -> str:
    return str(uuid.uuid4())


class _Spy:
    """Counts the statements the writer sends, by batch size."""

    def __init__(self, persister: SQLAlchemyPersister) -> None:
        self.sizes: list[int] = []
        self._one = persister._writer.dialect.insert_one
        self._many = persister._writer.dialect.insert_many

    async def one(self, driver: Any, values: Any) -> bool:
        self.sizes.append(1)
        await anyio.sleep(0.001)  # a slow database: let the others queue up behind this write
        return await self._one(driver, values)

    async def many(self, driver: Any, rows: list[Any]) -> Any:
        self.sizes.append(len(rows))
        return await self._many(driver, rows)


async def save_all(persister: SQLAlchemyPersister, calls: list[tuple[Any, ...]]) -> list[Any]:
    """Run the saves concurrently; each outcome is None or the exception raised."""
    outcomes: list[Any] = [None] * len(calls)

    async def run(index: int, args: tuple[Any, ...]) -> None:
        try:
            await persister.save(*args)
        except Exception as exc:
            outcomes[index] = exc

    async with anyio.create_task_group() as tg:
        for index, args in enumerate(calls):
            tg.start_soon(run, index, args)
    return outcomes


async def test_concurrent_steps_share_a_commit(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(persister)
    monkeypatch.setattr(persister._writer.dialect, "insert_one", spy.one)
    monkeypatch.setattr(persister._writer.dialect, "insert_many", spy.many)
    partition = new_id()
    calls = [(partition, new_id(), 0, "a", State({"i": i}), "completed") for i in range(30)]
    assert await save_all(persister, calls) == [None] * 30
    assert sum(spy.sizes) == 30
    assert max(spy.sizes) > 1  # rows that arrived during a write went together
    assert len(spy.sizes) < 30
    assert len(await persister.list_app_ids(partition)) == 30


async def test_a_conflicting_row_fails_alone_in_its_batch(persister: SQLAlchemyPersister) -> None:
    partition, taken = new_id(), new_id()
    await persister.save(partition, taken, 0, "a", State({"v": "first"}), "completed")
    calls = [(partition, new_id(), 0, "a", State({}), "completed") for _ in range(10)]
    calls.insert(5, (partition, taken, 0, "a", State({"v": "second"}), "completed"))
    calls.append((partition, taken, 1, "b", State({}), "completed"))
    calls.append((partition, taken, 1, "b", State({}), "completed"))  # a duplicate in the batch
    outcomes = await save_all(persister, calls)
    conflicts = [o for o in outcomes if isinstance(o, ConcurrentStepError)]
    assert len(conflicts) == 2
    assert {(c.app_id, c.sequence_id) for c in conflicts} == {(taken, 0), (taken, 1)}
    assert sum(o is None for o in outcomes) == 11
    stored = await persister.load(partition, taken, 0)
    assert stored is not None and stored.state["v"] == "first"
    assert len(await persister.list_app_ids(partition)) == 11


async def test_a_row_the_database_rejects_does_not_sink_the_batch(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(persister)
    monkeypatch.setattr(persister._writer.dialect, "insert_one", spy.one)
    monkeypatch.setattr(persister._writer.dialect, "insert_many", spy.many)
    partition, bad = new_id(), new_id()
    calls: list[tuple[Any, ...]] = [
        (partition, new_id(), 0, "a", State({}), "completed") for _ in range(10)
    ]
    calls.insert(3, (partition, bad, 0, "a", State({}), "not-a-status"))  # violates the CHECK
    outcomes = await save_all(persister, calls)
    failed = [o for o in outcomes if o is not None]
    assert len(failed) == 1
    assert isinstance(failed[0], PersistenceError)
    assert not isinstance(failed[0], ConcurrentStepError)
    assert failed[0].app_id == bad
    assert await persister.load(partition, bad) is None
    assert len(await persister.list_app_ids(partition)) == 10
    assert max(spy.sizes) > 1  # the bad row was in a multi-row statement, then retried alone


async def test_the_writer_reconnects_after_losing_its_connection(postgres_db: Database) -> None:
    async with postgres_db.persister() as persister:
        app_id = new_id()
        await persister.save("p", app_id, 0, "a", State({}), "completed")
        pid = persister._writer._held.driver.get_server_pid()
        async with persister.engine.connect() as admin:
            await admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(PersistenceError) as info:
            await persister.save("p", app_id, 1, "b", State({}), "completed")
        assert app_id in str(info.value)
        await persister.save("p", app_id, 1, "b", State({}), "completed")  # the retry lands
        stored = await persister.load("p", app_id)
        assert stored is not None and stored.sequence_id == 1


async def test_a_cancelled_step_still_lands_whole(persister: SQLAlchemyPersister) -> None:
    from tests.integration._chat import build

    app = await build(persister, new_id())
    await app.astep()  # the schema check and the writer connection are warm
    async with anyio.create_task_group() as tg:
        tg.start_soon(app.astep)
        await anyio.lowlevel.checkpoint()  # the step is now inside its write
        tg.cancel_scope.cancel()
    stored = await persister.load("tester", app.uid)
    assert stored is not None
    # the application and the database agree on where it is
    assert (stored.sequence_id, stored.position) == (app.sequence_id, app.position)
    assert stored.state == app.state
    assert app.sequence_id == 1


async def test_asyncio_cancellation_never_splits_a_step(persister: SQLAlchemyPersister) -> None:
    """``Task.cancel()`` (as ``asyncio.wait_for`` and ``asyncio.timeout`` use) at any point of a
    step: afterwards the application and the database agree on where it is."""
    from burr_async import ApplicationBuilder, action

    @action(reads=["n"], writes=["n"])
    async def tick(state: State) -> State:
        await asyncio.sleep(0)
        return state.increment(n=1)

    app = await (
        ApplicationBuilder()
        .with_actions(tick)
        .with_transitions(("tick", "tick"))
        .with_entrypoint("tick")
        .with_state(n=0)
        .with_state_persister(persister)
        .with_identifiers(app_id=new_id(), partition_key="p")
        .abuild()
    )
    await app.astep()
    cancelled = 0
    for attempt in range(40):
        task = asyncio.ensure_future(app.astep())
        for _ in range(attempt % 5):  # cancel at a different point each time
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            cancelled += 1
        stored = await persister.load("p", app.uid)
        assert stored is not None
        assert (stored.sequence_id, stored.state) == (app.sequence_id, app.state)
        assert app.state["n"] == app.sequence_id + 1
    assert cancelled > 0


async def test_the_cancellation_a_save_outlasts_is_the_one_raised(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step's save runs to its end under a cancellation and then raises that very
    cancellation: its message reaches the caller, an ``asyncio.timeout`` turns it into
    TimeoutError, an anyio scope catches it as its own; each time the step is stored and the
    application is at it."""
    from tests.integration._chat import build

    app = await build(persister, new_id())
    await app.astep()  # the schema check and the writer connection are warm
    original = persister._writer.dialect.insert_one
    writing, release = anyio.Event(), anyio.Event()

    async def slow(driver: Any, values: Any) -> bool:
        writing.set()
        await release.wait()
        return await original(driver, values)

    monkeypatch.setattr(persister._writer.dialect, "insert_one", slow)

    async def agree(sequence_id: int) -> None:
        stored = await persister.load("tester", app.uid)
        assert stored is not None and stored.sequence_id == app.sequence_id == sequence_id
        assert stored.state == app.state

    task = asyncio.ensure_future(app.astep())
    await writing.wait()
    task.cancel("shutting down")
    release.set()
    with pytest.raises(asyncio.CancelledError) as info:
        await task
    assert info.value.args == ("shutting down",)
    await agree(1)

    writing, release = anyio.Event(), anyio.Event()
    asyncio.get_running_loop().call_later(0.1, release.set)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.02):
            await app.astep()
    await agree(2)

    writing, release = anyio.Event(), anyio.Event()
    asyncio.get_running_loop().call_later(0.1, release.set)
    with anyio.move_on_after(0.02) as scope:
        await app.astep()
    assert scope.cancelled_caught
    await agree(3)


async def test_a_subclass_that_overrides_save_has_it_called_for_every_step(
    db: Database,
) -> None:
    """An application hands its steps to the persister's ``save``: a subclass that changes
    ``save`` is called for each step (the persister's own way of settling writes without a
    task stands for its own ``save`` only)."""
    from tests.integration._chat import build

    saved: list[int] = []

    class Audited(SQLAlchemyPersister):
        async def save(self, *args: Any, **kwargs: Any) -> None:
            saved.append(args[2])
            await super().save(*args, **kwargs)

    engine = db.engine()
    try:
        async with Audited(engine, schema=db.schema) as persister:
            app = await build(persister, new_id())
            for _ in range(3):
                await app.astep()
            assert saved == [0, 1, 2]
            stored = await persister.load("tester", app.uid)
            assert stored is not None and stored.sequence_id == 2
    finally:
        await engine.dispose()


async def test_a_cancelled_load_leaves_reads_working(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    await persister.save("p", app_id, 0, "a", State({"v": 1}), "completed")
    for attempt in range(12):
        task = asyncio.ensure_future(persister.load("p", app_id))
        for _ in range(attempt % 4):  # cancel at a different point each time
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        loaded = await persister.load("p", app_id)
        assert loaded is not None
        assert loaded.state["v"] == 1


async def test_a_refused_first_write_lets_its_duplicate_commit(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(persister)
    monkeypatch.setattr(persister._writer.dialect, "insert_one", spy.one)
    app_id = new_id()
    calls: list[tuple[Any, ...]] = [("p", new_id(), 0, "a", State({}), "completed")]  # leads
    calls.append(("p", app_id, 0, "a", State({}), "not-a-status"))  # refused by the CHECK
    calls.append(("p", app_id, 0, "a", State({"v": 2}), "completed"))  # same step, valid
    outcomes = await save_all(persister, calls)
    assert outcomes[0] is None
    assert isinstance(outcomes[1], PersistenceError)
    assert not isinstance(outcomes[1], ConcurrentStepError)
    assert outcomes[2] is None  # nothing had committed the step: this write does
    stored = await persister.load("p", app_id)
    assert stored is not None
    assert stored.state["v"] == 2


async def test_a_value_the_driver_cannot_encode_fails_alone(persister: SQLAlchemyPersister) -> None:
    partition = new_id()
    calls: list[tuple[Any, ...]] = [
        (partition, new_id(), 0, "a", State({}), "completed") for _ in range(6)
    ]
    calls.insert(2, (partition, "bad\ud800", 0, "a", State({}), "completed"))  # lone surrogate
    outcomes = await save_all(persister, calls)
    failed = [o for o in outcomes if o is not None]
    assert len(failed) == 1
    assert isinstance(failed[0], PersistenceError)
    assert len(await persister.list_app_ids(partition)) == 6
    with pytest.raises(PersistenceError, match="Loading app"):  # a driver error, wrapped
        await persister.load(partition, "x", sequence_id=2**70)


async def test_an_in_memory_database_survives_failed_statements() -> None:
    async with SQLAlchemyPersister.from_url("sqlite+aiosqlite://") as persister:
        await persister.initialize()
        await persister.save(None, "good", 0, "a", State({"x": 1}), "completed")
        with pytest.raises(PersistenceError):
            await persister.save(None, "bad\ud800", 0, "a", State({}), "completed")
        task = asyncio.ensure_future(persister.load(None, "good"))
        await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        loaded = await persister.load(None, "good")  # the only connection was not destroyed
        assert loaded is not None
        assert loaded.state["x"] == 1
        await persister.save(None, "good", 1, "b", State({"x": 2}), "completed")


async def test_aclose_lets_writes_finish_then_refuses_new_ones(db: Database) -> None:
    persister = db.persister()
    partition = new_id()
    await persister.save(partition, new_id(), 0, "a", State({}), "completed")  # warm
    saves = [
        asyncio.ensure_future(persister.save(partition, new_id(), 0, "a", State({}), "completed"))
        for _ in range(20)
    ]
    for _ in range(3):  # every save is now in the writer: leading, or queued behind the leader
        await asyncio.sleep(0)
    await persister.aclose()
    assert [task.exception() for task in await asyncio.gather(*[_done(t) for t in saves])] == [
        None
    ] * 20
    with pytest.raises(PersistenceError, match="closed"):
        await persister.save(partition, new_id(), 0, "a", State({}), "completed")
    async with db.persister() as reader:
        assert len(await reader.list_app_ids(partition)) == 21


async def _done(task: asyncio.Future[Any]) -> asyncio.Future[Any]:
    with contextlib.suppress(Exception):
        await task
    return task


async def test_a_cancelled_save_in_a_child_task_does_not_stall_the_writer(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settled work (an app's save) that fans out to a child task which is then cancelled: the
    child's row still settles and the writer keeps a leader."""
    from burr_async._shield import run_to_completion

    gate = asyncio.Event()
    original = persister._writer.dialect.insert_one

    async def slow(driver: Any, values: Any) -> bool:
        await gate.wait()
        return await original(driver, values)

    monkeypatch.setattr(persister._writer.dialect, "insert_one", slow)
    leader = asyncio.ensure_future(persister.save("p", new_id(), 0, "a", State({}), "completed"))
    await asyncio.sleep(0.01)

    async def fan_out() -> None:
        child = asyncio.ensure_future(persister.save("p", new_id(), 0, "a", State({}), "completed"))
        await asyncio.sleep(0.01)  # the child's row is queued behind the leader
        child.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await child

    fanning = asyncio.ensure_future(run_to_completion(fan_out()))
    await asyncio.sleep(0.02)
    gate.set()
    await leader
    await fanning
    with anyio.fail_after(5):
        await persister.save("p", new_id(), 0, "a", State({}), "completed")


async def test_an_engine_on_another_driver_is_refused(sqlite_db: Database) -> None:
    from burr_async import ConfigurationError

    engine = sqlite_db.engine()
    try:
        engine.sync_engine.dialect.driver = "pysqlite"  # as if sqlite+pysqlite
        with pytest.raises(ConfigurationError, match=r"sqlite\+pysqlite.*aiosqlite"):
            SQLAlchemyPersister(engine)
    finally:
        await engine.dispose()


async def test_a_commit_whose_acknowledgement_is_lost_counts_as_committed(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection breaks after COMMIT, before the reply: the row is stored, so the
    application advances instead of telling its caller to retry a step that already landed."""
    from tests.integration._chat import build

    app = await build(persister, new_id())
    original = persister._writer.dialect.insert_one

    async def lost_reply(driver: Any, values: Any) -> bool:
        await original(driver, values)
        raise ConnectionResetError("connection lost before the reply")

    monkeypatch.setattr(persister._writer.dialect, "insert_one", lost_reply)
    outcome = await app.astep()
    assert outcome is not None
    assert (app.sequence_id, app.position) == (0, "counter")
    monkeypatch.undo()
    await app.astep()  # and it carries on from there
    history = await persister.history("tester", app.uid)
    assert [(h.sequence_id, h.position) for h in history] == [(0, "counter"), (1, "check")]


async def test_a_failed_write_that_did_not_land_is_still_an_error(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.integration._chat import build

    app = await build(persister, new_id())

    async def refused(driver: Any, values: Any) -> bool:
        raise ConnectionResetError("connection lost before the insert")

    monkeypatch.setattr(persister._writer.dialect, "insert_one", refused)
    with pytest.raises(PersistenceError, match="Saving the step failed"):
        await app.astep()
    assert app.sequence_id is None


async def test_a_step_whose_outcome_is_unknown_settles_after_its_app_is_loaded_meanwhile(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write commits but its answer is lost and reading it back fails (CommitUnknownError);
    before the application writes the step again, another request loads the app (which the
    delta encoder takes as the app's latest, and so would encode the step otherwise). The
    step written again is the very row stored: it counts as committed, not as a conflict."""
    from burr_async.persistence import _writer

    @action(reads=["msgs"], writes=["msgs"])
    async def say(state: State, text: str) -> State:
        return state.append(msgs=text)

    app_id = new_id()
    app = await (
        ApplicationBuilder()
        .with_actions(say)
        .with_transitions(("say", "say", default))
        .with_state({"msgs": [], "profile": "x" * 500})  # deltas pay: steps 1 and 2 are deltas
        .with_entrypoint("say")
        .with_identifiers(app_id=app_id, partition_key="u")
        .with_state_persister(persister)
        .abuild()
    )
    await app.astep(inputs={"text": "a"})
    await app.astep(inputs={"text": "b"})
    dialect = persister._writer.dialect
    insert_one, is_stored = dialect.insert_one, dialect.is_stored
    faults = {"reply": True, "read_back": True}

    async def lost_reply(driver: Any, values: Any) -> bool:
        inserted = await insert_one(driver, values)
        if faults.pop("reply", False):
            raise ConnectionResetError("connection lost before the reply")
        return inserted

    async def unreachable(driver: Any, values: Any) -> bool | None:
        if faults["read_back"]:
            raise ConnectionResetError("the database is unreachable")
        return await is_stored(driver, values)

    monkeypatch.setattr(_writer, "SETTLE_DELAYS", (0.0, 0.0))
    monkeypatch.setattr(dialect, "insert_one", lost_reply)
    monkeypatch.setattr(dialect, "is_stored", unreachable)
    with pytest.raises(CommitUnknownError):
        await app.astep(inputs={"text": "c"})
    faults["read_back"] = False
    loaded = await persister.load("u", app_id)  # another request reads the chat
    assert loaded is not None and loaded.state["msgs"] == ["a", "b", "c"]
    await app.astep(inputs={"text": "not used: the step is settled, not run again"})
    assert (app.sequence_id, app.state["msgs"]) == (2, ["a", "b", "c"])
    history = await persister.history("u", app_id)
    assert [h.state["msgs"] for h in history] == [["a"], ["a", "b"], ["a", "b", "c"]]
