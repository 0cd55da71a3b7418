"""Steps stored as what they changed (delta rows), on SQLite and Postgres: every read returns
the full state each step had, whatever mix of full and delta rows holds it; prune keeps what
it keeps loadable; old readers refuse delta rows; a table of revision 0001 upgrades in place."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from burr_async import ApplicationBuilder, OrjsonSerde, SerializationError, State, action
from burr_async.persistence import migrate
from burr_async.persistence.models import HEAD_REVISION, schema_status
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister
from tests.databases import Database, run_alembic
from tests.databases import stored_rows as rows
from tests.hostile_values import hostile_json
from tests.integration._delta_chat import PROFILE, chat, encoded, new_id

pytestmark = pytest.mark.anyio


@pytest.fixture
async def persister(db: Database) -> AsyncIterator[SQLAlchemyPersister]:
    async with db.persister(snapshot_every=10) as p:
        yield p


async def test_a_chat_stores_deltas_and_every_step_loads_whole(
    persister: SQLAlchemyPersister,
) -> None:
    app_id = new_id()
    saved = await chat(persister, app_id, 35)
    stored = await rows(persister, app_id)
    full = [seq for seq, delta, _ in stored if not delta]
    assert full == [0, 10, 20, 30]  # a full state every snapshot_every steps, deltas between
    first_delta = next(text for _, delta, text in stored if delta)
    assert orjson.loads(first_delta)[0] == "delta"
    for seq, state in enumerate(saved):
        loaded = await persister.load("u", app_id, seq)
        assert loaded is not None and encoded(loaded.state) == encoded(state)
    latest = await persister.load("u", app_id)
    assert latest is not None and latest.sequence_id == 34
    assert encoded(latest.state) == encoded(saved[-1])
    history = await persister.history("u", app_id)
    assert [encoded(step.state) for step in history] == [encoded(s) for s in saved]


async def test_a_small_state_is_stored_whole_once_its_deltas_outweigh_it(
    persister: SQLAlchemyPersister,
) -> None:
    app_id = new_id()
    states = [State({"chat": []})]
    for seq in range(40):
        states.append(states[-1].append(chat="x" * 50))  # held, as an application holds it
        await persister.save("u", app_id, seq, "talk", states[-1], "completed")
    full = [seq for seq, delta, _ in await rows(persister, app_id) if not delta]
    # a delta is larger than the first state: full again; then the state outgrows the deltas
    # since it by one delta a step: full states get further apart, at most 10 steps apart
    assert full[:5] == [0, 1, 3, 6, 11], full
    gaps = [b - a for a, b in itertools.pairwise(full)]
    assert gaps == sorted(gaps) and gaps[-1] == 10, full


@pytest.mark.parametrize(("after", "limit"), [(None, 7), (3, 4), (9, 1), (10, 11), (33, 5)])
async def test_a_history_page_starting_inside_a_delta_run_is_whole(
    persister: SQLAlchemyPersister, after: int | None, limit: int
) -> None:
    app_id = new_id()
    saved = await chat(persister, app_id, 35)
    page = await persister.history("u", app_id, after_sequence_id=after, limit=limit)
    start = 0 if after is None else after + 1
    expected = list(range(start, min(start + limit, 35)))
    assert [step.sequence_id for step in page] == expected
    assert [encoded(step.state) for step in page] == [encoded(saved[i]) for i in expected]


async def test_a_delta_is_small_and_the_table_grows_linearly(db: Database) -> None:
    """At 1,000 turns, the bytes stored for the app are a small fraction of what full states
    take (the issue's bar: at most 5%)."""
    app_id = new_id()
    sizes = {}
    for storage in ("delta", "snapshot"):
        async with db.persister(storage=storage) as persister:
            await chat(persister, f"{app_id}-{storage}", 1000)
            stored = await rows(persister, f"{app_id}-{storage}")
            sizes[storage] = sum(len(text) for _, _, text in stored)
            assert any(delta for _, delta, _ in stored) == (storage == "delta")
    assert sizes["delta"] <= 0.05 * sizes["snapshot"], sizes


async def test_resuming_continues_with_deltas(db: Database) -> None:
    """A load tells the persister what the app's latest state is: a new persister (a new
    process) that loads an app and saves its next step writes a delta, not a full state."""
    app_id = new_id()
    async with db.persister() as first:
        await chat(first, app_id, 3)
    async with db.persister() as second:
        loaded = await second.load("u", app_id)
        assert loaded is not None
        after = loaded.state.append(chat={"role": "ai", "content": "back"})
        await second.save("u", app_id, 3, "talk", after, "completed")
        stored = await rows(second, app_id)
        assert stored[-1][1] is True
        again = await second.load("u", app_id)
        assert again is not None and encoded(again.state) == encoded(after)


@action(reads=["chat"], writes=["chat"])
async def talk(state: State, text: str) -> State:
    return state.append(chat=text)


async def app(persister: SQLAlchemyPersister, app_id: str, **fork: Any) -> Any:
    return await (
        ApplicationBuilder()
        .with_actions(talk=talk)
        .with_transitions(("talk", "talk"))
        .with_identifiers(app_id=app_id, partition_key="u")
        .initialize_from(
            persister,
            resume_at_next_action=True,
            default_state={"chat": [], "profile": PROFILE},
            default_entrypoint="talk",
            **fork,
        )
        .with_state_persister(persister)
        .abuild()
    )


async def test_applications_resume_fork_and_fail_across_deltas(
    persister: SQLAlchemyPersister,
) -> None:
    app_id = new_id()
    application = await app(persister, app_id)
    for i in range(14):
        await application.astep(inputs={"text": f"t{i}"})
    assert [delta for _, delta, _ in await rows(persister, app_id)].count(True) >= 7
    resumed = await app(persister, app_id)
    assert resumed.state["chat"] == [f"t{i}" for i in range(14)]
    await resumed.astep(inputs={"text": "t14"})
    fork_id = new_id()
    forked = await app(
        persister,
        fork_id,
        fork_from_app_id=app_id,
        fork_from_partition_key="u",
        fork_from_sequence_id=12,
    )
    assert forked.state["chat"] == [f"t{i}" for i in range(13)]
    await forked.astep(inputs={"text": "fork"})
    loaded = await persister.load("u", fork_id)
    assert loaded is not None and loaded.state["chat"][-2:] == ["t12", "fork"]
    source = await persister.load("u", app_id)
    assert source is not None and source.state["chat"][-1] == "t14"


async def test_a_failed_step_stores_an_empty_delta(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    state = State({"chat": ["a"]})
    await persister.save("u", app_id, 0, "talk", state, "completed")
    await persister.save("u", app_id, 1, "talk", state, "failed", error="RuntimeError: down")
    _, delta, text = (await rows(persister, app_id))[1]
    assert delta and orjson.loads(text) == ["delta", {}]
    loaded = await persister.load("u", app_id)
    assert loaded is not None and loaded.status == "failed" and loaded.state == state


async def test_every_change_of_a_step_is_replayed(persister: SQLAlchemyPersister) -> None:
    """Adds, replacements, removals, appends to lists made by hand or by ``append`` (several
    in one step), a tuple extended, and an item replaced by an equal one of another type."""
    app_id = new_id()
    states = [State({"a": [1, 2], "b": {"x": 1}, "c": "gone", "t": (1, 2), "n": 1, "p": PROFILE})]
    s = states[0]
    changes = [
        lambda s: s.append(a=3).append(a=4).update(b={"x": 2}),
        lambda s: s.wipe(delete=["c"]).update(d=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
        lambda s: s.update(a=[*s["a"], 5]),  # a list extended by hand
        lambda s: s.update(a=[True, *s["a"][1:]]),  # 1 replaced by True: equal, not the same
        lambda s: s.extend(t=[3]),
        lambda s: s.update(a=[]),  # shorter
        lambda s: s.update(n=1.0),  # equal value, another type
        lambda s: s.extend(a=[b"\x00bytes", {"__burr_async__": "bytes", "value": "x"}]),
    ]
    for change in changes:
        s = change(s)
        states.append(s)
    for seq, state in enumerate(states):
        await persister.save("u", app_id, seq, "step", state, "completed")
    assert sum(delta for _, delta, _ in await rows(persister, app_id)) == len(changes)
    for seq, state in enumerate(states):
        loaded = await persister.load("u", app_id, seq)
        assert loaded is not None and encoded(loaded.state) == encoded(state), seq
    assert [encoded(step.state) for step in await persister.history("u", app_id)] == [
        encoded(state) for state in states
    ]


# what both backends store unchanged (JSONB turns -0.0 into 0.0: docs/persistence/serialization.md)
_values = hostile_json(for_postgres=True).filter(lambda value: "-0.0" not in repr(value))
_keys = st.sampled_from(["a", "b", "c", "__burr_async__"])
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), _keys, _values),
        st.tuples(st.just("extend"), _keys, st.lists(_values, max_size=3)),
        st.tuples(st.just("update"), _keys, _values),
        st.tuples(st.just("wipe"), _keys, st.none()),
        st.tuples(st.just("by_hand"), _keys, _values),
        st.tuples(st.just("window"), _keys, _values),  # the first item out, one in at the end
        st.tuples(st.just("shift"), _keys, st.none()),  # the first item out
    ),
    min_size=1,
    max_size=25,
)


