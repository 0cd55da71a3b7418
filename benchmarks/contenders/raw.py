"""The floor: the raw drivers, no framework.

Every step builds the same new state as the frameworks' actions, encodes it once with orjson and
sends one INSERT, autocommit, into a table of exactly burr_async's shape (provisioned by its
migrations, under another name). aiosqlite uses one connection with the same pragmas as
burr_async's engine; asyncpg uses one connection per app in W1/W3 and a pool of 10 (no reset
query on release) in W2. For W0 (no database) it is a plain Python loop doing the same state
transitions: the cost of the actions themselves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from benchmarks import chat
from benchmarks.contenders.base import ChatApp, Contender, Options, sqlite_pragmas
from benchmarks.contenders.provision import provision_burr_async_table
from benchmarks.targets import Target

__all__ = ["create"]

TABLE = "raw_steps"

Write = Callable[[str, int, str, dict[str, Any]], Awaitable[None]]


class PlainChat:
    """The chat loop on plain dicts; ``write(app_id, sequence_id, position, state)`` stores a
    step before the app advances (None: nothing is stored)."""

    __slots__ = ("app_id", "sequence_id", "state", "write")

    def __init__(self, app_id: str, write: Write | None) -> None:
        self.app_id = app_id
        self.write = write
        self.state: dict[str, Any] = chat.initial_state()
        self.sequence_id = -1

    async def turn(self, n: int) -> None:
        before = self.state
        q = chat.question(n)
        asked = {
            **before,
            "question": q,
            "chat_history": chat.push(before["chat_history"], {"role": "user", "content": q}),
        }
        await self._commit("human_converse", asked)
        response = chat.answer(q)
        answered = {
            **asked,
            "response": response,
            "chat_history": chat.push(
                asked["chat_history"], {"role": "assistant", "content": response}
            ),
        }
        await self._commit("ai_converse", answered)

    async def _commit(self, position: str, state: dict[str, Any]) -> None:
        sequence_id = self.sequence_id + 1
        if self.write is not None:
            await self.write(self.app_id, sequence_id, position, state)
        self.sequence_id = sequence_id
        self.state = state


class RawMemory(Contender):
    key = "raw"

    async def new_app(self, app_id: str, *, persist: bool, concurrent: bool) -> ChatApp:
        return PlainChat(app_id, None)


class RawSQLite(Contender):
    """aiosqlite, one connection, ``isolation_level=None``: each INSERT is its own transaction."""

    key = "raw"

    async def open(self) -> None:
        import aiosqlite

        path = self.target.sqlite_path(self.key)
        await provision_burr_async_table(self.target, TABLE, path)
        self.conn = await aiosqlite.connect(path, isolation_level=None)
        # The pragmas of burr_async.persistence.engine.configure_sqlite.
        await self.conn.execute("PRAGMA journal_mode=WAL")
        await self.conn.execute(f"PRAGMA synchronous={self.target.sqlite_synchronous}")
        await self.conn.execute("PRAGMA busy_timeout=30000")
        await self.conn.execute("PRAGMA foreign_keys=ON")
        self.insert = (
            f"INSERT INTO {TABLE} (partition_key, app_uid, sequence_id, position, status, state, "
            "created_at) VALUES (?, ?, ?, ?, 'completed', ?, ?)"
        )
        self.select = (
            f"SELECT sequence_id, position, status, state FROM {TABLE} "
            "WHERE partition_key = ? AND app_uid = ? ORDER BY sequence_id DESC LIMIT 1"
        )

    async def aclose(self) -> None:
        await self.conn.close()

    async def durability(self) -> str:
        async with self.conn.execute("PRAGMA journal_mode") as cur:
            journal = (await cur.fetchone() or ("?",))[0]
        async with self.conn.execute("PRAGMA synchronous") as cur:
            sync = (await cur.fetchone() or ("?",))[0]
        return (
            f"{sqlite_pragmas(journal, sync)}; aiosqlite, 1 connection, autocommit "
            "(isolation_level=None): one INSERT = one transaction"
        )

    async def _write(
        self, app_id: str, sequence_id: int, position: str, state: dict[str, Any]
    ) -> None:
        encoded = orjson.dumps(state).decode()
        now = dt.datetime.now(dt.UTC).isoformat(sep=" ")
        await self.conn.execute(
            self.insert, (chat.PARTITION_KEY, app_id, sequence_id, position, encoded, now)
        )

    async def new_app(self, app_id: str, *, persist: bool, concurrent: bool) -> ChatApp:
        return PlainChat(app_id, self._write if persist else None)

    async def load_app(self, app_id: str) -> str:
        rows = await self.conn.execute_fetchall(self.select, (chat.PARTITION_KEY, app_id))
        row = next(iter(rows))
        state = orjson.loads(row[3])
        return str(state["question"])


async def _keep_session(_conn: Any) -> None:
    """asyncpg pool ``reset=``: skip the reset query on release (the floor holds no session
    state to reset)."""


class RawPostgres(Contender):
    """asyncpg, autocommit: one connection held by each W1/W3 app, a pool of 10 in W2."""

    key = "raw"

    async def open(self) -> None:
        import asyncpg

        pg = self.target.pg
        await provision_burr_async_table(self.target, TABLE)
        self.pool = await asyncpg.create_pool(
            **pg.asyncpg_kwargs(),
            min_size=pg.pool_size,
            max_size=pg.pool_size,
            reset=_keep_session,
        )
        table = f'"{pg.schema}".{TABLE}'
        self.insert = (
            f"INSERT INTO {table} (partition_key, app_uid, sequence_id, position, status, state, "
            "created_at) VALUES ($1, $2, $3, $4, 'completed', $5::jsonb, $6)"
        )
        self.select = (
            f"SELECT sequence_id, position, status, state::text AS state FROM {table} "
            "WHERE partition_key = $1 AND app_uid = $2 ORDER BY sequence_id DESC LIMIT 1"
        )
        self.conn = await asyncpg.connect(**pg.asyncpg_kwargs())

    async def aclose(self) -> None:
        await self.conn.close()
        await self.pool.close()

    async def durability(self) -> str:
        setting = await self.conn.fetchval("SHOW synchronous_commit")
        return (
            f"synchronous_commit={setting}; asyncpg, autocommit INSERT (1 round trip); "
            f"1 connection (W1, W3), pool of {self.target.pg.pool_size} (W2)"
        )

    async def _write_on_connection(
        self, app_id: str, sequence_id: int, position: str, state: dict[str, Any]
    ) -> None:
        encoded = orjson.dumps(state).decode()
        now = dt.datetime.now(dt.UTC)
        await self.conn.execute(
            self.insert, chat.PARTITION_KEY, app_id, sequence_id, position, encoded, now
        )

    async def _write_on_pool(
        self, app_id: str, sequence_id: int, position: str, state: dict[str, Any]
    ) -> None:
        encoded = orjson.dumps(state).decode()
        now = dt.datetime.now(dt.UTC)
        async with self.pool.acquire() as conn:
            await conn.execute(
                self.insert, chat.PARTITION_KEY, app_id, sequence_id, position, encoded, now
            )

    async def new_app(self, app_id: str, *, persist: bool, concurrent: bool) -> ChatApp:
        if not persist:
            return PlainChat(app_id, None)
        return PlainChat(app_id, self._write_on_pool if concurrent else self._write_on_connection)

    async def load_app(self, app_id: str) -> str:
        row = await self.conn.fetchrow(self.select, chat.PARTITION_KEY, app_id)
        assert row is not None
        state = orjson.loads(row["state"])
        return str(state["question"])


def create(target: Target, options: Options) -> Contender:
    if target.backend == "sqlite":
        return RawSQLite(target, options)
    if target.backend == "postgres":
        return RawPostgres(target, options)
    return RawMemory(target, options)
