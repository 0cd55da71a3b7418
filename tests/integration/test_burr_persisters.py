"""Burr's persister names, used as Burr code uses them: ``await X.from_values(...)`` or
``async with X.from_values(...)``, ``initialize``, ``is_initialized``, ``cleanup``; the
arguments Burr takes, mapped or refused by name; on SQLite and Postgres through the ``db``
fixture (each test on its own table)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa

import burr_async
import burr_async.persistence
import burr_async.persistence.sqlalchemy
from burr_async import (
    ApplicationBuilder,
    AsyncBaseStatePersister,
    AsyncDevNullPersister,
    AsyncInMemoryPersister,
    AsyncPostgreSQLPersister,
    AsyncSQLitePersister,
    ConfigurationError,
    InMemoryPersister,
    InvalidIdentifierError,
    PersistenceError,
    PostgreSQLPersister,
    SQLAlchemyPersister,
    SQLitePersister,
    State,
    action,
)
from burr_async.persistence import burr_names
from tests.databases import Database

pytestmark = pytest.mark.anyio


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@action(reads=["n"], writes=["n"])
async def count(state: State) -> State:
    return state.update(n=state["n"] + 1)


async def counting_app(persister: Any, app_id: str, partition_key: str | None = None) -> Any:
    """A Burr-style application on ``persister``: resumed from it, saving every step to it."""
    return await (
        ApplicationBuilder()
        .with_actions(count=count)
        .with_transitions(("count", "count"))
        .initialize_from(
            persister,
            resume_at_next_action=True,
            default_state={"n": 0},
            default_entrypoint="count",
        )
        .with_state_persister(persister)
        .with_identifiers(app_id=app_id, partition_key=partition_key)
        .abuild()
    )


def postgres_values(db: Database) -> dict[str, Any]:
    url = sa.make_url(db.url)
    return {
        "db_name": url.database or "test",
        "user": url.username or "postgres",
        "password": url.password,
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
    }


def opening(db: Database, table: str, tmp_path: Path) -> burr_names.Opening[Any]:
    """Burr's async persister of the backend, as Burr code creates it (not yet awaited)."""
    if db.backend == "sqlite":
        return AsyncSQLitePersister.from_values(str(tmp_path / "burr.db"), table_name=table)
    return AsyncPostgreSQLPersister.from_values(
        **postgres_values(db), table_name=table, schema=db.schema
    )


@pytest.fixture
async def table(db: Database) -> AsyncIterator[str]:
    """A fresh table name; the table (and its version table) is dropped afterwards."""
    name = unique("burrnames")
    yield name
    engine = db.engine()
    prefix = f"{db.schema}." if db.schema else ""
    try:
        async with engine.begin() as conn:
            for dropped in (name, f"{name}_alembic_version"):
                await conn.execute(sa.text(f"DROP TABLE IF EXISTS {prefix}{dropped}"))
    finally:
        await engine.dispose()


# -- the names -----------------------------------------------------------------------------------
def test_the_names_are_importable_from_both_packages() -> None:
    for name in (
        "AsyncSQLitePersister",
        "AsyncPostgreSQLPersister",
        "AsyncInMemoryPersister",
        "AsyncDevNullPersister",
        "SQLitePersister",
        "PostgreSQLPersister",
    ):
        assert name in burr_async.__all__
        assert name in burr_async.persistence.__all__
        assert getattr(burr_async, name) is getattr(burr_async.persistence, name)
    assert AsyncInMemoryPersister is InMemoryPersister
    for cls in (AsyncSQLitePersister, AsyncPostgreSQLPersister, SQLitePersister):
        assert issubclass(cls, SQLAlchemyPersister)
    # where they were before the Burr names had their own module
    assert burr_async.persistence.sqlalchemy.SQLitePersister is SQLitePersister
    assert burr_async.persistence.sqlalchemy.PostgreSQLPersister is PostgreSQLPersister
    from burr_async.persistence.sqlalchemy import SQLitePersister as Again

    assert Again is SQLitePersister


