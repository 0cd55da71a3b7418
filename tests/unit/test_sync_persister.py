"""Burr-style sync persisters: accepted by the builder, every call run in a worker thread, with
the commit-before-advance contract of async persisters."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from burr_async import (
    ApplicationBuilder,
    ConfigurationError,
    InMemoryPersister,
    PersistenceError,
    State,
    action,
    default,
)
from burr_async.persistence._sync import SyncPersisterAdapter, is_async_callable

from ._support import FlakyError, counter_builder

pytestmark = pytest.mark.anyio

WHEN = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)


class DictPersister:
    """Burr's ``BaseStatePersister`` shapes, sync and dict-backed. Stores each step as Burr's
    SQLitePersister does (``json.dumps(state.serialize())``), returns Burr-style dicts, and
    records every call with the thread it ran in."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        self.calls: list[tuple[str, int]] = []
        self.save_kwargs: list[dict[str, Any]] = []
        self.fail_next_saves = 0
        self.save_delay = 0.0
        self.saves_finished = 0
        self._lock = threading.Lock()

    def save(
        self,
        partition_key: str | None,
        app_id: str,
        sequence_id: int,
        position: str,
        state: Any,
        status: str,
        **kwargs: Any,
    ) -> None:
        with self._lock:
            self.calls.append(("save", threading.get_ident()))
            self.save_kwargs.append(kwargs)
            if self.fail_next_saves:
                self.fail_next_saves -= 1
                raise OSError("disk full")
        time.sleep(self.save_delay)
        with self._lock:
            steps = self.rows.setdefault((partition_key or "", app_id), {})
            if sequence_id in steps:
                raise KeyError(f"step {sequence_id} is already stored")
            steps[sequence_id] = {
                "partition_key": partition_key or "",
                "app_id": app_id,
                "sequence_id": sequence_id,
                "position": position,
                "state": json.dumps(state.serialize()),
                "created_at": dt.datetime(2024, 1, 2, 3, 4, 5).isoformat(),
                "status": status,
            }
            self.saves_finished += 1

    def load(
        self,
        partition_key: str | None,
        app_id: str | None,
        sequence_id: int | None = None,
        **kwargs: Any,
    ) -> dict[str, Any] | None:
        with self._lock:
            self.calls.append(("load", threading.get_ident()))
            steps = self.rows.get((partition_key or "", app_id or ""), {})
            if not steps:
                return None
            row = steps.get(max(steps) if sequence_id is None else sequence_id)
            return None if row is None else {**row, "state": json.loads(row["state"])}

    def list_app_ids(self, partition_key: str | None, **kwargs: Any) -> list[str]:
        with self._lock:
            self.calls.append(("list_app_ids", threading.get_ident()))
            return [app for (pk, app) in self.rows if pk == (partition_key or "")]

    def threads(self, method: str) -> set[int]:
        return {thread for name, thread in self.calls if name == method}

    def stored(self, app_id: str, partition_key: str | None = None) -> list[int]:
        return sorted(self.rows.get((partition_key or "", app_id), {}))


@action(reads=["count"], writes=["count", "when"])
async def tick(state: State) -> State:
    return state.increment(count=1).update(when=WHEN)


def _ticker(persister: Any, app_id: str = "app-1", **init: Any) -> ApplicationBuilder:
    """tick -> tick ..., loading from and saving to ``persister``."""
    return (
        ApplicationBuilder()
        .with_actions(tick)
        .with_transitions(("tick", "tick", default))
        .initialize_from(
            persister,
            resume_at_next_action=True,
            default_state={"count": 0},
            default_entrypoint="tick",
            **init,
        )
        .with_state_persister(persister)
        .with_identifiers(app_id=app_id)
    )


