"""LangGraph with its async checkpointers: ``langgraph.checkpoint.sqlite.aio.AsyncSqliteSaver``
(langgraph-checkpoint-sqlite) and ``langgraph.checkpoint.postgres.aio.AsyncPostgresSaver``
(langgraph-checkpoint-postgres, psycopg 3).

The equivalent graph: ``START -> human_converse -> ai_converse -> END`` over a ``TypedDict``
state with the same three keys; one turn is one ``ainvoke({"question": ...}, config)`` on the
app's thread (the first turn also passes the seeded history). One compiled graph serves all
threads, as LangGraph intends. A turn writes three checkpoints (input, after each node) plus
each node's pending writes. ``durability="sync"`` by default (``--langgraph-durability``), so
that, as with the other contenders, a step is stored before the next one starts; LangGraph's own
default ("async") writes checkpoints in the background while the next node runs.

- SQLite: one aiosqlite connection that we open with the same pragmas as burr_async; the saver's
  ``setup()`` sets WAL itself; it serialises all calls with an ``asyncio.Lock`` and commits after
  each ``aput``/``aput_writes``.
- Postgres: a psycopg ``AsyncConnectionPool`` of 10 (autocommit, ``prepare_threshold=0``,
  ``dict_row``, as LangGraph documents) with ``search_path`` set to the run's schema. Note the
  saver holds one ``asyncio.Lock`` around every database call, pool or not.

W4's long chat is a second compiled graph whose nodes keep every message; its latest state is
``graph.aget_state(config)``. Its stored payload is every payload column of the thread's rows:
SQLite ``checkpoints.checkpoint`` (the channel values are inline) and ``writes.value``;
Postgres ``checkpoints.checkpoint`` (JSONB), ``checkpoint_blobs.blob`` (the channel values, one
row per new version) and ``checkpoint_writes.blob``. The ``metadata`` columns are not counted
(nor are burr_async's and Burr's ``position``/``status``/``created_at``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph

from benchmarks import chat
from benchmarks.contenders.base import ChatApp, Contender, Options, Stored, sqlite_pragmas
from benchmarks.targets import Target

__all__ = ["create"]


class ChatState(TypedDict):
    question: str
    response: str
    chat_history: list[chat.Message]


def _nodes(window: int | None) -> tuple[Any, Any]:
    """The two nodes, keeping the last ``window`` messages (None: every one, W4)."""

    async def human_converse(state: ChatState) -> dict[str, Any]:
        message: chat.Message = {"role": "user", "content": state["question"]}
        return {"chat_history": chat.push(state["chat_history"], message, window)}

    async def ai_converse(state: ChatState) -> dict[str, Any]:
        response = chat.answer(state["question"])
        message: chat.Message = {"role": "assistant", "content": response}
        return {
            "response": response,
            "chat_history": chat.push(state["chat_history"], message, window),
        }

    return human_converse, ai_converse


def compile_graph(checkpointer: BaseCheckpointSaver[Any] | None, *, long: bool = False) -> Any:
    human_converse, ai_converse = _nodes(None if long else chat.WINDOW)
    graph = StateGraph(ChatState)
    graph.add_node("human_converse", human_converse)
    graph.add_node("ai_converse", ai_converse)
    graph.add_edge(START, "human_converse")
    graph.add_edge("human_converse", "ai_converse")
    graph.add_edge("ai_converse", END)
    return graph.compile(checkpointer=checkpointer)


class _Checkpointed:
    """One thread of a compiled graph with a checkpointer."""

    __slots__ = ("config", "durability", "graph", "history", "started")

    def __init__(
        self,
        graph: Any,
        app_id: str,
        durability: str,
        history: Callable[[], list[chat.Message]] = chat.seed_history,
    ) -> None:
        self.graph = graph
        self.config = {"configurable": {"thread_id": app_id}}
        self.durability = durability
        self.history = history
        self.started = False

    async def turn(self, n: int) -> None:
        inputs: dict[str, Any] = {"question": chat.question(n)}
        if not self.started:
            inputs |= {"response": "", "chat_history": self.history()}
            self.started = True
        await self.graph.ainvoke(inputs, self.config, durability=self.durability)


class _InMemory:
    """No checkpointer: the caller carries the state from one invoke to the next."""

    __slots__ = ("graph", "state")

    def __init__(self, graph: Any) -> None:
        self.graph = graph
        self.state: dict[str, Any] = chat.initial_state()

    async def turn(self, n: int) -> None:
        self.state = await self.graph.ainvoke({**self.state, "question": chat.question(n)})


class LangGraphContender(Contender):
    key = "langgraph"
    long_chat = True

    async def open(self) -> None:
        self.saver: AsyncSqliteSaver | AsyncPostgresSaver | None = None
        self.plain = compile_graph(None)
        if self.backend == "sqlite":
            import aiosqlite

            conn = await aiosqlite.connect(self.target.sqlite_path(self.key))
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute(f"PRAGMA synchronous={self.target.sqlite_synchronous}")
            await conn.execute("PRAGMA busy_timeout=30000")
            self.saver = AsyncSqliteSaver(conn)
            await self.saver.setup()
        elif self.backend == "postgres":
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            pg = self.target.pg
            self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                pg.libpq_conninfo(),
                min_size=pg.pool_size,
                max_size=pg.pool_size,
                open=False,
                kwargs={
                    "autocommit": True,
                    "prepare_threshold": 0,
                    "row_factory": dict_row,
                    "options": f"-c search_path={pg.schema}",
                },
            )
            await self.pool.open(wait=True)
            self.saver = AsyncPostgresSaver(self.pool)
            await self.saver.setup()
        self.graph = compile_graph(self.saver) if self.saver is not None else None
        self.long_graph = compile_graph(self.saver, long=True) if self.saver is not None else None

    async def aclose(self) -> None:
        if isinstance(self.saver, AsyncSqliteSaver):
            await self.saver.conn.close()
        elif isinstance(self.saver, AsyncPostgresSaver):
            await self.pool.close()

    async def durability(self) -> str:
        mode = f"durability={self.options.langgraph_durability!r}"
        if isinstance(self.saver, AsyncSqliteSaver):
            conn = self.saver.conn
            async with conn.execute("PRAGMA journal_mode") as cur:
                journal = (await cur.fetchone() or ("?",))[0]
            async with conn.execute("PRAGMA synchronous") as cur:
                sync = (await cur.fetchone() or ("?",))[0]
            return (
                f"{sqlite_pragmas(journal, sync)}; AsyncSqliteSaver, 1 aiosqlite connection "
                f"behind a lock, commit per checkpoint and per node's writes; {mode}"
            )
        if isinstance(self.saver, AsyncPostgresSaver):
            async with self.pool.connection() as conn:
                cur = await conn.execute("SHOW synchronous_commit")
                row: Any = await cur.fetchone()
            return (
                f"synchronous_commit={row['synchronous_commit']}; AsyncPostgresSaver on a "
                f"psycopg pool of {self.target.pg.pool_size} (autocommit, pipeline), one lock "
                f"around every call; {mode}"
            )
        return await super().durability()

    async def new_app(self, app_id: str, *, persist: bool, concurrent: bool) -> ChatApp:
        if not persist or self.graph is None:
            return _InMemory(self.plain)
        return _Checkpointed(self.graph, app_id, self.options.langgraph_durability)

    async def load_app(self, app_id: str) -> str:
        assert self.graph is not None
        snapshot = await self.graph.aget_state({"configurable": {"thread_id": app_id}})
        return str(snapshot.values["question"])

    async def new_long_app(self, app_id: str) -> ChatApp:
        assert self.long_graph is not None
        return _Checkpointed(
            self.long_graph, app_id, self.options.langgraph_durability, history=list
        )

    async def load_latest(self, app_id: str) -> Mapping[str, Any]:
        assert self.long_graph is not None
        snapshot = await self.long_graph.aget_state({"configurable": {"thread_id": app_id}})
        values: Mapping[str, Any] = snapshot.values
        return values

    async def stored(self, app_id: str) -> Stored:
        if isinstance(self.saver, AsyncSqliteSaver):
            query = (
                "SELECT (SELECT coalesce(sum(length(checkpoint)), 0) FROM checkpoints "
                "WHERE thread_id = ?1) + (SELECT coalesce(sum(length(value)), 0) FROM writes "
                "WHERE thread_id = ?1), (SELECT count(*) FROM checkpoints WHERE thread_id = ?1) "
                "+ (SELECT count(*) FROM writes WHERE thread_id = ?1)"
            )
            async with self.saver.conn.execute(query, (app_id,)) as cur:
                row = await cur.fetchone()
            assert row is not None
            return Stored(int(row[0]), int(row[1]), int(row[0]))
        parts = (
            ("checkpoints", "checkpoint", "octet_length(checkpoint::text)"),
            ("checkpoint_blobs", "blob", "octet_length(blob)"),
            ("checkpoint_writes", "blob", "octet_length(blob)"),
        )
        query = " UNION ALL ".join(
            f"SELECT coalesce(sum(pg_column_size({column})), 0) AS bytes, count(*) AS rows, "
            f"coalesce(sum({logical}), 0) AS logical FROM {table} WHERE thread_id = %(thread)s"
            for table, column, logical in parts
        )
        async with self.pool.connection() as conn:
            cur = await conn.execute(query, {"thread": app_id})
            rows: list[Any] = await cur.fetchall()
        return Stored(
            sum(int(r["bytes"]) for r in rows),
            sum(int(r["rows"]) for r in rows),
            sum(int(r["logical"]) for r in rows),
        )


def create(target: Target, options: Options) -> Contender:
    return LangGraphContender(target, options)
