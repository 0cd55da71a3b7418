"""Edges of the SQLAlchemy persister: ids and strings every backend can store, SQLite paths and
versions, a database newer than the package, and closing while work is under way."""

from __future__ import annotations

import asyncio
import gc
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from burr_async import (
    ConfigurationError,
    InvalidIdentifierError,
    SchemaAheadError,
    SerializationError,
    SQLAlchemyPersister,
    SQLitePersister,
    State,
)
from burr_async.persistence import migrate
from burr_async.persistence.models import HEAD_REVISION
from tests.databases import Database

pytestmark = pytest.mark.anyio


def new_id() -> str:
    return str(uuid.uuid4())


@pytest.mark.parametrize(
    ("app_id", "partition_key"),
    [("a\x00b", "p"), ("x" * 10_000, "p"), ("a", "p\x00"), ("a", "k" * 10_000)],
    ids=["nul-app", "10kB-app", "nul-partition", "10kB-partition"],
)
async def test_ids_are_held_to_one_rule_on_every_backend(
    persister: SQLAlchemyPersister, app_id: str, partition_key: str
) -> None:
    with pytest.raises(InvalidIdentifierError) as info:
        await persister.save(partition_key, app_id, 0, "a", State({}), "completed")
    assert len(str(info.value)) < 300  # the id is quoted shortened
    with pytest.raises(InvalidIdentifierError):
        await persister.load(partition_key, app_id)
    with pytest.raises(InvalidIdentifierError):
        await persister.history(partition_key, app_id)


async def test_the_longest_ids_allowed_are_stored(persister: SQLAlchemyPersister) -> None:
    app_id, partition_key = "é" * 255, "😀" * 255  # multi-byte: the key index must still hold
    await persister.save(partition_key, app_id, 0, "a", State({"v": 1}), "completed")
    loaded = await persister.load(partition_key, app_id)
    assert loaded is not None and (loaded.app_id, loaded.partition_key) == (app_id, partition_key)


@pytest.mark.parametrize(
    "state",
    [{"text": "a\x00b"}, {"nested": {"list": ["ok", "bad\x00"]}}, {"keys": {"k\x00": 1}}],
    ids=["string", "nested", "dict-key"],
)
async def test_a_nul_in_the_state_is_refused_on_every_backend(
    persister: SQLAlchemyPersister, state: dict[str, Any]
) -> None:
    app_id = new_id()
    with pytest.raises(SerializationError) as info:
        await persister.save("p", app_id, 0, "a", State(state), "completed")
    assert info.value.key == next(iter(state))
    assert await persister.load("p", app_id) is None


async def test_text_that_merely_spells_an_escaped_nul_is_stored(
    persister: SQLAlchemyPersister,
) -> None:
    app_id, text = new_id(), "a backslash: \\u0000 is six characters"
    await persister.save("p", app_id, 0, "a", State({"text": text}), "completed")
    loaded = await persister.load("p", app_id)
    assert loaded is not None and loaded.state["text"] == text