async def test_each_step_is_saved_once_off_the_event_loop() -> None:
    persister = DictPersister()
    app = await (
        counter_builder(limit=3)
        .with_state(count=0)
        .with_entrypoint("increment")
        .with_state_persister(persister)
        .with_identifiers(app_id="counter")
        .abuild()
    )
    _, _, state = await app.arun(halt_after=["done"])
    assert state["count"] == 3
    assert app.sequence_id == 3
    assert persister.stored("counter") == [0, 1, 2, 3]
    assert [name for name, _ in persister.calls] == ["save"] * 4  # exactly once per step
    assert threading.get_ident() not in persister.threads("save")


async def test_resume_loads_in_a_thread_and_converts_the_dict() -> None:
    persister = DictPersister()
    first = await _ticker(persister).abuild()
    await first.astep()
    await first.astep()

    resumed = await _ticker(persister).abuild()
    assert resumed.sequence_id == 1
    assert resumed.position == "tick"
    assert resumed.state == {"count": 2, "when": WHEN}  # the datetime came back through JSON
    assert threading.get_ident() not in persister.threads("load")
    await resumed.astep()
    assert persister.stored("app-1") == [0, 1, 2]
    assert resumed.state["count"] == 3


async def test_failed_sync_save_leaves_the_app_unadvanced_and_a_retry_writes_once() -> None:
    persister = DictPersister()
    app = await _ticker(persister).abuild()
    persister.fail_next_saves = 1
    with pytest.raises(PersistenceError, match=r"DictPersister\.save failed.*disk full") as info:
        await app.astep()
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.app_id == "app-1"
    assert "app_id='app-1'" in str(info.value)
    assert (app.sequence_id, app.position) == (None, None)
    assert app.state == {"count": 0}
    assert persister.stored("app-1") == []

    await app.astep()
    assert persister.stored("app-1") == [0]
    assert persister.saves_finished == 1
    assert app.sequence_id == 0


async def test_a_failing_action_is_stored_as_failed_with_its_error() -> None:
    @action(reads=[], writes=[])
    async def boom(state: State) -> State:
        raise FlakyError("no")

    persister = DictPersister()
    app = await (
        ApplicationBuilder()
        .with_actions(boom)
        .with_state(x=1)
        .with_entrypoint("boom")
        .with_state_persister(persister)
        .with_identifiers(app_id="fails")
        .abuild()
    )
    with pytest.raises(FlakyError):
        await app.astep()
    assert persister.rows[("", "fails")][0]["status"] == "failed"
    assert persister.save_kwargs == [
        {"error": "FlakyError: no", "parent": None, "spawning_parent": None}
    ]


async def test_error_and_parent_are_passed_only_when_save_accepts_them() -> None:
    class OnlyError(DictPersister):
        def save(  # type: ignore[override]
            self,
            partition_key: str | None,
            app_id: str,
            sequence_id: int,
            position: str,
            state: Any,
            status: str,
            error: str | None = None,
        ) -> None:
            super().save(partition_key, app_id, sequence_id, position, state, status, error=error)

    class Neither(DictPersister):
        def save(  # type: ignore[override]
            self,
            partition_key: str | None,
            app_id: str,
            sequence_id: int,
            position: str,
            state: Any,
            status: str,
        ) -> None:
            super().save(partition_key, app_id, sequence_id, position, state, status)

    for persister, expected in ((OnlyError(), {"error": None}), (Neither(), {})):
        app = await _ticker(persister).abuild()
        await app.astep()
        forked = await _ticker(persister, app_id="fork", fork_from_app_id="app-1").abuild()
        await forked.astep()
        assert persister.stored("fork") == [0, 1]
        assert persister.save_kwargs == [expected] * 3


async def test_a_fork_passes_parent_to_a_save_with_kwargs() -> None:
    persister = DictPersister()
    await (await _ticker(persister).abuild()).astep()
    forked = await _ticker(persister, app_id="fork", fork_from_app_id="app-1").abuild()
    assert forked.state["count"] == 1
    parent = persister.save_kwargs[-1]["parent"]
    assert (parent.app_id, parent.sequence_id) == ("app-1", 0)


