"""Migrations: up and down on both backends, head == models, custom tables, the CLI."""

from __future__ import annotations

import sys
import uuid
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from burr_async import SchemaOutOfDateError, SQLAlchemyPersister, State
from burr_async.persistence import migrate
from burr_async.persistence.models import HEAD_REVISION, build_table
from tests.databases import REPO, Database, alembic_command, alembic_env, run_alembic

pytestmark = pytest.mark.anyio


def table_name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def test_head_revision_matches_the_scripts() -> None:
    assert migrate.head_revision() == HEAD_REVISION


async def test_up_down_up_on_a_custom_table(db: Database) -> None:
    name = table_name()
    engine = db.engine()
    try:
        assert await migrate.current(engine, table_name=name, schema=db.schema) is None
        await migrate.upgrade(engine, table_name=name, schema=db.schema)
        assert await migrate.current(engine, table_name=name, schema=db.schema) == HEAD_REVISION
        async with db.persister(engine, table_name=name) as persister:
            await persister.save("p", "a", 0, "x", State({"k": 1}), "completed")
            assert await persister.load("p", "a") is not None

        await migrate.downgrade(engine, "base", table_name=name, schema=db.schema)
        assert await migrate.current(engine, table_name=name, schema=db.schema) is None
        assert name not in await _tables(engine, db.schema)
        async with db.persister(engine, table_name=name) as persister:
            with pytest.raises(SchemaOutOfDateError):
                await persister.load("p", "a")

        await migrate.upgrade(engine, table_name=name, schema=db.schema)
        async with db.persister(engine, table_name=name) as persister:
            assert await persister.load("p", "a") is None  # a fresh table
    finally:
        await migrate.downgrade(engine, "base", table_name=name, schema=db.schema)
        await engine.dispose()


async def test_migrated_schema_equals_the_models(db: Database) -> None:
    engine = db.engine()
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(
                        sync,
                        opts={
                            "include_schemas": db.schema is not None,
                            # other test sessions' schemas may exist at the same time
                            "include_name": lambda name, kind, _parents: (
                                kind != "schema" or name == db.schema
                            ),
                        },
                    ),
                    build_table(schema=db.schema).metadata,
                )
            )
        relevant = [d for d in diff if "alembic_version" not in str(d)]
        assert relevant == []
    finally:
        await engine.dispose()


async def test_version_table_is_separate_from_the_hosts(db: Database) -> None:
    engine = db.engine()
    try:
        tables = await _tables(engine, db.schema)
        assert "burr_state_alembic_version" in tables
        assert "alembic_version" not in tables
    finally:
        await engine.dispose()


async def test_persister_initialize_provisions_its_table(db: Database) -> None:
    name = table_name()
    async with db.persister(table_name=name) as persister:
        assert not await persister.is_initialized()
        await persister.initialize()
        await persister.initialize()  # idempotent
        assert await persister.is_initialized()
        await persister.save(None, "a", 0, "x", State({}), "completed")
        await migrate.downgrade(persister.engine, "base", table_name=name, schema=db.schema)


async def test_alembic_command_line_provisions_a_table(db: Database) -> None:
    name = table_name()
    await run_alembic(db, name, "upgrade", "head")
    assert HEAD_REVISION in await run_alembic(db, name, "current")
    await run_alembic(db, name, "downgrade", "base")


async def test_alembic_rejects_a_hostile_table_name(sqlite_db: Database) -> None:
    command = [
        sys.executable,
        "-m",
        "alembic",
        "-x",
        f"url={sqlite_db.url}",
        "-x",
        "table_name=x;drop table burr_state",
        "upgrade",
        "head",
    ]
    with anyio.fail_after(120):
        done = await anyio.run_process(command, cwd=REPO, check=False)
    assert done.returncode != 0
    assert "Invalid table name" in done.stderr.decode()


async def _tables(engine: sa.ext.asyncio.AsyncEngine, schema: str | None) -> set[str]:
    async with engine.connect() as conn:
        return set(
            await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names(schema=schema))
        )


async def test_session_table_is_initialized(db: Database) -> None:
    persister = SQLAlchemyPersister.from_url(db.url, schema=db.schema)
    async with persister:
        assert await persister.is_initialized()


async def test_constraint_names_follow_the_models(db: Database) -> None:
    table = build_table(schema=db.schema)
    engine = db.engine()
    try:
        async with engine.connect() as conn:

            def names(sync: sa.Connection) -> tuple[Any, Any, Any]:
                inspector = sa.inspect(sync)
                return (
                    inspector.get_pk_constraint("burr_state", schema=db.schema)["name"],
                    {c["name"] for c in inspector.get_check_constraints("burr_state", db.schema)},
                    {i["name"] for i in inspector.get_indexes("burr_state", schema=db.schema)},
                )

            pk, checks, indexes = await conn.run_sync(names)
    finally:
        await engine.dispose()
    model_checks = {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}
    assert checks == model_checks == {"ck_burr_state_status"}
    assert indexes == {i.name for i in table.indexes}
    if db.backend == "postgres":  # SQLite does not keep primary key names
        assert pk == table.primary_key.name == "pk_burr_state"


async def test_concurrent_initialize_in_one_process(db: Database) -> None:
    name = table_name()
    persisters = [db.persister(table_name=name) for _ in range(3)]
    try:
        async with anyio.create_task_group() as tg:
            for persister in persisters:
                tg.start_soon(persister.initialize)
        for persister in persisters:
            assert await persister.is_initialized()
        await persisters[0].save("p", "a", 0, "x", State({}), "completed")
    finally:
        await migrate.downgrade(persisters[0].engine, "base", table_name=name, schema=db.schema)
        for persister in persisters:
            await persister.aclose()


async def test_workers_provisioning_at_once_all_succeed(postgres_db: Database) -> None:
    name = table_name()
    args = alembic_command(postgres_db, name)
    env = alembic_env()
    codes: list[int] = []

    async def worker() -> None:
        done = await anyio.run_process([*args, "upgrade", "head"], cwd=REPO, env=env, check=False)
        codes.append(done.returncode)
        assert done.returncode == 0, done.stderr.decode()

    try:
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(worker)
        assert codes == [0, 0, 0]
    finally:
        await anyio.run_process([*args, "downgrade", "base"], cwd=REPO, env=env)