async def test_an_error_text_with_a_nul_is_stored_escaped(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    await persister.save("p", app_id, 0, "a", State({}), "failed", error="ValueError: a\x00b")
    loaded = await persister.load("p", app_id)
    assert loaded is not None and loaded.error == "ValueError: a\\x00b"


@pytest.mark.parametrize("name", ["what?.db", "tag#1.db", "100%.db"])
async def test_a_sqlite_path_is_a_path_not_a_url(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    async with SQLitePersister(str(path)) as persister:
        await persister.initialize()
        await persister.save(None, "a", 0, "x", State({"v": 1}), "completed")
    assert path.is_file()
    async with SQLitePersister(str(path)) as again:
        loaded = await again.load(None, "a")
    assert loaded is not None and loaded.state["v"] == 1


def test_a_sqlite_without_returning_is_refused_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from burr_async.persistence import _sqlite

    with pytest.raises(ConfigurationError, match=r"SQLite 3\.31\.1.*3\.35\.0 or newer"):
        _sqlite.check_version((3, 31, 1))
    _sqlite.check_version((3, 35, 0))
    monkeypatch.setattr(_sqlite.check_version, "__defaults__", ((3, 34, 1),))  # as if linked
    with pytest.raises(ConfigurationError, match=r"3\.34\.1"):
        SQLAlchemyPersister.from_url("sqlite://")


async def test_a_database_migrated_by_a_newer_version_says_to_upgrade_the_package(
    db: Database,
) -> None:
    name = f"t_{uuid.uuid4().hex[:10]}"
    engine = db.engine()
    versions = sa.table(f"{name}_alembic_version", sa.column("version_num"), schema=db.schema)
    try:
        await migrate.upgrade(engine, table_name=name, schema=db.schema)
        async with engine.begin() as conn:
            await conn.execute(sa.update(versions).values(version_num="9999_future"))
        async with db.persister(engine, table_name=name) as persister:
            with pytest.raises(SchemaAheadError, match="newer burr_async") as info:
                await persister.save("p", "a", 0, "x", State({}), "completed")
            assert "db upgrade from this version" in str(info.value)  # is not what to run
            with pytest.raises(SchemaAheadError):
                await persister.initialize()  # refuses, changing nothing
            assert not await persister.is_initialized()
        async with engine.connect() as conn:
            assert (await conn.execute(sa.select(versions.c.version_num))).scalar() == (
                "9999_future"
            )
        async with engine.begin() as conn:
            await conn.execute(sa.update(versions).values(version_num=HEAD_REVISION))
    finally:
        await migrate.downgrade(engine, "base", table_name=name, schema=db.schema)
        await engine.dispose()


async def test_aclose_waits_for_a_load_under_way(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    persister = db.persister()
    app_id = new_id()
    await persister.save("p", app_id, 0, "a", State({"v": 1}), "completed")
    dialect = persister._writer.dialect
    original = dialect.fetch_step
    started = asyncio.Event()

    async def slow(*args: Any) -> Any:
        started.set()
        await asyncio.sleep(0.05)
        return await original(*args)

    monkeypatch.setattr(dialect, "fetch_step", slow)
    load = asyncio.ensure_future(persister.load("p", app_id))
    await started.wait()
    await asyncio.gather(persister.aclose(), persister.aclose())  # two at once: both return
    loaded = await load
    assert loaded is not None and loaded.state["v"] == 1
    assert persister.engine.pool.checkedout() == 0  # the engine was disposed, nothing held
    # a connection that missed the disposal (returned to the old pool after it) warns when
    # collected: here, rather than in whichever later test the collector happens to run
    del persister, load
    gc.collect()


@pytest.mark.parametrize(
    ("revision", "runs"),
    [("0006_0005", True), ("0007_0001", True), ("0006", False), ("0006_0006", False)],
)
async def test_old_code_runs_on_a_newer_schema_only_when_the_migration_says_it_can(
    db: Database, revision: str, runs: bool
) -> None:
    """The rolling-deploy rule: while old and new pods share a database, the old ones keep
    working on a migration whose id declares it compatible (``NNNN_MMMM``), and refuse any
    other newer revision with SchemaAheadError; initialize() never touches a newer schema."""
    from click.testing import CliRunner

    from burr_async.cli import cli

    name = f"t_{uuid.uuid4().hex[:10]}"
    engine = db.engine()
    versions = sa.table(f"{name}_alembic_version", sa.column("version_num"), schema=db.schema)
    try:
        await migrate.upgrade(engine, table_name=name, schema=db.schema)
        async with engine.begin() as conn:
            await conn.execute(sa.update(versions).values(version_num=revision))
        async with db.persister(engine, table_name=name) as persister:
            if runs:
                await persister.initialize()  # a no-op on a compatible newer schema
                await persister.save("p", "a", 0, "x", State({"v": 1}), "completed")
                loaded = await persister.load("p", "a")
                assert loaded is not None and loaded.state["v"] == 1
            else:
                with pytest.raises(SchemaAheadError):
                    await persister.save("p", "a", 0, "x", State({}), "completed")
                with pytest.raises(SchemaAheadError):
                    await persister.initialize()
        args = ["--url", db.url, "--table-name", name]
        if db.schema:
            args += ["--schema", db.schema]
        checked = await anyio_run_in_thread(lambda: CliRunner().invoke(cli, [*args, "db", "check"]))
        assert checked.exit_code == (0 if runs else 1), checked.output
        async with engine.connect() as conn:
            assert (await conn.execute(sa.select(versions.c.version_num))).scalar() == revision
        async with engine.begin() as conn:
            await conn.execute(sa.update(versions).values(version_num=HEAD_REVISION))
    finally:
        await migrate.downgrade(engine, "base", table_name=name, schema=db.schema)
        await engine.dispose()


async def anyio_run_in_thread(fn: Any) -> Any:
    """The CLI runs its own event loop: call it from a worker thread."""
    import anyio.to_thread

    return await anyio.to_thread.run_sync(fn)