@pytest.mark.parametrize(
    ("returned", "reason"),
    [
        (["not", "a", "dict"], "got list"),
        ({"sequence_id": 0, "position": "tick"}, r"without the key\(s\) \['state'\]"),
        ({"sequence_id": "0", "position": "tick", "state": {}}, "sequence_id is '0'"),
        ({"sequence_id": 0, "position": "tick", "state": 5}, "state is int"),
        ({"sequence_id": 0, "position": "tick", "state": {}, "status": "done"}, "status"),
        ({"sequence_id": 0, "position": "tick", "state": {}, "created_at": "soon"}, "soon"),
    ],
)
async def test_a_load_of_another_shape_is_a_clear_persistence_error(
    returned: object, reason: str
) -> None:
    class Odd(DictPersister):
        def load(self, *args: Any, **kwargs: Any) -> Any:
            return returned

    with pytest.raises(PersistenceError, match=reason) as info:
        await _ticker(Odd()).abuild()
    message = str(info.value)
    assert "Odd.load returned a step of a shape burr_async cannot read" in message
    assert "a dict with the keys partition_key, app_id, sequence_id" in message
    assert "app_id='app-1'" in message


async def test_a_load_with_only_the_required_keys_and_a_burr_like_state() -> None:
    class BurrLikeState:
        def get_all(self) -> dict[str, Any]:
            return {"count": 5, "when": WHEN}  # live values pass through as they are

    class Minimal(DictPersister):
        def load(self, *args: Any, **kwargs: Any) -> Any:
            return {"sequence_id": 4, "position": "tick", "state": BurrLikeState()}

    loaded = await SyncPersisterAdapter(Minimal()).load("user", "app-9")
    assert loaded is not None
    assert (loaded.partition_key, loaded.app_id, loaded.status) == ("user", "app-9", "completed")
    assert loaded.state == {"count": 5, "when": WHEN}
    assert loaded.created_at.tzinfo is not None
    app = await _ticker(Minimal()).abuild()
    assert (app.sequence_id, app.state["count"]) == (4, 5)


async def test_created_at_strings_and_naive_datetimes_are_read_as_utc() -> None:
    persister = DictPersister()
    await (await _ticker(persister).abuild()).astep()
    loaded = await SyncPersisterAdapter(persister).load(None, "app-1")
    assert loaded is not None
    assert loaded.created_at == dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert loaded.partition_key is None  # Burr's "" is burr_async's None


