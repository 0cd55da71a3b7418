"""SQLAlchemy Core, written the obvious way: ``async with engine.begin() as conn:
await conn.execute(table.insert(), row)`` per step (BEGIN, INSERT, COMMIT).

Same table (burr_async's migrations, another name) and the same engine setup as burr_async
(``create_engine``: SQLite WAL and the run's ``synchronous``; Postgres pool of 10). The state
dict goes to the JSON column as is; the engine encodes it with orjson (``json_serializer``), so
encoding costs the same as everywhere else.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
import sqlalchemy as sa

from benchmarks import chat
from benchmarks.contenders.base import ChatApp, Contender, Options, sqlite_pragmas
from benchmarks.contenders.provision import engine_url
from benchmarks.contenders.raw import PlainChat
from benchmarks.targets import Target
from burr_async.persistence import create_engine, migrate
from burr_async.persistence.models import build_table

__all__ = ["create"]

TABLE = "core_steps"


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


class CoreContender(Contender):
    key = "core"
    backends = frozenset({"sqlite", "postgres"})

    async def open(self) -> None:
        kwargs: dict[str, Any] = {"json_serializer": _dumps, "json_deserializer": orjson.loads}
        schema: str | None = None
        sqlite_path = None
        if self.backend == "postgres":
            kwargs |= {"pool_size": self.target.pg.pool_size, "max_overflow": 0}
            schema = self.target.pg.schema
        else:
            sqlite_path = self.target.sqlite_path(self.key)
        self.engine = create_engine(
            engine_url(self.target, sqlite_path),
            sqlite_synchronous=self.target.sqlite_synchronous,
            **kwargs,
        )
        await migrate.upgrade(self.engine, table_name=TABLE, schema=schema)
        self.table = build_table(TABLE, schema)
        self.insert = self.table.insert()
        t = self.table
        self.select = sa.select(t.c.sequence_id, t.c.position, t.c.status, t.c.state)

    async def aclose(self) -> None:
        await self.engine.dispose()

    async def durability(self) -> str:
        async with self.engine.connect() as conn:
            if self.backend == "sqlite":
                journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
                sync = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
                return (
                    f"{sqlite_pragmas(journal, sync)}; engine.begin() per step on burr_async's "
                    "create_engine() (default pool: concurrent writers wait on SQLite's lock)"
                )
            setting = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar()
        return (
            f"synchronous_commit={setting}; engine.begin() per step (BEGIN, INSERT, COMMIT), "
            f"asyncpg, pool_size={self.target.pg.pool_size}"
        )

    async def _write(
        self, app_id: str, sequence_id: int, position: str, state: dict[str, Any]
    ) -> None:
        row = {
            "partition_key": chat.PARTITION_KEY,
            "app_uid": app_id,
            "sequence_id": sequence_id,
            "position": position,
            "status": "completed",
            "state": state,
            "created_at": dt.datetime.now(dt.UTC),
        }
        async with self.engine.begin() as conn:
            await conn.execute(self.insert, row)

    async def new_app(self, app_id: str, *, persist: bool, concurrent: bool) -> ChatApp:
        return PlainChat(app_id, self._write if persist else None)

    async def load_app(self, app_id: str) -> str:
        t = self.table
        query = (
            self.select.where(t.c.partition_key == chat.PARTITION_KEY, t.c.app_uid == app_id)
            .order_by(t.c.sequence_id.desc())
            .limit(1)
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).one()
        return str(row.state["question"])


def create(target: Target, options: Options) -> Contender:
    return CoreContender(target, options)