# -- AsyncSQLitePersister / AsyncPostgreSQLPersister, as Burr uses them ---------------------------
async def test_await_from_values_initialize_save_load_cleanup(
    db: Database, table: str, tmp_path: Path
) -> None:
    persister = await opening(db, table, tmp_path)
    assert isinstance(persister, SQLAlchemyPersister)
    assert not await persister.is_initialized()
    await persister.initialize()
    assert await persister.is_initialized()
    await persister.save("p", "a", 0, "count", State({"n": 1}), "completed")
    await persister.save(None, "b", 0, "count", State({"n": 2}), "completed")
    loaded = await persister.load("p", "a")
    assert loaded is not None
    assert (loaded["sequence_id"], loaded["position"], loaded["state"]["n"]) == (0, "count", 1)
    assert await persister.list_app_ids("p") == ["a"]
    assert await persister.list_app_ids(None) == ["b"]
    await persister.cleanup()
    assert persister.closed
    with pytest.raises(PersistenceError, match="closed"):
        await persister.load("p", "a")


async def test_async_with_from_values_closes_on_exit(
    db: Database, table: str, tmp_path: Path
) -> None:
    async with opening(db, table, tmp_path) as persister:
        await persister.initialize()
        app = await counting_app(persister, "chat", "alice")
        await app.astep()
        await app.astep()
    assert persister.closed
    async with opening(db, table, tmp_path) as again:  # the steps outlive the persister
        resumed = await counting_app(again, "chat", "alice")
        assert (resumed.sequence_id, resumed.state["n"]) == (1, 2)
        await resumed.astep()
        assert (resumed.sequence_id, resumed.state["n"]) == (2, 3)


async def test_from_values_result_is_used_once(db: Database, table: str, tmp_path: Path) -> None:
    pending = opening(db, table, tmp_path)
    persister = await pending
    try:
        with pytest.raises(RuntimeError, match="already"):
            await pending
    finally:
        await persister.cleanup()


async def test_from_config_is_from_values(db: Database, table: str, tmp_path: Path) -> None:
    if db.backend == "sqlite":
        config: dict[str, Any] = {"db_path": str(tmp_path / "c.db"), "table_name": table}
        persister: SQLAlchemyPersister = await AsyncSQLitePersister.from_config(config)
    else:
        config = {**postgres_values(db), "table_name": table, "schema": db.schema}
        persister = await AsyncPostgreSQLPersister.from_config(config)
    async with persister:
        await persister.initialize()
        assert persister.table.name == table


@pytest.mark.parametrize("serde_kwargs", [None, {}])
async def test_empty_serde_kwargs_are_accepted(
    tmp_path: Path, serde_kwargs: dict[str, Any] | None
) -> None:
    persister = await AsyncSQLitePersister.from_values(
        str(tmp_path / "s.db"), "steps", serde_kwargs, None
    )
    await persister.cleanup()


def test_serde_kwargs_are_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"serde_kwargs=\{'pickle_kwargs'.*serde=Orjson"):
        AsyncSQLitePersister.from_values(
            str(tmp_path / "s.db"), serde_kwargs={"pickle_kwargs": {"protocol": 4}}
        )
    with pytest.raises(ConfigurationError, match="serde_kwargs"):
        SQLitePersister(str(tmp_path / "s.db"), "t", {"x": 1})
    assert not (tmp_path / "s.db").exists()


# -- connect_kwargs (SQLite) ---------------------------------------------------------------------
async def busy_timeout(persister: SQLAlchemyPersister) -> int:
    async with persister.engine.connect() as conn:
        return int((await conn.execute(sa.text("PRAGMA busy_timeout"))).scalar_one())


async def test_connect_kwargs_timeout_is_the_busy_timeout(tmp_path: Path) -> None:
    async with AsyncSQLitePersister.from_values(
        str(tmp_path / "t.db"),
        connect_kwargs={"timeout": 2.5, "check_same_thread": False, "cached_statements": 64},
    ) as persister:
        assert await busy_timeout(persister) == 2500
        await persister.initialize()
        await persister.save(None, "a", 0, "x", State({"n": 1}), "completed")
    async with AsyncSQLitePersister.from_values(str(tmp_path / "t.db")) as default:
        assert await busy_timeout(default) == 30000  # the persister's own default
    async with SQLitePersister(str(tmp_path / "t.db"), "burr_state", None, {"timeout": 1}) as sync:
        assert await busy_timeout(sync) == 1000
        assert (await sync.load(None, "a")) is not None