async def test_an_error_in_sync_load_is_a_persistence_error_with_the_cause() -> None:
    class Broken(DictPersister):
        def load(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("db down")

    with pytest.raises(PersistenceError, match=r"Broken\.load failed.*db down") as info:
        await _ticker(Broken()).abuild()
    assert isinstance(info.value.__cause__, ConnectionError)
    assert info.value.app_id == "app-1"


async def test_list_app_ids_runs_in_a_thread() -> None:
    persister = DictPersister()
    await (await _ticker(persister, app_id="a").abuild()).astep()
    await (await _ticker(persister, app_id="b").abuild()).astep()
    assert sorted(await SyncPersisterAdapter(persister).list_app_ids(None)) == ["a", "b"]
    assert threading.get_ident() not in persister.threads("list_app_ids")


async def test_a_cancellation_during_a_sync_save_waits_for_it_then_goes_through() -> None:
    persister = DictPersister()
    app = await _ticker(persister).abuild()
    persister.save_delay = 0.3
    with anyio.move_on_after(0.05) as scope:
        await app.astep()
        assert persister.saves_finished == 1  # the thread was waited for, not abandoned
        assert app.sequence_id == 0  # and the application agrees with what was stored
        await anyio.sleep(5)  # the held-off cancellation goes through at the next checkpoint
    assert scope.cancelled_caught
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(app.astep(), 0.05)
    assert persister.saves_finished == 2
    assert (app.sequence_id, persister.stored("app-1")) == (1, [0, 1])


async def test_the_adapter_alone_does_not_abandon_its_thread_when_cancelled() -> None:
    persister = DictPersister()
    persister.save_delay = 0.3
    adapter = SyncPersisterAdapter(persister)
    with anyio.move_on_after(0.05) as scope:
        await adapter.save(None, "solo", 0, "tick", State({"count": 1}), "completed")
        assert persister.saves_finished == 1
        await anyio.sleep(5)
    assert scope.cancelled_caught
    with pytest.raises(asyncio.TimeoutError):  # Task.cancel(), which anyio cannot shield from
        await asyncio.wait_for(
            adapter.save(None, "solo", 1, "tick", State({"count": 2}), "completed"), 0.05
        )
    assert persister.saves_finished == 2


async def test_the_event_loop_keeps_running_during_a_slow_sync_save() -> None:
    persister = DictPersister()
    app = await _ticker(persister).abuild()
    persister.save_delay = 0.3
    ticks = 0

    async def count_ticks() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(count_ticks)
        await app.astep()
        tg.cancel_scope.cancel()
    assert ticks >= 10


async def test_one_object_passed_to_both_verbs_gets_one_adapter() -> None:
    persister = DictPersister()
    builder = _ticker(persister)
    assert builder._persister is builder._initializer.loader  # type: ignore[union-attr]
    assert isinstance(builder._persister, SyncPersisterAdapter)
    assert builder._persister.persister is persister


async def test_async_persisters_are_not_wrapped_and_mixed_ones_only_where_sync() -> None:
    memory = InMemoryPersister()
    builder = _ticker(memory)
    assert builder._persister is memory

    class AsyncSaveSyncLoad(DictPersister):
        async def save(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
            super().save(*args, **kwargs)

    mixed = AsyncSaveSyncLoad()
    app = await _ticker(mixed).abuild()
    await app.astep()
    assert mixed.threads("save") == {threading.get_ident()}  # awaited on the loop
    assert threading.get_ident() not in mixed.threads("load")


def test_is_async_callable() -> None:
    async def coro(x: int) -> int:
        return x

    def plain(x: int) -> int:
        return x

    class AsyncCall:
        async def __call__(self, x: int) -> int:
            return x

    class SyncCall:
        def __call__(self, x: int) -> int:
            return x

    assert is_async_callable(coro)
    assert is_async_callable(functools.partial(coro, 1))
    assert is_async_callable(InMemoryPersister().save)  # a bound method
    assert is_async_callable(AsyncCall())
    assert not is_async_callable(plain)
    assert not is_async_callable(DictPersister().save)
    assert not is_async_callable(SyncCall())
    assert not is_async_callable(functools.partial(plain, 1))


async def test_an_async_callable_object_as_save_is_awaited_not_threaded() -> None:
    persister = DictPersister()

    class Saver:
        async def __call__(self, *args: Any, **kwargs: Any) -> None:
            persister.save(*args, **kwargs)

    class Holder:
        save = Saver()
        load = persister.load

    app = await _ticker(Holder()).abuild()
    await app.astep()
    assert persister.threads("save") == {threading.get_ident()}
    assert persister.stored("app-1") == [0]


async def test_a_sync_save_returning_an_awaitable_is_awaited() -> None:
    persister = DictPersister()

    async def really_save(*args: Any, **kwargs: Any) -> None:
        persister.save(*args, **kwargs)

    class Wrapped:
        load = persister.load

        def save(self, *args: Any, **kwargs: Any) -> Any:
            return really_save(*args, **kwargs)

    app = await _ticker(Wrapped()).abuild()
    await app.astep()
    assert persister.stored("app-1") == [0]


def test_objects_without_callable_save_or_load_are_still_refused() -> None:
    class NoSave:
        save = "not a function"

    with pytest.raises(ConfigurationError, match="no save"):
        ApplicationBuilder().with_state_persister(NoSave())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="no load"):
        ApplicationBuilder().initialize_from(
            NoSave(),  # type: ignore[arg-type]
            resume_at_next_action=True,
            default_state={},
            default_entrypoint="tick",
        )


# -- Burr's own sync SQLitePersister -----------------------------------------------------------


async def test_burrs_sqlite_persister_end_to_end(tmp_path: Path) -> None:
    burr_persistence = pytest.importorskip("burr.core.persistence")
    path = str(tmp_path / "burr.db")
    persister = burr_persistence.SQLitePersister(path, connect_kwargs={"check_same_thread": False})
    persister.initialize()
    try:
        app = await _ticker(persister).abuild()
        await app.astep()
        await app.astep()
        resumed = await _ticker(persister).abuild()
        assert (resumed.sequence_id, resumed.position) == (1, "tick")
        assert resumed.state == {"count": 2, "when": WHEN}
        await resumed.astep()
        loaded = persister.load(None, "app-1")
        assert (loaded["sequence_id"], loaded["status"]) == (2, "completed")
        assert await SyncPersisterAdapter(persister).list_app_ids(None) == ["app-1"]
    finally:
        persister.cleanup()


async def test_burrs_sqlite_persister_on_a_thread_bound_connection_says_why(
    tmp_path: Path,
) -> None:
    burr_persistence = pytest.importorskip("burr.core.persistence")
    persister = burr_persistence.SQLitePersister(str(tmp_path / "bound.db"))
    persister.initialize()
    try:
        with pytest.raises(PersistenceError, match="same thread") as info:
            await _ticker(persister).abuild()
        assert any("check_same_thread=False" in note for note in info.value.__notes__)
    finally:
        persister.cleanup()
        # Burr's __del__ closes the connection once more, which sqlite3 refuses on any thread
        # but the one that opened it, and the last reference to the persister may go on a
        # worker thread (the adapter's calls ran there): an error at garbage collection, in
        # whichever test runs then. Leave __del__ nothing to close.
        persister.connection = SimpleNamespace(close=lambda: None)


async def test_spawning_parent_is_passed_only_when_save_accepts_it() -> None:
    """The sync adapter hands ``spawning_parent`` to a save that takes it (by name or
    ``**kwargs``), and leaves it out for one that predates it; a load may return it."""
    from burr_async import ParentPointer

    spawner = ParentPointer("parent", None, 4)

    class Named(DictPersister):
        def save(  # type: ignore[override]
            self,
            partition_key: str | None,
            app_id: str,
            sequence_id: int,
            position: str,
            state: Any,
            status: str,
            spawning_parent: ParentPointer | None = None,
        ) -> None:
            self.spawned = spawning_parent
            super().save(partition_key, app_id, sequence_id, position, state, status)

    class Older(DictPersister):
        def save(  # type: ignore[override]
            self,
            partition_key: str | None,
            app_id: str,
            sequence_id: int,
            position: str,
            state: Any,
            status: str,
            error: str | None = None,
        ) -> None:
            super().save(partition_key, app_id, sequence_id, position, state, status, error=error)

    named, older, anything = Named(), Older(), DictPersister()
    for persister in (named, older, anything):
        adapter = SyncPersisterAdapter(persister)
        await adapter.save(
            None, "child", 0, "tick", State({}), "completed", spawning_parent=spawner
        )
    assert named.spawned == spawner
    assert older.save_kwargs == [{"error": None}]
    assert anything.save_kwargs == [{"error": None, "parent": None, "spawning_parent": spawner}]

    class Returns(DictPersister):
        def load(self, *args: Any, **kwargs: Any) -> Any:
            return {"sequence_id": 0, "position": "tick", "state": {}, "spawning_parent": spawner}

    loaded = await SyncPersisterAdapter(Returns()).load(None, "child")
    assert loaded is not None and loaded.spawning_parent == spawner

    class Odd(DictPersister):
        def load(self, *args: Any, **kwargs: Any) -> Any:
            return {"sequence_id": 0, "position": "t", "state": {}, "spawning_parent": "parent@4"}

    with pytest.raises(PersistenceError, match="spawning_parent is 'parent@4'"):
        await SyncPersisterAdapter(Odd()).load(None, "child")
