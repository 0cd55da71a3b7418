"""The write path's query plans: the predecessor check of an INSERT is one probe of the primary
key, on a table that has no statistics yet as on one that has.

On Postgres the persister's INSERTs are prepared statements, which the server runs on a generic
plan (one made without the parameters' values) after five executions, and keeps. A plan that
reaches the predecessor through another index, or a scan, costs every later step of a growing
history more than the one before (issue #10, W1). The plans are read with ``EXPLAIN`` only:
nothing here is timed.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from burr_async import SQLAlchemyPersister, State
from burr_async.persistence import migrate
from tests.databases import Database

pytestmark = pytest.mark.anyio

# a step's parameters, as SQL literals, for EXECUTE: step 6 of the app written below
# a row's values in COLUMNS order: ..., parent_*, delta, spawn_*
_ONE_ARGS = (
    "'plans', 'app', 6, 'count', 'completed', '{}', NULL, now(), NULL, NULL, NULL, false, "
    "NULL, NULL, NULL"
)
_MANY_ARGS = (
    "ARRAY['plans', 'plans'], ARRAY['app', 'app'], ARRAY[6, 7], ARRAY['count', 'count'], "
    "ARRAY['completed', 'completed'], ARRAY['{}', '{}'], ARRAY[NULL, NULL]::text[], "
    "ARRAY[now(), now()], ARRAY[NULL, NULL]::text[], ARRAY[NULL, NULL]::text[], "
    "ARRAY[NULL, NULL]::integer[], ARRAY[false, false], ARRAY[NULL, NULL]::text[], "
    "ARRAY[NULL, NULL]::text[], ARRAY[NULL, NULL]::integer[]"
)


@pytest.fixture(params=["fresh", "analyzed"])
async def table(request: pytest.FixtureRequest, db: Database) -> AsyncIterator[SQLAlchemyPersister]:
    """A persister on a table of its own holding one app's first six steps: ``fresh``, never
    analyzed (as when the first steps of a new table are written), or ``analyzed`` after
    three apps of 200 steps each."""
    name = f"plans_{uuid.uuid4().hex[:10]}"
    engine = db.engine()
    await migrate.upgrade(engine, table_name=name, schema=db.schema)
    persister = SQLAlchemyPersister(engine, table_name=name, schema=db.schema)
    try:
        apps = {"app": 6}
        if request.param == "analyzed":
            apps |= {f"other{i}": 200 for i in range(3)}
        for app_id, count in apps.items():
            for seq in range(count):
                await persister.save("plans", app_id, seq, "count", State({"n": seq}), "completed")
        if request.param == "analyzed":
            async with engine.begin() as conn:
                await conn.exec_driver_sql(f"ANALYZE {persister._writer.dialect.table_sql}")
        yield persister
    finally:
        await persister.aclose()
        async with engine.begin() as conn:
            await conn.execute(sa.schema.DropTable(persister.table, if_exists=True))
            await conn.execute(
                sa.schema.DropTable(
                    sa.Table(f"{name}_alembic_version", sa.MetaData(), schema=db.schema),
                    if_exists=True,
                )
            )
        await engine.dispose()


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a Postgres JSON plan, depth first."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


async def _generic_plan(persister: SQLAlchemyPersister, sql: str, args: str) -> dict[str, Any]:
    """The generic plan Postgres makes for the prepared statement ``sql`` (as JSON)."""
    async with persister.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.execute("SET plan_cache_mode = force_generic_plan")
        try:
            await driver.execute(f"PREPARE burr_plan_probe AS {sql}")
            found = await driver.fetchval(f"EXPLAIN (FORMAT JSON) EXECUTE burr_plan_probe({args})")
            await driver.execute("DEALLOCATE burr_plan_probe")
        finally:
            await driver.execute("RESET plan_cache_mode")
    # SQLAlchemy's asyncpg set-up decodes json itself; a bare connection returns text
    document = json.loads(found) if isinstance(found, str) else found
    plan: dict[str, Any] = document[0]["Plan"]
    return plan


@pytest.mark.parametrize("batch", [False, True], ids=["one", "batch"])
async def test_the_predecessor_check_probes_the_primary_key(
    table: SQLAlchemyPersister, db: Database, batch: bool
) -> None:
    dialect: Any = table._writer.dialect
    pk_index = f"pk_{table.table.name}"
    if db.backend == "postgres":
        sql, args = (dialect._many_sql, _MANY_ARGS) if batch else (dialect._one_sql, _ONE_ARGS)
        plan = await _generic_plan(table, sql, args)
        nodes = list(_nodes(plan))
        assert not [n for n in nodes if n["Node Type"] == "Seq Scan"], json.dumps(plan)
        lookups = [n for n in nodes if n.get("Alias") == "prev"]
        assert len(lookups) == 1, json.dumps(plan)
        (lookup,) = lookups
        # every key column bounds the index scan: no row of another app or step is read
        assert lookup.get("Index Name") == pk_index, json.dumps(lookup)
        cond = lookup.get("Index Cond", "")
        assert all(c in cond for c in ("partition_key", "app_uid", "sequence_id")), cond
        assert "Filter" not in lookup, json.dumps(lookup)
    else:
        sql = dialect._insert_sql(3 if batch else 1)
        async with table.engine.connect() as conn:
            found = await conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {sql}", (None,) * sql.count("?")
            )
            details = [str(row[-1]) for row in found]
        probes = [d for d in details if " prev " in f"{d} "]
        assert len(probes) == 1, details
        (probe,) = probes
        assert probe.startswith("SEARCH prev USING COVERING INDEX sqlite_autoindex_"), details
        assert "(partition_key=? AND app_uid=? AND sequence_id" in probe, details
        assert not [d for d in details if "TEMP B-TREE" in d], details


async def test_a_step_after_a_gap_is_still_refused(table: SQLAlchemyPersister) -> None:
    """The restated check keeps its meaning: step 7 of an app whose last step is 5 is not
    written, while step 6 is."""
    dialect: Any = table._writer.dialect
    async with table.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await dialect.before_write(conn, driver)

        def row(seq: int) -> tuple[Any, ...]:
            return (
                "plans", "app", seq, "count", "completed", '{"n": 0}', None,
                dt.datetime.now(dt.UTC), None, None, None, False, None, None, None,
            )  # fmt: skip

        assert await dialect.insert_one(driver, row(7)) is False
        assert await dialect.insert_many(driver, [row(7), row(8)]) == set()
        assert await dialect.insert_one(driver, row(6)) is True
        assert await dialect.insert_many(driver, [row(7), row(9)]) == {("plans", "app", 7)}