@pytest.mark.parametrize(
    ("connect_kwargs", "fragment"),
    [
        ({"isolation_level": None}, "'isolation_level'] is not supported: the persister runs"),
        ({"detect_types": 1}, "'detect_types'] is not supported"),
        ({"factory": object}, "'factory'] is not supported"),
        ({"uri": True}, "'uri'] is not supported: give the database as a URL"),
        ({"check_same_thread": True}, "only check_same_thread=False"),
        ({"timeout": "soon"}, "number of seconds"),
        ({"colour": "blue"}, "'colour'] is not an argument of sqlite3.connect"),
    ],
)
def test_connect_kwargs_without_meaning_here_are_refused_by_name(
    tmp_path: Path, connect_kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigurationError, match="connect_kwargs") as raised:
        AsyncSQLitePersister.from_values(str(tmp_path / "r.db"), connect_kwargs=connect_kwargs)
    assert fragment in str(raised.value)
    with pytest.raises(ConfigurationError, match="connect_kwargs"):
        SQLitePersister.from_values(str(tmp_path / "r.db"), connect_kwargs=connect_kwargs)


async def test_burrs_connection_arguments_are_refused(tmp_path: Path) -> None:
    async with aiosqlite.connect(tmp_path / "c.db") as connection:
        with pytest.raises(ConfigurationError, match=r"await AsyncSQLitePersister\.from_values"):
            AsyncSQLitePersister(connection)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="db_path must be the path"):
            AsyncSQLitePersister.from_values(connection)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="connection=object"):
        SQLitePersister(str(tmp_path / "c.db"), "t", None, None, object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="asyncpg connection or pool"):
        AsyncPostgreSQLPersister(object())  # type: ignore[arg-type]


async def test_sync_spelling_from_values_and_positional_arguments(tmp_path: Path) -> None:
    path = tmp_path / "sync.db"
    async with SQLitePersister.from_values(path, "steps") as persister:
        await persister.initialize()
        app = await counting_app(persister, "a")
        await app.astep()
    async with SQLitePersister(str(path), "steps", None, {"check_same_thread": False}) as again:
        loaded = await again.load(None, "a")
        assert loaded is not None and loaded.state["n"] == 1


# -- pool_kwargs (Postgres) ----------------------------------------------------------------------
async def test_pool_kwargs_map_onto_the_engine(postgres_db: Database) -> None:
    values = postgres_values(postgres_db)
    async with AsyncPostgreSQLPersister.from_values(
        **values,
        use_pool=True,
        schema=postgres_db.schema,
        max_size=4,
        min_size=1,
        max_queries=1000,
        max_inactive_connection_lifetime=120,
        command_timeout=30,
        server_settings={"application_name": "burr-names-test"},
    ) as persister:
        pool: Any = persister.engine.pool
        assert (pool.size(), pool._max_overflow, pool._recycle) == (4, 0, 120)
        async with persister.engine.connect() as conn:
            name = await conn.execute(sa.text("SELECT current_setting('application_name')"))
            assert name.scalar_one() == "burr-names-test"
        assert await persister.is_initialized()


@pytest.mark.parametrize("use_pool", [False, True])
async def test_either_use_pool_serves_concurrent_applications(
    postgres_db: Database, use_pool: bool
) -> None:
    import anyio

    async with AsyncPostgreSQLPersister.from_values(
        **postgres_values(postgres_db), use_pool=use_pool, schema=postgres_db.schema
    ) as persister:
        ids = [unique("pool") for _ in range(12)]

        async def run(app_id: str) -> None:
            app = await counting_app(persister, app_id, "pool")
            for _ in range(3):
                await app.astep()

        async with anyio.create_task_group() as group:
            for app_id in ids:
                group.start_soon(run, app_id)
        for app_id in ids:
            loaded = await persister.load("pool", app_id)
            assert loaded is not None and loaded.sequence_id == 2


