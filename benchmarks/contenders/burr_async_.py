"""burr_async itself: the chatbot graph of ``examples/chatbot.py`` with
:class:`~burr_async.SQLAlchemyPersister`, built and run as its documentation shows.

The engine comes from ``burr_async.persistence.create_engine`` (SQLite: WAL and the run's
``synchronous``, as the raw floor); on Postgres its pool is sized like every other contender's
(``pool_size=10, max_overflow=0``). The table is provisioned with
``burr_async.persistence.migrate.upgrade(engine, table_name=..., schema=...)``.

Two contenders: ``burr_async`` is the persister as configured by default (``storage="delta"``:
a step's row holds what it changed, with a full state every ``snapshot_every=50`` steps at
most); ``burr_async-snapshot`` passes ``storage="snapshot"`` (every row a full state), in a
table of its own.

W5 (``burr_async`` only): the parent's entrypoint is a :class:`~burr_async.MapStates` whose
children run a :class:`~burr_async.RunnableGraph` of ``w5_child_steps`` chained actions
(``max_concurrency=None``: all at once), on the parent's persister. The commits of the child
steps are counted through the seam the tracing hook uses (``COMMIT_BATCH`` of
``burr_async.persistence._observed``): the group writer notes, for every row, the size of the
commit that stored it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cache
from typing import Any, ClassVar, Literal

import sqlalchemy as sa

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
from benchmarks.contenders.provision import engine_url
from benchmarks.targets import Target
from benchmarks.workloads import Sizes
from burr_async import (
    Action,
    Application,
    ApplicationBuilder,
    ApplicationContext,
    AsyncBaseStatePersister,
    GraphBuilder,
    MapStates,
    RunnableGraph,
    SQLAlchemyPersister,
    State,
    action,
    default,
)
from burr_async.parallelism import child_app_id
from burr_async.persistence import create_engine, migrate
from burr_async.persistence._observed import COMMIT_BATCH

__all__ = [
    "BurrAsyncContender",
    "BurrAsyncSnapshotContender",
    "build_chat_app",
    "create",
    "create_snapshot",
]

TABLE = "burr_async_steps"


def _actions(window: int | None) -> tuple[Any, Any]:
    """The two actions, keeping the last ``window`` messages (None: every one, W4)."""

    @action(reads=["chat_history"], writes=["question", "chat_history"])
    async def human_converse(state: State, question: str) -> tuple[dict[str, str], State]:
        message: chat.Message = {"role": "user", "content": question}
        new_state = state.update(
            question=question, chat_history=chat.push(state["chat_history"], message, window)
        )
        return {"question": question}, new_state

    @action(reads=["question", "chat_history"], writes=["response", "chat_history"])
    async def ai_converse(state: State) -> tuple[dict[str, str], State]:
        response = chat.answer(state["question"])
        message: chat.Message = {"role": "assistant", "content": response}
        new_state = state.update(
            response=response, chat_history=chat.push(state["chat_history"], message, window)
        )
        return {"response": response}, new_state

    return human_converse, ai_converse


human_converse, ai_converse = _actions(chat.WINDOW)
_long_actions = _actions(None)


def _builder(*, long: bool = False) -> ApplicationBuilder:
    return (
        ApplicationBuilder()
        .with_actions(*(_long_actions if long else (human_converse, ai_converse)))
        .with_transitions(
            ("human_converse", "ai_converse", default),
            ("ai_converse", "human_converse", default),
        )
    )


async def build_chat_app(
    app_id: str,
    persister: AsyncBaseStatePersister | None,
    *,
    resume: bool = False,
    long: bool = False,
) -> Application:
    """A fresh chat app (or, with ``resume``, the stored one loaded through
    ``initialize_from``), persisting every step to ``persister`` when given; ``long``: the
    long chat of W4 (empty history, every message kept)."""
    builder = _builder(long=long).with_identifiers(app_id=app_id, partition_key=chat.PARTITION_KEY)
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
        builder = builder.with_state(initial).with_entrypoint("human_converse")
    if persister is not None:
        builder = builder.with_state_persister(persister)
    return await builder.abuild()


def _child_action(step: int) -> Action:
    """Child step ``step`` of W5: one assistant message appended (``chat.fanout_step``)."""

    @action(reads=["question", "chat_history"], writes=["response", "chat_history"])
    async def reply(state: State) -> State:
        history, response = chat.fanout_step(state["chat_history"], state["question"], step)
        return state.update(chat_history=history, response=response)

    return reply


@cache
def child_graph(steps: int) -> RunnableGraph:
    """W5's child: ``steps`` actions ``step_0 -> step_1 -> ...``, halting after the last."""
    names = [f"step_{i}" for i in range(steps)]
    graph = (
        GraphBuilder()
        .with_actions(**{name: _child_action(i) for i, name in enumerate(names)})
        .with_transitions(*itertools.pairwise(names))
        .build()
    )
    return RunnableGraph(graph, names[0], (names[-1],))


class FanOutChats(MapStates):
    """W5's fan-out: one child per question of ``questions``, each a small chat through
    :func:`child_graph`; ``answers`` gets every child's last ``response``, in order."""

    def __init__(self, child: RunnableGraph) -> None:
        super().__init__()
        self.child = child

    @property
    def reads(self) -> list[str]:
        return ["questions"]

    @property
    def writes(self) -> list[str]:
        return ["answers"]

    def action(self, state: State, inputs: dict[str, Any]) -> RunnableGraph:
        return self.child

    def states(
        self, state: State, context: ApplicationContext, inputs: dict[str, Any]
    ) -> list[State]:
        return [State(chat.fanout_child_state(q)) for q in state["questions"]]

    def reduce(self, state: State, states: Iterable[State]) -> State:
        return state.update(answers=[s["response"] for s in states])


