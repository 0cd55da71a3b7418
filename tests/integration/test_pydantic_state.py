"""Typed state with pydantic models (burr_async.integrations.pydantic), on every persister: an
action takes and returns models, the state stores their JSON form, and loading rebuilds them
from the code's classes, never from a stored class name."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pydantic
import pytest

from burr_async import ApplicationBuilder, ConfigurationError, State, action, default
from burr_async.integrations.pydantic import PydanticTypingSystem, pydantic_action

pytestmark = pytest.mark.anyio


class Message(pydantic.BaseModel):
    role: str
    content: str
    at: dt.datetime


class Chat(pydantic.BaseModel):
    question: str | None = None
    history: list[Message] = []
    turns: int = 0


WHEN = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


@pydantic_action(reads=["history"], writes=["question", "history"])
async def ask(state: Chat, question: str) -> Chat:
    message = Message(role="user", content=question, at=WHEN)
    return Chat(question=question, history=[*state.history, message])


@pydantic_action(reads=["question", "history", "turns"], writes=["history", "turns"])
def answer(state: Chat) -> Chat:
    assert isinstance(state.history[0], Message)  # the action sees models, not dicts
    reply = Message(role="assistant", content=f"re: {state.question}", at=WHEN)
    return state.model_copy(update={"history": [*state.history, reply], "turns": state.turns + 1})


async def build(persister: Any, app_id: str) -> Any:
    return await (
        ApplicationBuilder()
        .with_actions(ask=ask, answer=answer)
        .with_transitions(("ask", "answer", default), ("answer", "ask", default))
        .with_identifiers(app_id=app_id, partition_key="u")
        .initialize_from(
            persister,
            resume_at_next_action=True,
            default_state=PydanticTypingSystem(Chat).construct_state(Chat()),
            default_entrypoint="ask",
        )
        .with_state_persister(persister)
        .abuild()
    )


async def test_models_round_trip_through_every_persister(every_persister: Any) -> None:
    app_id = str(uuid.uuid4())
    app = await build(every_persister, app_id)
    await app.arun(halt_after=["answer"], inputs={"question": "hello"})
    stored = app.state["history"]
    assert stored[0] == {"role": "user", "content": "hello", "at": "2026-12-02T12:00:00Z"}
    resumed = await build(every_persister, app_id)
    await resumed.arun(halt_after=["answer"], inputs={"question": "again"})
    chat = PydanticTypingSystem(Chat).construct_data(resumed.state)
    assert chat.turns == 2 and [m.content for m in chat.history] == [
        "hello",
        "re: hello",
        "again",
        "re: again",
    ]
    assert chat.history[0].at == WHEN


def test_the_typing_system_builds_models_from_state_and_back() -> None:
    typing = PydanticTypingSystem(Chat)
    state = typing.construct_state(Chat(question="q", turns=3))
    assert state == State({"question": "q", "history": [], "turns": 3})
    assert typing.construct_data(state.update(extra=1)) == Chat(question="q", turns=3)
    assert typing.state_type() is Chat
    with pytest.raises(ConfigurationError, match="pydantic model class"):
        PydanticTypingSystem(dict)  # type: ignore[type-var]


def test_declarations_are_checked_against_the_models() -> None:
    with pytest.raises(ConfigurationError, match="not fields of Chat"):

        @pydantic_action(reads=["nope"], writes=["turns"])
        def bad(state: Chat) -> Chat:
            return state

    with pytest.raises(ConfigurationError, match="must be annotated"):

        @pydantic_action(reads=["turns"], writes=["turns"])
        def untyped(state, other):  # type: ignore[no-untyped-def]
            return state

    with pytest.raises(ConfigurationError, match="both"):
        pydantic_action(reads=[], writes=[], state_input_type=Chat)


async def test_returning_something_else_than_a_model_fails_the_step(every_persister: Any) -> None:
    @pydantic_action(reads=["turns"], writes=["turns"])
    def wrong(state: Chat) -> Chat:
        return {"turns": 1}  # type: ignore[return-value]

    app = await (
        ApplicationBuilder()
        .with_actions(wrong=wrong)
        .with_transitions(("wrong", "wrong", default))
        .with_state({"turns": 0})
        .with_entrypoint("wrong")
        .with_state_persister(every_persister)
        .abuild()
    )
    with pytest.raises(TypeError, match="must return a pydantic model"):
        await app.astep()
    assert app.state["turns"] == 0


@action.pydantic(reads=["turns"], writes=["turns"])
async def count(state: Chat) -> Chat:
    return state.model_copy(update={"turns": state.turns + 1})


async def typed(persister: Any, app_id: str) -> Any:
    return await (
        ApplicationBuilder()
        .with_actions(count=count)
        .with_transitions(("count", "count", default))
        .with_typing(PydanticTypingSystem(Chat))
        .with_identifiers(app_id=app_id, partition_key="u")
        .initialize_from(
            persister,
            resume_at_next_action=True,
            default_state={"turns": 0, "history": [], "question": "q" * 500},
            default_entrypoint="count",
        )
        .with_state_persister(persister)
        .abuild()
    )


async def test_with_typing_makes_state_data_the_model_after_each_step_and_a_resume(
    every_persister: Any,
) -> None:
    app_id = str(uuid.uuid4())
    app = await typed(every_persister, app_id)
    assert app.state.data == Chat(turns=0, question="q" * 500)
    await app.astep()
    await app.astep()
    assert isinstance(app.state.data, Chat) and app.state.data.turns == 2
    resumed = await typed(every_persister, app_id)
    assert resumed.state.data.turns == 2
    await resumed.astep()
    assert resumed.state.data == Chat(turns=3, question="q" * 500)
    if hasattr(every_persister, "table"):  # a typed app resumed goes on storing deltas
        import sqlalchemy as sa

        t = every_persister.table
        query = sa.select(t.c.delta).where(t.c.app_uid == app_id).order_by(t.c.sequence_id)
        async with every_persister.engine.connect() as conn:
            deltas = (await conn.execute(query)).scalars().all()
        assert bool(deltas[-1]) is True


def test_state_data_needs_a_typing_system() -> None:
    with pytest.raises(ConfigurationError, match="with_typing"):
        State({"turns": 1}).data  # noqa: B018
    typed_state = State({"turns": 1}).with_typing_system(PydanticTypingSystem(Chat))
    assert typed_state.update(turns=2).append(history={"role": "r", "content": "c", "at": WHEN})
    assert typed_state.update(turns=2).data.turns == 2  # derived states keep the typing
    with pytest.raises(ConfigurationError, match="construct_data"):
        ApplicationBuilder().with_typing(Chat)