@pytest.mark.parametrize(
    ("pool_kwargs", "fragment"),
    [
        ({"max_size": 2}, "max_size=2: the persister holds two connections"),
        ({"setup": print}, "'setup' is not supported: it runs on asyncpg's own pool"),
        ({"init": print}, "'init' is not supported"),
        ({"record_class": dict}, "'record_class' is not supported"),
        ({"connection_class": object}, "'connection_class' is not supported"),
        ({"colour": "blue"}, "'colour' is not an argument of asyncpg.create_pool"),
        ({"max_inactive_connection_lifetime": -1}, "number of seconds"),
    ],
)
def test_pool_kwargs_without_meaning_here_are_refused_by_name(
    pool_kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        AsyncPostgreSQLPersister.from_values(
            "test", "postgres", None, "127.0.0.1", 5432, "burr_state", True, **pool_kwargs
        )
    assert fragment in str(raised.value)


def test_from_values_keeps_burrs_parameter_order() -> None:
    import inspect

    burr_pg = inspect.signature(AsyncPostgreSQLPersister.from_values).parameters
    assert list(burr_pg)[:7] == [
        "db_name",
        "user",
        "password",
        "host",
        "port",
        "table_name",
        "use_pool",
    ]
    assert burr_pg["table_name"].default == "burr_state" and burr_pg["use_pool"].default is False
    lite = inspect.signature(AsyncSQLitePersister.from_values).parameters
    assert list(lite)[:4] == ["db_path", "table_name", "serde_kwargs", "connect_kwargs"]
    sync = inspect.signature(SQLitePersister).parameters
    assert list(sync)[:5] == [
        "db_path",
        "table_name",
        "serde_kwargs",
        "connect_kwargs",
        "connection",
    ]


# -- in memory and dev null ----------------------------------------------------------------------
async def test_async_in_memory_persister_as_burr_uses_it() -> None:
    persister = AsyncInMemoryPersister()
    await persister.initialize()
    assert await persister.is_initialized()
    app = await counting_app(persister, "a", "p")
    await app.astep()
    await app.astep()
    resumed = await counting_app(persister, "a", "p")
    assert (resumed.sequence_id, resumed.state["n"]) == (1, 2)
    await persister.cleanup()
    assert persister.closed


async def test_dev_null_saves_nothing_and_loads_none() -> None:
    persister = AsyncDevNullPersister()
    assert isinstance(persister, AsyncBaseStatePersister)
    await persister.initialize()
    assert await persister.is_initialized()
    app = await counting_app(persister, "a", "p")
    for _ in range(3):
        await app.astep()
    assert (app.sequence_id, app.state["n"]) == (2, 3)
    assert await persister.load("p", "a") is None
    assert await persister.load("p", "a", 1) is None
    assert await persister.list_app_ids("p") == []
    assert await persister.history("p", "a") == []
    resumed = await counting_app(persister, "a", "p")  # nothing stored: the defaults
    assert (resumed.sequence_id, resumed.state["n"]) == (None, 0)


async def test_dev_null_checks_ids_and_refuses_calls_once_closed() -> None:
    persister = AsyncDevNullPersister()
    with pytest.raises(InvalidIdentifierError):
        await persister.save(None, "", 0, "x", State(), "completed")
    with pytest.raises(InvalidIdentifierError):
        await persister.load("p\x00", "a")
    async with persister:
        pass
    for call in (
        persister.save(None, "a", 0, "x", State(), "completed"),
        persister.load(None, "a"),
        persister.list_app_ids(None),
        persister.history(None, "a"),
    ):
        with pytest.raises(PersistenceError, match="closed AsyncDevNullPersister"):
            await call


async def test_cleanup_is_aclose_on_every_persister() -> None:
    closed: list[str] = []

    class Custom(AsyncDevNullPersister):
        async def aclose(self) -> None:
            closed.append("aclose")
            await super().aclose()

    custom = Custom()
    await custom.cleanup()
    assert closed == ["aclose"]
    with pytest.raises(PersistenceError):
        await custom.load(None, "a")
