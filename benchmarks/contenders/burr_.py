"""Apache Burr (package ``apache-burr``) with its async persisters:
``burr.integrations.persisters.b_aiosqlite.AsyncSQLitePersister`` and
``burr.integrations.persisters.b_asyncpg.AsyncPostgreSQLPersister``, the same chat graph, built
with ``await ApplicationBuilder()...abuild()`` and run with ``await app.arun(...)``.

- SQLite: the persister over one aiosqlite connection that we open so that it runs with the same
  pragmas as burr_async (WAL, the run's ``synchronous``); Burr's own ``from_values`` would leave
  SQLite's defaults (rollback journal, ``synchronous=FULL``). Burr executes the INSERT in an
  implicit transaction and then calls ``commit()``; all apps share the connection.
- Postgres: the persister over an asyncpg pool of 10 (what ``from_values(use_pool=True)``
  creates), with ``search_path`` set to the run's schema; autocommit INSERT per step; asyncpg's
  default reset query runs on every release to the pool.

W5: the parent's entrypoint is Burr's ``burr.core.parallelism.MapStates`` (``is_async``: the
children run with ``asyncio.gather``, all at once) over a ``RunnableGraph`` of the same chained
actions; the parent is built with ``initialize_from`` and ``with_state_persister`` on the same
persister, so that the children inherit both ("cascade", Burr's default) and each loads its
stored state before it runs, as burr_async's do. Its commits are not counted: each step is its
own INSERT (autocommit on Postgres; ``commit()`` after each save on SQLite's shared connection).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from burr.core import (
    Application,
    ApplicationBuilder,
    ApplicationContext,
    State,
    action,
    default,
)
from burr.core.graph import GraphBuilder
from burr.core.parallelism import MapStates, RunnableGraph, _stable_app_id_hash
from burr.integrations.persisters.b_aiosqlite import AsyncSQLitePersister
from burr.integrations.persisters.b_asyncpg import AsyncPostgreSQLPersister

from benchmarks import chat
from benchmarks.contenders.base import (
    ChatApp,
    Contender,
    FanOutApp,
    HaltingChat,
    Options,
    Stored,
    sqlite_pragmas,
)
from benchmarks.targets import Target
from benchmarks.workloads import Sizes

__all__ = ["create"]

TABLE = "burr_state"


def _actions(window: int | None) -> tuple[Any, Any]:
    """The two actions, keeping the last ``window`` messages (None: every one, W4)."""

    @action(reads=["chat_history"], writes=["question", "chat_history"])
    async def human_converse(state: State[Any], question: str) -> tuple[dict[str, str], State[Any]]:
        message: chat.Message = {"role": "user", "content": question}
        new_state = state.update(
            question=question, chat_history=chat.push(state["chat_history"], message, window)
        )
        return {"question": question}, new_state

    @action(reads=["question", "chat_history"], writes=["response", "chat_history"])
    async def ai_converse(state: State[Any]) -> tuple[dict[str, str], State[Any]]:
        response = chat.answer(state["question"])
        message: chat.Message = {"role": "assistant", "content": response}
        new_state = state.update(
            response=response, chat_history=chat.push(state["chat_history"], message, window)
        )
        return {"response": response}, new_state

    return human_converse, ai_converse


human_converse, ai_converse = _actions(chat.WINDOW)
_long_actions = _actions(None)

Persister = AsyncSQLitePersister | AsyncPostgreSQLPersister


async def build_chat_app(
    app_id: str, persister: Persister | None, *, resume: bool = False, long: bool = False
) -> Application[Any]:
    builder: ApplicationBuilder[Any] = (
        ApplicationBuilder()  # type: ignore[no-untyped-call]
        .with_actions(*(_long_actions if long else (human_converse, ai_converse)))
        .with_transitions(
            ("human_converse", "ai_converse", default),
            ("ai_converse", "human_converse", default),
        )
        .with_identifiers(app_id=app_id, partition_key=chat.PARTITION_KEY)
    )
    if resume:
        assert persister is not None
        builder = builder.initialize_from(
            persister,
            resume_at_next_action=True,
            default_state=chat.initial_state(),
            default_entrypoint="human_converse",
        )
    else:
        initial = chat.long_initial_state() if long else chat.initial_state()
        builder = builder.with_state(**initial).with_entrypoint("human_converse")
    if persister is not None:
        builder = builder.with_state_persister(persister)
    return await builder.abuild()


def _child_action(step: int) -> Any:
    """Child step ``step`` of W5: one assistant message appended (``chat.fanout_step``)."""

    @action(reads=["question", "chat_history"], writes=["response", "chat_history"])
    async def reply(state: State[Any]) -> tuple[dict[str, str], State[Any]]:
        history, response = chat.fanout_step(state["chat_history"], state["question"], step)
        return {"response": response}, state.update(chat_history=history, response=response)

    return reply


def child_graph(steps: int) -> RunnableGraph:
    """W5's child: ``steps`` actions ``step_0 -> step_1 -> ...``, halting after the last."""
    names = [f"step_{i}" for i in range(steps)]
    graph = (
        GraphBuilder()  # type: ignore[no-untyped-call]
        .with_actions(**{name: _child_action(i) for i, name in enumerate(names)})
        .with_transitions(*itertools.pairwise(names))
        .build()
    )
    return RunnableGraph(graph=graph, entrypoint=names[0], halt_after=[names[-1]])


