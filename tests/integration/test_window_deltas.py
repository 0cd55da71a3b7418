"""A list kept to a window of its last items (the oldest leave at the front, new ones come in
at the end) is stored, on SQLite and Postgres, as the items that left and came in: a ``trim``
section, from revision 0005 on. Below it the new list is stored whole; a persister that finds
an earlier revision it runs on still writes deltas; downgrading from 0005 rewrites the rows
with a ``trim`` section as full states, which the releases before it read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from burr_async import State
from burr_async.persistence import migrate
from burr_async.persistence._delta import has_trim
from burr_async.persistence.models import HEAD_REVISION, TRIM_REVISION, schema_status
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister
from tests.databases import Database
from tests.databases import stored_rows as rows

pytestmark = pytest.mark.anyio

WINDOW = 12
PROFILE = "p" * 4000  # unchanged by every step: deltas never outweigh the full state here


def new_id() -> str:
    return str(uuid.uuid4())


def sorted_json(state: State) -> bytes:
    """The state as stored, keys sorted (JSONB keeps no key order)."""
    return orjson.dumps(dict(state), option=orjson.OPT_SORT_KEYS)


def sections(text: str) -> dict[str, object]:
    parsed = orjson.loads(text)
    assert parsed[0] == "delta"
    return parsed[1]  # type: ignore[no-any-return]


async def windowed_chat(
    persister: SQLAlchemyPersister, app_id: str, steps: int, *, first: int = 0, state: State
) -> list[State]:
    """Save ``steps`` steps (sequence ids from ``first``) of a chat keeping its last
    :data:`WINDOW` messages, as an application does (holding the state it last stored)."""
    saved = []
    for seq in range(first, first + steps):
        message = {"role": "user", "content": f"message {seq}"}
        state = state.update(chat=[*state["chat"][-(WINDOW - 1) :], message])
        await persister.save("u", app_id, seq, "talk", state, "completed")
        saved.append(state)
    return saved


def start() -> State:
    return State({"chat": [], "profile": PROFILE})


@pytest.fixture
async def persister(db: Database) -> AsyncIterator[SQLAlchemyPersister]:
    async with db.persister(snapshot_every=10) as p:
        yield p


async def test_a_window_stores_what_left_and_came_in_and_every_step_loads_whole(
    persister: SQLAlchemyPersister,
) -> None:
    app_id = new_id()
    saved = await windowed_chat(persister, app_id, 40, state=start())
    stored = await rows(persister, app_id)
    assert [seq for seq, delta, _ in stored if not delta] == [0, 10, 20, 30]
    for seq, delta, text in stored:
        if delta:  # one message in, and once the window is full the oldest one out
            message = {"role": "user", "content": f"message {seq}"}
            expected = {"append": {"chat": [message]}}
            assert sections(text) == (
                {"trim": {"chat": 1}} | expected if seq >= WINDOW else expected
            )
    for seq, state in enumerate(saved):
        loaded = await persister.load("u", app_id, seq)
        assert loaded is not None and sorted_json(loaded.state) == sorted_json(state), seq
    history = await persister.history("u", app_id, after_sequence_id=14, limit=20)
    assert [sorted_json(step.state) for step in history] == [sorted_json(s) for s in saved[15:35]]


async def test_resume_fork_and_prune_across_trimmed_rows(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    saved = await windowed_chat(persister, app_id, 25, state=start())
    loaded = await persister.load("u", app_id)
    assert loaded is not None
    # the loaded state is the base of the next delta, as after a restart
    saved += await windowed_chat(persister, app_id, 3, first=25, state=loaded.state)
    assert sections((await rows(persister, app_id))[-1][2])["trim"] == {"chat": 1}
    assert await persister.prune("u", app_id, keep_last=6) == 22
    kept = await persister.history("u", app_id)
    assert [step.sequence_id for step in kept] == list(range(22, 28))
    assert [sorted_json(step.state) for step in kept] == [sorted_json(s) for s in saved[22:]]


async def test_below_revision_0005_a_window_is_stored_whole_and_0005_downgrades_to_it(
    db: Database,
) -> None:
    app_id = new_id()
    async with db.table_at("0004_0003") as (engine, name):
        async with db.persister(engine, table_name=name, snapshot_every=10) as persister:
            saved = await windowed_chat(persister, app_id, 15, state=start())
            stored = await rows(persister, app_id)
            # this release still writes deltas at the earlier revision, without a trim section
            assert [delta for _, delta, _ in stored].count(True) == 13
            assert not any(has_trim(text) for _, delta, text in stored if delta)
            assert sections(stored[-1][2]).keys() == {"set"}
            await persister.initialize()  # to head: the next windows are trimmed
            assert await migrate.current(engine, table_name=name, schema=db.schema) == "0005"
            saved += await windowed_chat(persister, app_id, 10, first=15, state=saved[-1])
            assert sum(has_trim(text) for _, delta, text in await rows(persister, app_id) if delta)
        await migrate.downgrade(engine, "0004_0003", table_name=name, schema=db.schema)
        async with db.persister(engine, table_name=name) as persister:
            stored = await rows(persister, app_id)
            assert not any(has_trim(text) for _, delta, text in stored if delta)
            assert any(delta for _, delta, _ in stored)  # the other deltas stay as they were
            history = await persister.history("u", app_id)
            assert [sorted_json(step.state) for step in history] == [sorted_json(s) for s in saved]


@pytest.mark.parametrize("revision", ["0003", "0004_0003"])
async def test_at_an_earlier_revision_it_runs_on_the_persister_still_writes_deltas(
    db: Database, revision: str
) -> None:
    app_id = new_id()
    async with (
        db.table_at(revision) as (engine, name),
        db.persister(engine, table_name=name) as persister,
    ):
        states = [start()]  # held, as an application holds its state
        for seq in range(4):
            states.append(states[-1].append(chat=f"m{seq}"))
            await persister.save("u", app_id, seq, "talk", states[-1], "completed")
        assert [delta for _, delta, _ in await rows(persister, app_id)] == [False] + [True] * 3
        loaded = await persister.load("u", app_id)
        assert loaded is not None and loaded.state == states[-1]


def test_releases_before_0005_refuse_a_table_at_it() -> None:
    """The release whose head is 0004_0003 finds 0005 ahead of it: it refuses the table
    before reading a row, so it never meets a trim section (docs/deployment.md)."""
    release_0004 = {
        "head": "0004_0003",
        "known": ("0001", "0002_0001", "0003", "0004_0003"),
        "runs_from": "0002_0001",
    }
    assert schema_status(TRIM_REVISION, **release_0004) == "ahead"  # type: ignore[arg-type]
    assert TRIM_REVISION == HEAD_REVISION
    assert schema_status("0004_0003") == "previous"
