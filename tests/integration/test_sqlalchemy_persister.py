"""The SQLAlchemy persister's contract, on SQLite and Postgres."""

from __future__ import annotations

import datetime as dt
import shlex
import shutil
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import orjson
import pydantic
import pytest
import sqlalchemy as sa

from burr_async import (
    ConcurrentStepError,
    InvalidIdentifierError,
    OrjsonSerde,
    PersistenceError,
    PostgreSQLPersister,
    SchemaOutOfDateError,
    SerializationError,
    SQLAlchemyPersister,
    SQLitePersister,
    State,
)
from burr_async.persistence import ParentPointer, migrate
from burr_async.persistence.models import HEAD_REVISION
from tests.databases import Database

pytestmark = pytest.mark.anyio


class Profile(pydantic.BaseModel):
    name: str
    joined: dt.date
    tags: list[str]


def new_id() -> str:
    return str(uuid.uuid4())


async def test_save_then_load_latest_and_by_sequence(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    await persister.save("alice", app_id, 0, "first", State({"n": 0}), "completed")
    await persister.save("alice", app_id, 1, "second", State({"n": 1}), "completed")

    latest = await persister.load("alice", app_id)
    assert latest is not None
    assert (latest.sequence_id, latest.position, latest.state["n"]) == (1, "second", 1)
    assert latest.status == "completed" and latest.error is None
    assert latest.partition_key == "alice" and latest.app_id == app_id
    assert latest.created_at.tzinfo is not None
    assert abs(latest.created_at - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)
    assert latest["state"] == State({"n": 1})  # Burr's mapping-style access

    first = await persister.load("alice", app_id, sequence_id=0)
    assert first is not None and first.position == "first" and first.state == State({"n": 0})
    assert await persister.load("alice", app_id, sequence_id=7) is None
    assert await persister.load("bob", app_id) is None
    assert await persister.load("alice", new_id()) is None


async def test_none_partition_key_is_stored_as_empty(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    await persister.save(None, app_id, 0, "a", State({}), "completed")
    loaded = await persister.load(None, app_id)
    assert loaded is not None and loaded.partition_key is None
    assert await persister.load("", app_id) == loaded
    rows = await _raw_rows(persister, app_id)
    assert rows[0].partition_key == ""


async def test_taken_sequence_id_is_never_overwritten(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    await persister.save("p", app_id, 0, "a", State({"v": "first"}), "completed")
    with pytest.raises(ConcurrentStepError) as info:
        await persister.save("p", app_id, 0, "a", State({"v": "second"}), "completed")
    assert info.value.app_id == app_id and info.value.sequence_id == 0
    assert app_id in str(info.value) and "sequence_id=0" in str(info.value)
    loaded = await persister.load("p", app_id)
    assert loaded is not None and loaded.state["v"] == "first"


async def test_failed_step_keeps_error_text(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    await persister.save("p", app_id, 0, "boom", State({"x": 1}), "failed", error="ValueError: x")
    loaded = await persister.load("p", app_id)
    assert loaded is not None
    assert (loaded.status, loaded.error, loaded.position) == ("failed", "ValueError: x", "boom")


async def test_parent_pointer_round_trips(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    parent = ParentPointer("source-app", None, 3)
    await persister.save("p", app_id, 3, "a", State({}), "completed", parent=parent)
    loaded = await persister.load("p", app_id)
    assert loaded is not None and loaded.parent == parent


async def test_history_list_app_ids_and_list_apps(persister: SQLAlchemyPersister) -> None:
    partition = new_id()
    older, newer = new_id(), new_id()
    await persister.save(partition, older, 0, "a", State({"i": 0}), "completed")
    await persister.save(partition, newer, 0, "a", State({"i": 0}), "completed")
    await persister.save(partition, older, 1, "b", State({"i": 1}), "failed", error="E")
    await persister.save(partition, older, 2, "c", State({"i": 2}), "completed")

    assert await persister.list_app_ids(partition) == [older, newer]
    assert await persister.list_app_ids(new_id()) == []

    history = await persister.history(partition, older)
    assert [(h.sequence_id, h.position, h.status) for h in history] == [
        (0, "a", "completed"),
        (1, "b", "failed"),
        (2, "c", "completed"),
    ]
    assert [h.state["i"] for h in history] == [0, 1, 2]

    apps = await persister.list_apps(partition)
    assert [(a.app_id, a.sequence_id, a.position) for a in apps] == [
        (older, 2, "c"),
        (newer, 0, "a"),
    ]
    limited = await persister.list_apps(partition, limit=1)
    assert [a.app_id for a in limited] == [older]
    everywhere = await persister.list_apps(all_partitions=True, limit=10_000)
    assert {older, newer} <= {a.app_id for a in everywhere}


async def test_typed_values_round_trip_through_the_database(db: Database) -> None:
    app_id = new_id()
    values = {
        "when": dt.datetime(2026, 11, 25, 12, 30, 1, 5, tzinfo=dt.UTC),
        "naive": dt.datetime(2026, 1, 2, 3, 4, 5),
        "day": dt.date(2026, 2, 3),
        "at": dt.time(4, 5, 6),
        "price": Decimal("12.3400"),
        "blob": b"\x00\xffbytes",
        "tags": {"a", "b"},
        "frozen": frozenset({1, 2}),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "profile": Profile(name="Ada", joined=dt.date(2020, 1, 1), tags=["x"]),
        "nested": {"items": [Decimal("1.5"), {"at": dt.date(2026, 1, 1)}], "text": "héllo ☃"},
        "plain": [1, 2.5, None, True, "s"],
    }
    async with db.persister(serde=OrjsonSerde(models=[Profile])) as persister:
        await persister.save("p", app_id, 0, "a", State(values), "completed")
        loaded = await persister.load("p", app_id)
    assert loaded is not None
    assert loaded.state.get_all() == values
    assert type(loaded.state["profile"]) is Profile
    assert type(loaded.state["id"]) is uuid.UUID


async def test_unserializable_value_names_the_key_and_writes_nothing(
    persister: SQLAlchemyPersister,
) -> None:
    app_id = new_id()
    with pytest.raises(SerializationError) as info:
        await persister.save("p", app_id, 0, "a", State({"ok": 1, "bad": object()}), "completed")
    assert info.value.key == "bad" and "'bad'" in str(info.value)
    assert await persister.load("p", app_id) is None


@pytest.mark.parametrize(
    "name",
    ["burr_state; DROP TABLE x", 'burr"state', "1starts_with_digit", "", "a" * 41, "spaced name"],
)
async def test_hostile_table_names_are_rejected(db: Database, name: str) -> None:
    engine = db.engine()
    try:
        with pytest.raises(InvalidIdentifierError) as info:
            SQLAlchemyPersister(engine, table_name=name)
        assert repr(name) in str(info.value)
    finally:
        await engine.dispose()


async def test_hostile_schema_name_is_rejected(postgres_db: Database) -> None:
    engine = postgres_db.engine()
    try:
        with pytest.raises(InvalidIdentifierError):
            SQLAlchemyPersister(engine, schema="public; DROP SCHEMA public")
    finally:
        await engine.dispose()


async def test_missing_table_raises_schema_out_of_date_with_the_command(db: Database) -> None:
    name = f"t_{uuid.uuid4().hex[:10]}"
    async with db.persister(table_name=name) as persister:
        assert not await persister.is_initialized()
        with pytest.raises(SchemaOutOfDateError) as info:
            await persister.save("p", new_id(), 0, "a", State({}), "completed")
        message = str(info.value)
        assert name in message
        assert "not provisioned" in message
        with pytest.raises(SchemaOutOfDateError):
            await persister.load("p", "x")

        # the command the message names is the one that fixes it
        command = shlex.split(message.split("Run: ", 1)[1].split(" (or ", 1)[0])
        assert command[0] == "burr-async"
        script = shutil.which("burr-async", path=str(Path(sys.executable).parent))
        assert script is not None
        with anyio.fail_after(120):
            await anyio.run_process([script, *command[1:]])
        try:
            assert await persister.is_initialized()
        finally:
            await migrate.downgrade(persister.engine, "base", table_name=name, schema=db.schema)


async def test_borrowed_engine_is_not_disposed(db: Database) -> None:
    engine = db.engine()
    try:
        async with db.persister(engine) as persister:
            await persister.save("p", new_id(), 0, "a", State({}), "completed")
        async with engine.connect() as conn:  # still usable: the persister did not dispose it
            assert (await conn.execute(sa.text("SELECT 1"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_database_failure_is_a_persistence_error(db: Database) -> None:
    url = (
        "sqlite+aiosqlite:////nonexistent-dir/x.db"
        if db.backend == "sqlite"
        else "postgresql+asyncpg://postgres@127.0.0.1:1/test"
    )
    async with SQLAlchemyPersister.from_url(url) as persister:
        with pytest.raises(PersistenceError) as info:
            await persister.save("p", "app", 0, "a", State({}), "completed")
        assert "burr_state" in str(info.value)


async def _raw_rows(persister: SQLAlchemyPersister, app_id: str) -> list[sa.Row[object]]:
    async with persister.engine.connect() as conn:
        result = await conn.execute(
            sa.select(persister.table).where(persister.table.c.app_uid == app_id)
        )
        return list(result.all())


async def test_an_unknown_revision_is_out_of_date(db: Database) -> None:
    name = f"t_{uuid.uuid4().hex[:10]}"
    engine = db.engine()
    try:
        await migrate.upgrade(engine, table_name=name, schema=db.schema)
        versions = sa.table(f"{name}_alembic_version", sa.column("version_num"), schema=db.schema)
        async with engine.begin() as conn:
            await conn.execute(sa.update(versions).values(version_num="0000_older"))
        async with db.persister(engine, table_name=name) as persister:
            with pytest.raises(SchemaOutOfDateError, match="is at revision '0000_older'"):
                await persister.save("p", "a", 0, "x", State({}), "completed")
        async with engine.begin() as conn:
            await conn.execute(sa.update(versions).values(version_num=HEAD_REVISION))
    finally:
        await migrate.downgrade(engine, "base", table_name=name, schema=db.schema)
        await engine.dispose()


class _UpperSerde:
    """A custom serde: stores strings upper-cased, to prove it is the one used."""

    def dumps(self, values: Any) -> bytes:
        return orjson.dumps({k: v.upper() if isinstance(v, str) else v for k, v in values.items()})

    def loads(self, data: bytes | str) -> dict[str, Any]:
        return dict(orjson.loads(data))


async def test_a_custom_serde_is_used_both_ways(db: Database) -> None:
    async with db.persister(serde=_UpperSerde()) as persister:
        app_id = new_id()
        await persister.save("p", app_id, 0, "a", State({"word": "quiet"}), "completed")
        loaded = await persister.load("p", app_id)
        assert loaded is not None
        assert loaded.state["word"] == "QUIET"


async def test_sqlite_persister_is_burrs_constructor(tmp_path: Path) -> None:
    async with SQLitePersister(db_path=str(tmp_path / "burr.db"), table_name="steps") as persister:
        assert isinstance(persister, SQLAlchemyPersister)
        await persister.initialize()
        await persister.save("p", "a", 0, "x", State({"k": 1}), "completed")
        loaded = await persister.load("p", "a")
        assert loaded is not None
        assert loaded.state["k"] == 1
    assert (tmp_path / "burr.db").exists()


async def test_postgresql_persister_from_values(postgres_db: Database) -> None:
    url = sa.make_url(postgres_db.url)
    persister = PostgreSQLPersister.from_values(
        db_name=url.database or "test",
        user=url.username or "postgres",
        password=url.password,
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        schema=postgres_db.schema,
    )
    async with persister:
        assert persister.engine.dialect.name == "postgresql"
        assert await persister.is_initialized()
        app_id = new_id()
        await persister.save("p", app_id, 0, "x", State({"k": 2}), "completed")
        loaded = await persister.load("p", app_id)
        assert loaded is not None
        assert loaded.state["k"] == 2


def test_from_url_does_not_connect(tmp_path: Path) -> None:
    persister = SQLAlchemyPersister.from_url("postgresql://nobody@127.0.0.1:1/none")
    assert persister.engine.url.drivername == "postgresql+asyncpg"
    lite = SQLAlchemyPersister.from_url(f"sqlite:///{tmp_path}/lazy.db")
    assert lite.engine.url.drivername == "sqlite+aiosqlite"
    assert not (tmp_path / "lazy.db").exists()