class FanOutChats(MapStates):
    """W5's fan-out in Burr: one child per question, ``answers`` every child's response."""

    def __init__(self, child: RunnableGraph) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.child = child

    @property
    def reads(self) -> list[str]:
        return ["questions"]

    @property
    def writes(self) -> list[str]:
        return ["answers"]

    def is_async(self) -> bool:
        return True

    def action(self, state: State[Any], inputs: dict[str, Any]) -> RunnableGraph:
        return self.child

    async def states(  # type: ignore[override]
        self, state: State[Any], context: ApplicationContext, inputs: dict[str, Any]
    ) -> AsyncIterator[State[Any]]:
        for question in state["questions"]:
            yield State(chat.fanout_child_state(question))

    async def reduce(  # type: ignore[override]
        self, state: State[Any], states: AsyncIterator[State[Any]]
    ) -> State[Any]:
        return state.update(answers=[s["response"] async for s in states])


class _FanOutParent:
    __slots__ = ("app",)

    def __init__(self, app: Application[Any]) -> None:
        self.app = app

    async def run(self) -> None:
        await self.app.arun(halt_after=["fan_out"])


class BurrContender(Contender):
    key = "burr"
    long_chat = True
    fan_out = True

    async def open(self) -> None:
        self.persister: Persister | None = None
        if self.backend == "sqlite":
            import aiosqlite

            conn = await aiosqlite.connect(self.target.sqlite_path(self.key))
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute(f"PRAGMA synchronous={self.target.sqlite_synchronous}")
            await conn.execute("PRAGMA busy_timeout=30000")
            self.persister = AsyncSQLitePersister(connection=conn, table_name=TABLE)
            await self.persister.initialize()  # type: ignore[no-untyped-call]
        elif self.backend == "postgres":
            import asyncpg

            pg = self.target.pg
            self.pool = await asyncpg.create_pool(
                **pg.asyncpg_kwargs(),
                min_size=pg.pool_size,
                max_size=pg.pool_size,
                server_settings={"search_path": pg.schema},
            )
            self.persister = AsyncPostgreSQLPersister(pool=self.pool, table_name=TABLE)
            await self.persister.initialize()  # type: ignore[no-untyped-call]

    async def aclose(self) -> None:
        if isinstance(self.persister, AsyncSQLitePersister):
            await self.persister.cleanup()  # type: ignore[no-untyped-call]
        elif isinstance(self.persister, AsyncPostgreSQLPersister):
            await self.pool.close()

    async def durability(self) -> str:
        if isinstance(self.persister, AsyncSQLitePersister):
            conn = self.persister.connection
            async with conn.execute("PRAGMA journal_mode") as cur:
                journal = (await cur.fetchone() or ("?",))[0]
            async with conn.execute("PRAGMA synchronous") as cur:
                sync = (await cur.fetchone() or ("?",))[0]
            return (
                f"{sqlite_pragmas(journal, sync)} (set by us; Burr's from_values leaves the "
                "rollback journal); 1 shared aiosqlite connection, INSERT then commit()"
            )
        if isinstance(self.persister, AsyncPostgreSQLPersister):
            async with self.pool.acquire() as conn:
                setting = await conn.fetchval("SHOW synchronous_commit")
            return (
                f"synchronous_commit={setting}; AsyncPostgreSQLPersister on an asyncpg pool of "
                f"{self.target.pg.pool_size}, autocommit INSERT"
            )
        return await super().durability()

    async def new_app(self, app_id: str, *, persist: bool, concurrent: bool) -> ChatApp:
        return HaltingChat(await build_chat_app(app_id, self.persister if persist else None))

    async def load_app(self, app_id: str) -> str:
        app = await build_chat_app(app_id, self.persister, resume=True)
        return str(app.state["question"])

    async def new_long_app(self, app_id: str) -> ChatApp:
        return HaltingChat(await build_chat_app(app_id, self.persister, long=True))

    async def load_latest(self, app_id: str) -> Mapping[str, Any]:
        assert self.persister is not None
        data = await self.persister.load(chat.PARTITION_KEY, app_id)
        assert data is not None, f"{app_id} is not stored"
        state: Mapping[str, Any] = data["state"]
        return state

    async def stored(self, app_id: str) -> Stored:
        where = "WHERE partition_key = {} AND app_id = {}"
        if isinstance(self.persister, AsyncSQLitePersister):
            query = (
                "SELECT coalesce(sum(length(CAST(state AS BLOB))), 0), count(*), "
                f"coalesce(sum(length(CAST(state AS BLOB))), 0) FROM {TABLE} "
            )
            async with self.persister.connection.execute(
                query + where.format("?", "?"), (chat.PARTITION_KEY, app_id)
            ) as cur:
                row = await cur.fetchone()
        else:
            query = (
                "SELECT coalesce(sum(pg_column_size(state)), 0), count(*), "
                f"coalesce(sum(octet_length(state::text)), 0) FROM {TABLE} "
            )
            async with self.pool.acquire() as conn:
                row = await conn.fetchrow(
                    query + where.format("$1", "$2"), chat.PARTITION_KEY, app_id
                )
        assert row is not None
        return Stored(int(row[0]), int(row[1]), int(row[2]))

    async def new_fan_out(self, app_id: str, sizes: Sizes) -> FanOutApp:
        assert self.persister is not None
        app: Application[Any] = await (
            ApplicationBuilder()  # type: ignore[no-untyped-call]
            .with_actions(fan_out=FanOutChats(child_graph(sizes.w5_child_steps)))
            .with_identifiers(app_id=app_id, partition_key=chat.PARTITION_KEY)
            .initialize_from(
                self.persister,
                resume_at_next_action=True,
                default_state=chat.fanout_parent_state(sizes.w5_children),
                default_entrypoint="fan_out",
            )
            .with_state_persister(self.persister)
            .abuild()
        )
        return _FanOutParent(app)

    async def load_fan_out(
        self, app_id: str, sizes: Sizes
    ) -> tuple[Sequence[str], Mapping[str, Any]]:
        assert self.persister is not None
        parent = await self.persister.load(chat.PARTITION_KEY, app_id)
        # Burr names child j of a MapStates by its parent's app id and "0-j".
        last = _stable_app_id_hash(app_id, f"0-{sizes.w5_children - 1}")
        child = await self.persister.load(chat.PARTITION_KEY, last)
        assert parent is not None, f"{app_id} is not stored"
        assert child is not None, f"{app_id}'s last child {last} is not stored"
        answers: Sequence[str] = parent["state"]["answers"]
        state: Mapping[str, Any] = child["state"]
        return answers, state


def create(target: Target, options: Options) -> Contender:
    return BurrContender(target, options)
