"""The persister contract, run alike on InMemoryPersister, SQLite and Postgres."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from burr_async import (
    ConcurrentStepError,
    ConfigurationError,
    ParentPointer,
    PersistenceError,
    SerializationError,
    State,
)

pytestmark = pytest.mark.anyio


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def any_persister(every_persister: Any) -> Any:
    """Each persister in turn: in memory, SQLite, Postgres (see tests/conftest.py)."""
    return every_persister


async def test_save_then_load_the_latest_and_a_chosen_step(any_persister: Any) -> None:
    app = new_id()
    await any_persister.save("p", app, 0, "a", State({"v": 0}), "completed")
    await any_persister.save("p", app, 1, "b", State({"v": 1}), "completed")
    latest = await any_persister.load("p", app)
    first = await any_persister.load("p", app, 0)
    assert latest is not None and first is not None
    assert (latest.sequence_id, latest.position, latest.state["v"]) == (1, "b", 1)
    assert (first.sequence_id, first.position, first.state["v"]) == (0, "a", 0)
    assert latest.partition_key == "p" and latest.app_id == app
    assert await any_persister.load("p", app, 7) is None
    assert await any_persister.load("other", app) is None


async def test_a_taken_step_is_never_overwritten(any_persister: Any) -> None:
    app = new_id()
    await any_persister.save(None, app, 0, "a", State({"v": 1}), "completed")
    with pytest.raises(ConcurrentStepError) as info:
        await any_persister.save(None, app, 0, "a", State({"v": 2}), "completed")
    assert (info.value.app_id, info.value.sequence_id) == (app, 0)
    loaded = await any_persister.load(None, app)
    assert loaded is not None and loaded.state["v"] == 1 and loaded.partition_key is None


async def test_failed_steps_and_parents_round_trip(any_persister: Any) -> None:
    app = new_id()
    parent = ParentPointer("source", None, 3)
    await any_persister.save(
        "p", app, 0, "boom", State({}), "failed", error="ValueError: x", parent=parent
    )
    loaded = await any_persister.load("p", app)
    assert loaded is not None
    assert (loaded.status, loaded.error, loaded.parent) == ("failed", "ValueError: x", parent)


async def test_history_and_listings(any_persister: Any) -> None:
    partition, older, newer = new_id(), new_id(), new_id()
    for seq in range(3):
        await any_persister.save(partition, older, seq, f"s{seq}", State({"i": seq}), "completed")
    await any_persister.save(partition, newer, 0, "x", State({}), "completed")
    history = await any_persister.history(partition, older)
    assert [(h.sequence_id, h.position, h.state["i"]) for h in history] == [
        (0, "s0", 0),
        (1, "s1", 1),
        (2, "s2", 2),
    ]
    assert await any_persister.history(partition, new_id()) == []
    assert await any_persister.list_app_ids(partition) == [newer, older]
    apps = await any_persister.list_apps(partition)
    assert [(a.app_id, a.sequence_id, a.position) for a in apps] == [
        (newer, 0, "x"),
        (older, 2, "s2"),
    ]
    assert all(a.partition_key == partition and a.updated_at.tzinfo for a in apps)
    assert [a.app_id for a in await any_persister.list_apps(partition, limit=1)] == [newer]
    everywhere = await any_persister.list_apps(all_partitions=True, limit=10_000)
    assert {older, newer} <= {a.app_id for a in everywhere}


async def test_an_unserializable_state_stores_nothing(any_persister: Any) -> None:
    app = new_id()
    with pytest.raises(SerializationError) as info:
        await any_persister.save("p", app, 0, "a", State({"bad": object()}), "completed")
    assert info.value.key == "bad"
    assert await any_persister.load("p", app) is None


async def test_a_closed_persister_refuses_every_call(any_persister: Any) -> None:
    app = new_id()
    await any_persister.save("p", app, 0, "a", State({}), "completed")
    await any_persister.aclose()
    await any_persister.aclose()  # closing again is harmless
    calls = [
        any_persister.save("p", app, 1, "a", State({}), "completed"),
        any_persister.load("p", app),
        any_persister.history("p", app),
        any_persister.list_app_ids("p"),
        any_persister.list_apps("p"),
    ]
    for call in calls:
        with pytest.raises(PersistenceError, match="closed"):
            await call


async def test_spawning_parents_round_trip_through_every_read(any_persister: Any) -> None:
    """A sub-application's steps carry its spawning parent: load, history and list_apps
    return it (a parent in no partition too), and an app without one has None."""
    partition, child, orphan, other_child = new_id(), new_id(), new_id(), new_id()
    spawner = ParentPointer("parent-app", partition, 7)
    unpartitioned = ParentPointer("parent-app", None, 2)
    for seq in range(3):
        await any_persister.save(
            partition,
            child,
            seq,
            f"s{seq}",
            State({"i": seq}),
            "completed",
            spawning_parent=spawner,
        )
    await any_persister.save(
        None, other_child, 0, "x", State({}), "failed", error="E: x", spawning_parent=unpartitioned
    )
    await any_persister.save(partition, orphan, 0, "x", State({}), "completed")

    loaded, first = (
        await any_persister.load(partition, child),
        await any_persister.load(partition, child, 0),
    )
    assert loaded is not None and first is not None
    assert loaded.spawning_parent == first.spawning_parent == spawner
    assert loaded.parent is None
    assert [h.spawning_parent for h in await any_persister.history(partition, child)] == [
        spawner
    ] * 3
    other = await any_persister.load(None, other_child)
    assert other is not None and other.spawning_parent == unpartitioned
    assert other.spawning_parent.partition_key is None
    orphaned = await any_persister.load(partition, orphan)
    assert orphaned is not None and orphaned.spawning_parent is None
    listed = {a.app_id: a.spawning_parent for a in await any_persister.list_apps(partition)}
    assert listed == {child: spawner, orphan: None}
    everywhere = await any_persister.list_apps(all_partitions=True, limit=10_000)
    (summary,) = [a for a in everywhere if a.app_id == other_child]
    assert summary.spawning_parent == unpartitioned


async def test_list_children_finds_the_apps_a_step_spawned(any_persister: Any) -> None:
    """list_children: the apps whose spawning parent is that app (at that step), in any
    partition, each with its latest step; not the apps of another parent or partition."""
    parent_pk, parent, fork = new_id(), new_id(), new_id()
    at_3, at_3_elsewhere, at_5 = new_id(), new_id(), new_id()
    await any_persister.save(
        parent_pk,
        at_3,
        0,
        "a",
        State({}),
        "completed",
        spawning_parent=ParentPointer(parent, parent_pk, 3),
    )
    await any_persister.save(
        parent_pk,
        at_3,
        1,
        "b",
        State({}),
        "completed",
        spawning_parent=ParentPointer(parent, parent_pk, 3),
    )
    await any_persister.save(
        None,
        at_3_elsewhere,
        0,
        "a",
        State({}),
        "completed",
        spawning_parent=ParentPointer(parent, parent_pk, 3),
    )
    await any_persister.save(
        parent_pk,
        at_5,
        0,
        "a",
        State({}),
        "completed",
        spawning_parent=ParentPointer(parent, parent_pk, 5),
    )
    # the same parent app id in another partition, and a fork (a parent, not a spawner)
    await any_persister.save(
        parent_pk,
        new_id(),
        0,
        "a",
        State({}),
        "completed",
        spawning_parent=ParentPointer(parent, None, 3),
    )
    await any_persister.save(
        parent_pk, fork, 3, "a", State({}), "completed", parent=ParentPointer(parent, parent_pk, 3)
    )

    children = await any_persister.list_children(parent_pk, parent)
    assert [c.app_id for c in children] == [at_5, at_3_elsewhere, at_3]  # latest first
    assert {c.app_id: c.sequence_id for c in children}[at_3] == 1
    assert {c.app_id: c.partition_key for c in children}[at_3_elsewhere] is None
    at_step = await any_persister.list_children(parent_pk, parent, 3)
    assert {c.app_id for c in at_step} == {at_3, at_3_elsewhere}
    assert all(c.spawning_parent == ParentPointer(parent, parent_pk, 3) for c in at_step)
    assert await any_persister.list_children(parent_pk, parent, 4) == []
    assert await any_persister.list_children(parent_pk, new_id()) == []
    assert len(await any_persister.list_children(None, parent)) == 1


async def test_a_nul_character_in_a_state_string_is_refused_alike(any_persister: Any) -> None:
    """Postgres cannot store one in JSONB, so no persister does: the same SerializationError,
    naming the key, and nothing stored."""
    app = new_id()
    with pytest.raises(SerializationError, match="note"):
        await any_persister.save("p", app, 0, "a", State({"note": "a\x00b"}), "completed")
    assert await any_persister.load("p", app) is None


async def test_a_parent_in_the_default_partition_reads_back_as_none(any_persister: Any) -> None:
    """``None`` and ``""`` are the same partition, and every read says ``None``."""
    source, pk, app = new_id(), new_id(), new_id()
    await any_persister.save("", source, 0, "a", State({}), "completed")
    await any_persister.save(
        pk,
        app,
        0,
        "a",
        State({}),
        "completed",
        parent=ParentPointer(source, "", 0),
        spawning_parent=ParentPointer(source, "", 0),
    )
    loaded = await any_persister.load(pk, app)
    assert loaded is not None
    assert loaded.parent == ParentPointer(source, None, 0)
    assert loaded.spawning_parent == ParentPointer(source, None, 0)
    [listed] = await any_persister.list_apps(pk)
    assert listed.spawning_parent == ParentPointer(source, None, 0)


@pytest.mark.parametrize(
    "paging",
    [
        {"limit": -1},
        {"limit": True},
        {"limit": "2"},
        {"after_sequence_id": True},
        {"after_sequence_id": "x"},
    ],
)
async def test_history_refuses_a_bad_page_alike(any_persister: Any, paging: dict[str, Any]) -> None:
    app = new_id()
    for seq in range(3):
        await any_persister.save("p", app, seq, "a", State({}), "completed")
    with pytest.raises(ConfigurationError):
        await any_persister.history("p", app, **paging)


async def test_a_closed_persister_refuses_to_initialize(any_persister: Any) -> None:
    await any_persister.aclose()
    for call in (any_persister.initialize, any_persister.is_initialized):
        with pytest.raises(PersistenceError, match="closed"):
            await call()