def _step(state: State, op: tuple[str, str, Any]) -> State:
    kind, key, value = op
    current = state.get(key)
    if kind in ("append", "extend", "by_hand", "window", "shift") and not isinstance(current, list):
        return state.update(**{key: [value]})
    if kind == "window":
        return state.update(**{key: [*current[1:], value]})
    if kind == "shift":
        return state.update(**{key: current[1:]})
    if kind == "append":
        return state.append(**{key: value})
    if kind == "extend":
        return state.extend(**{key: value})
    if kind == "by_hand":
        return state.update(**{key: [*(current or []), value]})
    if kind == "wipe":
        return state.wipe(delete=[key])
    return state.update(**{key: value})


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=_ops)
async def test_any_sequence_of_changes_loads_back_exactly(
    persister: SQLAlchemyPersister, ops: list[tuple[str, str, Any]]
) -> None:
    app_id = new_id()
    state = State({"profile": PROFILE})
    states = []
    for seq, op in enumerate(ops):
        state = _step(state, op)
        await persister.save(None, app_id, seq, "step", state, "completed")
        states.append(state)
    history = await persister.history(None, app_id)
    assert [encoded(step.state) for step in history] == [encoded(s) for s in states]
    for seq in (0, len(states) // 2, len(states) - 1):
        loaded = await persister.load(None, app_id, seq)
        assert loaded is not None and encoded(loaded.state) == encoded(states[seq])


@pytest.mark.parametrize("keep_last", [1, 3, 9, 10, 11, 24, 40])
async def test_prune_keeps_every_kept_step_loadable(
    persister: SQLAlchemyPersister, keep_last: int
) -> None:
    app_id = new_id()
    saved = await chat(persister, app_id, 25)
    other = new_id()
    other_saved = await chat(persister, other, 5)
    removed = await persister.prune("u", app_id, keep_last=keep_last)
    assert removed == max(0, 25 - keep_last)
    stored = await rows(persister, app_id)
    assert [seq for seq, _, _ in stored] == list(range(max(0, 25 - keep_last), 25))
    assert stored[0][1] is False  # the oldest kept step holds a full state
    for seq in range(25):
        loaded = await persister.load("u", app_id, seq)
        if seq < 25 - keep_last:
            assert loaded is None
        else:
            assert loaded is not None and encoded(loaded.state) == encoded(saved[seq])
    history = await persister.history("u", app_id)
    assert [encoded(step.state) for step in history] == [encoded(s) for s in saved[-keep_last:]]
    # the app goes on from its latest step, with deltas again
    resumed = await persister.load("u", app_id)
    assert resumed is not None
    after = resumed.state.append(chat="more")
    await persister.save("u", app_id, 25, "talk", after, "completed")
    loaded = await persister.load("u", app_id)
    assert loaded is not None and encoded(loaded.state) == encoded(after)
    untouched = await persister.history("u", other)
    assert [encoded(step.state) for step in untouched] == [encoded(s) for s in other_saved]


async def test_prune_all_keeps_each_app_loadable(persister: SQLAlchemyPersister) -> None:
    apps: dict[str, list[State]] = {}
    for _ in range(3):
        app_id = new_id()
        apps[app_id] = await chat(persister, app_id, 17, pk="pa")
    await persister.prune_all(keep_last=5, partition_key="pa")
    for app_id, saved in apps.items():
        history = await persister.history("pa", app_id)
        assert [encoded(step.state) for step in history] == [encoded(s) for s in saved[-5:]]


async def test_a_history_cut_outside_burr_async_is_a_clear_error(
    persister: SQLAlchemyPersister,
) -> None:
    app_id = new_id()
    await chat(persister, app_id, 15)
    t = persister.table
    async with persister.engine.begin() as conn:
        await conn.execute(sa.delete(t).where(t.c.app_uid == app_id, t.c.sequence_id == 10))
    with pytest.raises(SerializationError, match=r"Cannot rebuild the state of .*sequence_id=14"):
        await persister.load("u", app_id)
    with pytest.raises(SerializationError, match="Cannot rebuild"):
        await persister.history("u", app_id)
    early = await persister.load("u", app_id, 5)  # what does not depend on the cut still loads
    assert early is not None and len(early.state["chat"]) == 6
    with pytest.raises(SerializationError, match="Cannot rebuild"):
        await persister.prune("u", app_id, keep_last=2)
    assert len(await rows(persister, app_id)) == 14  # nothing removed
    await persister.delete_app("u", app_id)  # other tests prune every app of the table


async def test_prune_all_leaves_an_app_it_cannot_rebuild_and_prunes_the_others(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"t_{uuid.uuid4().hex[:10]}"
    engine = db.engine()
    try:
        await migrate.upgrade(engine, table_name=name, schema=db.schema)
        async with db.persister(engine, table_name=name, snapshot_every=10) as persister:
            damaged, healthy = new_id(), new_id()
            await chat(persister, damaged, 15)
            saved = await chat(persister, healthy, 15)
            t = persister.table
            async with persister.engine.begin() as conn:
                await conn.execute(
                    sa.delete(t).where(t.c.app_uid == damaged, t.c.sequence_id == 11)
                )
            with caplog.at_level("WARNING", logger="burr_async.persistence"):
                assert await persister.prune_all(keep_last=2) == 13
            assert "Not pruning an app" in caplog.text and damaged in caplog.text
            assert len(await rows(persister, damaged)) == 14
            history = await persister.history("u", healthy)
            assert [encoded(step.state) for step in history] == [encoded(s) for s in saved[-2:]]
        caplog.clear()
        with caplog.at_level("WARNING", logger="burr_async.persistence"):
            await migrate.downgrade(engine, "0002_0001", table_name=name, schema=db.schema)
        assert "Cannot rebuild" in caplog.text and damaged in caplog.text  # left as it was
        async with db.persister(engine, table_name=name) as persister:
            assert [delta for _, delta, _ in await rows(persister, healthy)] == [False, False]
            assert sum(delta for _, delta, _ in await rows(persister, damaged)) > 0
    finally:
        await migrate.downgrade(engine, "base", table_name=name, schema=db.schema)
        await engine.dispose()


async def test_snapshot_storage_and_other_serdes_store_full_states(db: Database) -> None:
    class Plain:
        """A serde that is not an OrjsonSerde: its encoding is its own business."""

        def dumps(self, values: Any) -> bytes:
            return orjson.dumps(dict(values))

        def loads(self, data: bytes | str) -> dict[str, Any]:
            loaded: dict[str, Any] = orjson.loads(data)
            return loaded

    for options in ({"storage": "snapshot"}, {"serde": Plain()}, {"snapshot_every": 1}):
        async with db.persister(**options) as persister:
            app_id = new_id()
            saved = await chat(persister, app_id, 4)
            assert [delta for _, delta, _ in await rows(persister, app_id)] == [False] * 4
            loaded = await persister.load("u", app_id)
            assert loaded is not None and loaded.state == saved[-1]


async def test_bad_storage_options_are_refused(db: Database) -> None:
    from burr_async import ConfigurationError

    for options in ({"storage": "zip"}, {"snapshot_every": 0}, {"snapshot_every": 2.5}):
        with pytest.raises(ConfigurationError):
            db.persister(**options)


async def test_old_releases_refuse_delta_rows_and_the_revision_that_allows_them(
    persister: SQLAlchemyPersister,
) -> None:
    """What every earlier release does with a delta row: its serde refuses any stored state
    that is not a JSON object. And the release whose head is 0001 finds revision 0003 ahead of
    it, so it refuses the table before reading a row."""
    app_id = new_id()
    await chat(persister, app_id, 3)
    _, delta, text = (await rows(persister, app_id))[1]
    assert delta
    with pytest.raises(SerializationError, match="must be a JSON object"):
        OrjsonSerde().loads(text)
    old = {"head": "0001", "known": ("0001",), "runs_from": "0001"}
    assert schema_status("0003", **old) == "ahead"  # type: ignore[arg-type]


@pytest.mark.parametrize("upgrade", ["alembic upgrade head", "persister.initialize()"])
async def test_a_0001_table_with_steps_upgrades_in_place(db: Database, upgrade: str) -> None:
    """Provision at 0001 and write steps as that release did; upgrade to head (with the
    Alembic command, or from the persister): they load, the app resumes (now with deltas);
    downgrade to 0002_0001: every row is a full state again, readable by the releases before
    deltas."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    engine = db.engine()
    old = sa.table(
        name,
        *(sa.column(c) for c in ("partition_key", "app_uid", "sequence_id", "position", "status")),
        sa.column("state", sa.JSON),
        sa.column("created_at"),
        schema=db.schema,
    )
    app_id = new_id()
    states = [
        {
            "chat": [f"m{i}" for i in range(n + 1)],
            "when": {"__burr_async__": "date", "value": "2026-12-02"},
        }
        for n in range(3)
    ]
    try:
        await migrate.upgrade(engine, "0001", table_name=name, schema=db.schema)
        async with engine.begin() as conn:
            for seq, state in enumerate(states):
                await conn.execute(
                    sa.insert(old).values(
                        partition_key="u",
                        app_uid=app_id,
                        sequence_id=seq,
                        position="talk",
                        status="completed",
                        state=state,
                        created_at=dt.datetime.now(dt.UTC),
                    )
                )
        async with db.persister(engine, table_name=name) as persister:
            with pytest.raises(Exception, match="db upgrade"):
                await persister.load("u", app_id)
            if upgrade == "alembic upgrade head":
                await run_alembic(db, name, "upgrade", "head")
            else:
                await persister.initialize()
            assert await migrate.current(engine, table_name=name, schema=db.schema) == HEAD_REVISION
            application = await app(persister, app_id)
            assert application.state["chat"] == ["m0", "m1", "m2"]
            assert application.state["when"] == dt.date(2026, 12, 2)
            for i in range(3):
                await application.astep(inputs={"text": f"new{i}"})
            stored = await rows(persister, app_id)
            assert [delta for _, delta, _ in stored][:4] == [False] * 3 + [True]
            expected = [step.state for step in await persister.history("u", app_id)]
        await migrate.downgrade(engine, "0002_0001", table_name=name, schema=db.schema)
        async with db.persister(engine, table_name=name) as persister:
            stored = await rows(persister, app_id)
            assert [delta for _, delta, _ in stored] == [False] * 6
            assert [State(OrjsonSerde().loads(text)) for _, _, text in stored] == expected
            # at 0002_0001 this release runs, and writes full states only
            await persister.save("u", app_id, 6, "talk", expected[-1], "completed")
            assert (await rows(persister, app_id))[-1][1] is False
            await persister.initialize()
            assert await migrate.current(engine, table_name=name, schema=db.schema) == HEAD_REVISION
    finally:
        await migrate.downgrade(engine, "base", table_name=name, schema=db.schema)
        await engine.dispose()


async def test_the_documented_sql_rebuilds_the_latest_state_on_postgres(
    postgres_db: Database,
) -> None:
    """The recursive query of docs/persistence/index.md (Postgres's JSONB), as printed."""
    from pathlib import Path

    db = postgres_db
    page = (Path(__file__).parents[2] / "docs" / "persistence" / "index.md").read_text()
    sql = page.split("```sql\n", 1)[1].split("```", 1)[0]
    app_id = new_id()
    async with db.persister(snapshot_every=10) as persister:
        states = [State({"chat": [], "draft": "x", "turn": 0, "profile": PROFILE})]
        for seq in range(15):
            state = states[-1].append(chat={"n": seq}).increment(turn=1)
            if seq >= 11:  # a window of the last 8 messages from here: trim and append
                state = state.update(chat=[*states[-1]["chat"][-7:], {"n": seq}])
            if seq == 12:
                state = state.wipe(delete=["draft"])
            states.append(state)
            await persister.save("alice", app_id, seq, "talk", state, "completed")
        table = f"{db.schema}.burr_state" if db.schema else "burr_state"
        query = sql.replace("burr_state", table).replace("'chat-1'", f"'{app_id}'")
        async with persister.engine.connect() as conn:
            found = (await conn.execute(sa.text(query))).scalar_one()
        assert State(found) == states[-1]
        stored = await rows(persister, app_id)
        assert stored[-1][1] is True and '"trim"' in stored[-1][2]