class _FanOutParent:
    """A W5 parent: one ``arun`` that halts after its fan-out step."""

    __slots__ = ("app",)

    def __init__(self, app: Application) -> None:
        self.app = app

    async def run(self) -> None:
        await self.app.arun(halt_after=["fan_out"])


class BurrAsyncContender(Contender):
    key = "burr_async"
    long_chat = True
    fan_out = True
    storage: ClassVar[Literal["delta", "snapshot"]] = "delta"
    table: ClassVar[str] = TABLE

    async def open(self) -> None:
        self.persister: SQLAlchemyPersister | None = None
        if self.backend == "memory":
            return
        kwargs: dict[str, Any] = {}
        if self.backend == "postgres":
            kwargs = {"pool_size": self.target.pg.pool_size, "max_overflow": 0}
        url = engine_url(
            self.target, self.target.sqlite_path(self.key) if self.backend == "sqlite" else None
        )
        self.engine = create_engine(
            url, sqlite_synchronous=self.target.sqlite_synchronous, **kwargs
        )
        schema = self.target.pg.schema if self.backend == "postgres" else None
        await migrate.upgrade(self.engine, table_name=self.table, schema=schema)
        self.persister = SQLAlchemyPersister(
            self.engine, table_name=self.table, schema=schema, storage=self.storage
        )
        if self.backend == "postgres":
            size, logical = "pg_column_size(state)", "octet_length(state::text)"
        else:
            size = logical = "length(CAST(state AS BLOB))"
        table = f'"{schema}"."{self.table}"' if schema else f'"{self.table}"'
        self.size_query = sa.text(
            f"SELECT coalesce(sum({size}), 0), count(*), coalesce(sum({logical}), 0) "
            f"FROM {table} WHERE partition_key = :pk AND app_uid = :app"
        )

    async def aclose(self) -> None:
        if self.persister is not None:
            await self.persister.aclose()
            await self.engine.dispose()

    async def durability(self) -> str:
        if self.backend == "memory":
            return await super().durability()
        async with self.engine.connect() as conn:
            if self.backend == "sqlite":
                journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
                sync = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
                return (
                    f"{sqlite_pragmas(journal, sync)}; {self._persister_call()} on "
                    "burr_async.persistence.create_engine() (aiosqlite)"
                )
            setting = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar()
        return (
            f"synchronous_commit={setting}; {self._persister_call()} on "
            f"burr_async.persistence.create_engine() (asyncpg), "
            f"pool_size={self.target.pg.pool_size}, max_overflow=0"
        )

    def _persister_call(self) -> str:
        if self.storage == "delta":
            return "SQLAlchemyPersister(engine) (storage='delta', snapshot_every=50: the default)"
        return f"SQLAlchemyPersister(engine, storage={self.storage!r})"

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
        return data.state

    async def stored(self, app_id: str) -> Stored:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(self.size_query, {"pk": chat.PARTITION_KEY, "app": app_id})
            ).one()
        return Stored(int(row[0]), int(row[1]), int(row[2]))

    async def new_fan_out(self, app_id: str, sizes: Sizes) -> FanOutApp:
        assert self.persister is not None
        app = await (
            ApplicationBuilder()
            .with_actions(fan_out=FanOutChats(child_graph(sizes.w5_child_steps)))
            .with_state(chat.fanout_parent_state(sizes.w5_children))
            .with_entrypoint("fan_out")
            .with_identifiers(app_id=app_id, partition_key=chat.PARTITION_KEY)
            .with_state_persister(self.persister)
            .abuild()
        )
        return _FanOutParent(app)

    async def load_fan_out(
        self, app_id: str, sizes: Sizes
    ) -> tuple[Sequence[str], Mapping[str, Any]]:
        assert self.persister is not None
        parent = await self.persister.load(chat.PARTITION_KEY, app_id)
        last = child_app_id(app_id, 0, sizes.w5_children - 1)  # the parent's step 0
        child = await self.persister.load(chat.PARTITION_KEY, last)
        assert parent is not None, f"{app_id} is not stored"
        assert child is not None, f"{app_id}'s last child {last} is not stored"
        return parent.state["answers"], child.state

    @contextmanager
    def count_commits(self) -> Iterator[Callable[[], list[int] | None]]:
        notes: list[int] = []
        token = COMMIT_BATCH.set(notes)  # seen by every task started below, children's too
        try:
            yield lambda: notes
        finally:
            COMMIT_BATCH.reset(token)


class BurrAsyncSnapshotContender(BurrAsyncContender):
    """The same, with ``storage="snapshot"``: every step's full state, as before deltas. It
    does not run W5 (a fan-out's storage is burr_async's default's)."""

    key = "burr_async-snapshot"
    storage = "snapshot"
    table = "burr_async_snapshot_steps"
    fan_out = False

    def supports(self, workload: str) -> bool:
        # W0 has no persister: it would be burr_async's W0 again.
        return workload != "W0" and super().supports(workload)


def create(target: Target, options: Options) -> Contender:
    return BurrAsyncContender(target, options)


def create_snapshot(target: Target, options: Options) -> Contender:
    return BurrAsyncSnapshotContender(target, options)
