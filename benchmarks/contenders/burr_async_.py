"""burr_async itself: the chatbot graph of ``examples/chatbot.py`` with
:class:`~burr_async.SQLAlchemyPersister`, built and run as its documentation shows.

The engine comes from ``burr_async.persistence.create_engine`` (SQLite: WAL and the run's
``synchronous``, as the raw floor); on Postgres its pool is sized like every other contender's
(``pool_size=10, max_overflow=0``). The table is provisioned with
``burr_async.persistence.migrate.upgrade(engine, table_name=..., schema=...)``.
"""

from __future__ import annotations

from typing import Any

from benchmarks import chat
from benchmarks.contenders.base import ChatApp, Contender, HaltingChat, Options, sqlite_pragmas
from benchmarks.contenders.provision import engine_url
from benchmarks.targets import Target
from burr_async import (
    Application,
    ApplicationBuilder,
    AsyncBaseStatePersister,
    SQLAlchemyPersister,
    State,
    action,
    default,
)
from burr_async.persistence import create_engine, migrate

__all__ = ["BurrAsyncContender", "build_chat_app", "create"]

TABLE = "burr_async_steps"


@action(reads=["chat_history"], writes=["question", "chat_history"])
async def human_converse(state: State, question: str) -> tuple[dict[str, str], State]:
    message: chat.Message = {"role": "user", "content": question}
    new_state = state.update(
        question=question, chat_history=chat.push(state["chat_history"], message)
    )
    return {"question": question}, new_state


@action(reads=["question", "chat_history"], writes=["response", "chat_history"])
async def ai_converse(state: State) -> tuple[dict[str, str], State]:
    response = chat.answer(state["question"])
    message: chat.Message = {"role": "assistant", "content": response}
    new_state = state.update(
        response=response, chat_history=chat.push(state["chat_history"], message)
    )
    return {"response": response}, new_state


def _builder() -> ApplicationBuilder:
    return (
        ApplicationBuilder()
        .with_actions(human_converse, ai_converse)
        .with_transitions(
            ("human_converse", "ai_converse", default),
            ("ai_converse", "human_converse", default),
        )
    )


async def build_chat_app(
    app_id: str, persister: AsyncBaseStatePersister | None, *, resume: bool = False
) -> Application:
    """A fresh chat app (or, with ``resume``, the stored one loaded through
    ``initialize_from``), persisting every step to ``persister`` when given."""
    builder = _builder().with_identifiers(app_id=app_id, partition_key=chat.PARTITION_KEY)
    if resume:
        assert persister is not None
        builder = builder.initialize_from(
            persister,
            resume_at_next_action=True,
            default_state=chat.initial_state(),
            default_entrypoint="human_converse",
        )
    else:
        builder = builder.with_state(chat.initial_state()).with_entrypoint("human_converse")
    if persister is not None:
        builder = builder.with_state_persister(persister)
    return await builder.abuild()


class BurrAsyncContender(Contender):
    key = "burr_async"

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
        await migrate.upgrade(self.engine, table_name=TABLE, schema=schema)
        self.persister = SQLAlchemyPersister(self.engine, table_name=TABLE, schema=schema)

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
                    f"{sqlite_pragmas(journal, sync)}; SQLAlchemyPersister(engine) on "
                    "burr_async.persistence.create_engine() (aiosqlite)"
                )
            setting = (await conn.exec_driver_sql("SHOW synchronous_commit")).scalar()
        return (
            f"synchronous_commit={setting}; SQLAlchemyPersister(engine) on "
            f"burr_async.persistence.create_engine() (asyncpg), "
            f"pool_size={self.target.pg.pool_size}, max_overflow=0"
        )

    async def new_app(self, app_id: str, *, persist: bool, concurrent: bool) -> ChatApp:
        return HaltingChat(await build_chat_app(app_id, self.persister if persist else None))

    async def load_app(self, app_id: str) -> str:
        app = await build_chat_app(app_id, self.persister, resume=True)
        return str(app.state["question"])


def create(target: Target, options: Options) -> Contender:
    return BurrAsyncContender(target, options)
