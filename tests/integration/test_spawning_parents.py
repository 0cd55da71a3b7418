"""Spawning parents in the SQLAlchemy persister, on SQLite and Postgres: the ``spawn_*``
columns of revision 0004_0003 on delta rows, through prune's rewrite and concurrent (batched)
writes; a table at revision 0003 upgraded in place; the refusal to store a spawning parent
below 0004_0003 while every other step is stored; the index that ``list_children`` uses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from burr_async import ParentPointer, SchemaOutOfDateError, State
from burr_async.persistence import migrate
from burr_async.persistence.models import (
    HEAD_REVISION,
    SPAWN_COLUMNS,
    schema_status,
    stores_spawning_parents,
)
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister
from tests.databases import Database

pytestmark = pytest.mark.anyio

SPAWNER = ParentPointer("fan-out", "tenant", 4)
PROFILE = "p" * 4000  # unchanged by every step: the steps after the first are delta rows


def new_id() -> str:
    return str(uuid.uuid4())


def table_name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


async def spawn_columns(persister: SQLAlchemyPersister, app_id: str) -> list[tuple[Any, ...]]:
    """(sequence_id, delta, spawn_app_uid, spawn_partition_key, spawn_sequence_id) of an app's
    rows as stored, oldest first."""
    t = persister.table
    query = (
        sa.select(t.c.sequence_id, t.c.delta, *(t.c[c] for c in SPAWN_COLUMNS))
        .where(t.c.app_uid == app_id)
        .order_by(t.c.sequence_id)
    )
    async with persister.engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(query)).all()]


async def chat(
    persister: SQLAlchemyPersister,
    app_id: str,
    turns: int,
    *,
    start: int = 0,
    spawning_parent: ParentPointer | None = SPAWNER,
) -> list[State]:
    """``turns`` steps appending a message each, as an application saves them (holding the
    state it last stored, so that they are delta rows); the states saved."""
    state = State({"chat": [], "profile": PROFILE})
    saved = []
    for seq in range(start, start + turns):
        state = state.append(chat=f"message {seq}")
        kwargs = {} if spawning_parent is None else {"spawning_parent": spawning_parent}
        await persister.save("u", app_id, seq, "talk", state, "completed", **kwargs)
        saved.append(state)
    return saved


@pytest.fixture
async def persister(db: Database) -> AsyncIterator[SQLAlchemyPersister]:
    async with db.persister(snapshot_every=5) as p:
        yield p


async def test_delta_rows_keep_the_spawning_parent(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    saved = await chat(persister, app_id, 7)
    stored = await spawn_columns(persister, app_id)
    assert [delta for _, delta, *_ in stored] == [False, True, True, True, True, False, True]
    assert {tuple(spawn) for _, _, *spawn in stored} == {("fan-out", "tenant", 4)}
    for seq in (3, 6):  # a delta row rebuilt from the full one before it
        loaded = await persister.load("u", app_id, seq)
        assert loaded is not None and loaded.state == saved[seq]
        assert loaded.spawning_parent == SPAWNER
    page = await persister.history("u", app_id, after_sequence_id=2, limit=3)
    assert [(s.sequence_id, s.spawning_parent) for s in page] == [(n, SPAWNER) for n in (3, 4, 5)]


async def test_pruning_rewrites_a_delta_row_and_keeps_its_spawning_parent(
    persister: SQLAlchemyPersister,
) -> None:
    app_id = new_id()
    saved = await chat(persister, app_id, 4)
    assert await persister.prune("u", app_id, keep_last=2) == 2
    assert await spawn_columns(persister, app_id) == [
        (2, False, "fan-out", "tenant", 4),  # was a delta row: now the full state it stood for
        (3, True, "fan-out", "tenant", 4),
    ]
    loaded = await persister.load("u", app_id)
    assert loaded is not None and loaded.state == saved[-1] and loaded.spawning_parent == SPAWNER
    children = await persister.list_children("tenant", "fan-out", 4)
    assert [(c.sequence_id, c.spawning_parent) for c in children if c.app_id == app_id] == [
        (3, SPAWNER)
    ]


async def test_concurrent_steps_written_in_one_batch_keep_their_spawning_parents(
    persister: SQLAlchemyPersister,
) -> None:
    parent = new_id()
    children = [new_id() for _ in range(12)]

    async def child(n: int, app_id: str) -> None:
        spawner = ParentPointer(parent, None, n % 3)
        for seq in range(3):
            await persister.save(
                None, app_id, seq, "work", State({"n": n}), "completed", spawning_parent=spawner
            )

    async with anyio.create_task_group() as tg:
        for n, app_id in enumerate(children):
            tg.start_soon(child, n, app_id)
    for step in range(3):
        found = await persister.list_children(None, parent, step)
        assert {c.app_id for c in found} == set(children[step::3])
        assert all(c.sequence_id == 2 for c in found)
        assert all(c.spawning_parent == ParentPointer(parent, None, step) for c in found)


async def test_a_0003_table_with_steps_upgrades_in_place(db: Database) -> None:
    """Provision at 0003 and write steps there (this release runs on it, without spawning
    parents); upgrade to head: the steps load, with no spawning parent, and new steps store
    one. Downgrading to 0003 drops the columns again and the steps still load."""
    app_id, child = new_id(), new_id()
    async with db.table_at("0003") as (engine, name):
        async with db.persister(engine, table_name=name, snapshot_every=5) as persister:
            saved = await chat(persister, app_id, 3, spawning_parent=None)
            assert {c.name for c in persister.table.columns}.isdisjoint(SPAWN_COLUMNS)
            loaded = await persister.load("u", app_id)
            assert loaded is not None and loaded.spawning_parent is None
            assert await persister.list_children("tenant", "fan-out") == []
            await persister.initialize()  # migrates to head; the persister now stores them
            assert await migrate.current(engine, table_name=name, schema=db.schema) == (
                HEAD_REVISION
            )
            await chat(persister, child, 2)
        async with db.persister(engine, table_name=name, snapshot_every=5) as persister:
            history = await persister.history("u", app_id)
            assert [s.state for s in history] == saved
            assert [s.spawning_parent for s in history] == [None] * 3
            more = await chat(persister, app_id, 2, start=3, spawning_parent=None)
            latest = await persister.load("u", app_id)
            assert latest is not None and latest.state["chat"][-1] == more[-1]["chat"][-1]
            loaded = await persister.load("u", child)
            assert loaded is not None and loaded.spawning_parent == SPAWNER
            assert [c.app_id for c in await persister.list_children("tenant", "fan-out")] == [child]
            summaries = {a.app_id: a for a in await persister.list_apps("u")}
            assert summaries[child].spawning_parent == SPAWNER
            assert summaries[app_id].spawning_parent is None
        await migrate.downgrade(engine, "0003", table_name=name, schema=db.schema)
        async with db.persister(engine, table_name=name) as persister:
            assert await migrate.current(engine, table_name=name, schema=db.schema) == "0003"
            loaded = await persister.load("u", child)
            assert loaded is not None and loaded.spawning_parent is None  # the columns are gone
            assert len(await persister.history("u", app_id)) == 5


@pytest.mark.parametrize("revision", ["0002_0001", "0003"])
async def test_below_0004_0003_a_spawning_parent_is_refused_and_other_steps_are_stored(
    db: Database, revision: str
) -> None:
    parent = ParentPointer("fan-out", None, 1)
    async with (
        db.table_at(revision) as (engine, name),
        db.persister(engine, table_name=name) as persister,
    ):
        with pytest.raises(SchemaOutOfDateError) as info:
            await persister.save(
                "u", "child", 0, "work", State({}), "completed", spawning_parent=parent
            )
        message = str(info.value)
        assert f"is at revision {revision!r}" in message
        assert "needs revision '0004_0003' to store a sub-application's spawning" in message
        assert "db upgrade" in message and name in message
        assert (info.value.app_id, info.value.sequence_id) == ("child", 0)
        assert await persister.load("u", "child") is None  # nothing stored
        # every other step is stored, concurrent ones in one batch too
        async with anyio.create_task_group() as tg:
            for n in range(6):
                tg.start_soon(persister.save, "u", f"app{n}", 0, "work", State({}), "completed")
        await persister.save(
            "u", "app0", 1, "work", State({}), "failed", parent=ParentPointer("x", None, 0)
        )
        assert {a.app_id for a in await persister.list_apps("u")} == {f"app{n}" for n in range(6)}
        loaded = await persister.load("u", "app0")
        assert loaded is not None and loaded.spawning_parent is None
        await persister.initialize()
        await persister.save(
            "u", "child", 0, "work", State({}), "completed", spawning_parent=parent
        )
        loaded = await persister.load("u", "child")
        assert loaded is not None and loaded.spawning_parent == parent


async def test_list_children_is_an_index_lookup(db: Database) -> None:
    """The children of a parent step are found through the partial index of revision
    0004_0003 (asked of each database's planner, with sequential scans discouraged on
    Postgres, where a tiny table would otherwise be scanned)."""
    t = sa.table(
        "burr_state",
        *(sa.column(c) for c in ("partition_key", "app_uid", *SPAWN_COLUMNS)),
        schema=db.schema,
    )
    query = sa.select(t.c.partition_key, t.c.app_uid).where(
        t.c.spawn_app_uid == "fan-out",
        t.c.spawn_partition_key == "tenant",
        t.c.spawn_sequence_id == 4,
    )
    engine = db.engine()
    try:
        async with engine.connect() as conn:
            if db.backend == "postgres":
                await conn.execute(sa.text("SET enable_seqscan = off"))
                compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
                plan = (await conn.execute(sa.text(f"EXPLAIN {compiled}"))).scalars().all()
            else:
                compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
                result = await conn.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}"))
                plan = [str(row[-1]) for row in result.all()]
    finally:
        await engine.dispose()
    assert any("ix_burr_state_spawn_app_uid_spawn_sequence_id" in line for line in plan), plan


def test_release_0003_runs_on_0004_0003_and_this_release_on_0003() -> None:
    """The rolling-deploy rule for this revision, in both directions (docs/deployment.md)."""
    release_0003 = {
        "head": "0003",
        "known": ("0001", "0002_0001", "0003"),
        "runs_from": "0002_0001",
    }
    assert schema_status("0004_0003", **release_0003) == "compatible"  # type: ignore[arg-type]
    assert schema_status("0003") == "previous" and schema_status("0004_0003") == "previous"
    assert [stores_spawning_parents(r) for r in ("0002_0001", "0003", "0004_0003", "0005")] == [
        False,
        False,
        True,
        True,
    ]
    assert stores_spawning_parents("0007_0004") and not stores_spawning_parents("0006")
    assert not stores_spawning_parents(None)


async def test_rows_written_by_release_0003_code_on_0004_0003_have_no_spawning_parent(
    db: Database,
) -> None:
    """Release 0003's write path names only its own columns: on a table at 0004_0003 its rows
    get NULL spawn columns, which this release reads as no spawning parent. (Simulated: this
    persister addressing the table as revision 0003 does.)"""
    app_id = new_id()
    async with db.persister() as old:
        assert await old.is_initialized()
        old._use_table(spawning=False)
        await old.save("u", app_id, 0, "x", State({"v": 1}), "completed")
        await old.save("u", app_id, 1, "x", State({"v": 2}), "completed")
    async with db.persister() as new:
        loaded = await new.load("u", app_id)
        assert loaded is not None and loaded.state["v"] == 2 and loaded.spawning_parent is None
        assert [row[2:] for row in await spawn_columns(new, app_id)] == [(None, None, None)] * 2
