"""Burr-style code on burr_async, on SQLite and Postgres: the names a Burr program uses
(GraphBuilder and with_graph, tags and ``@tag:`` halts, ``Input``, ``__context``, ``when``'s
suffixes, ``Condition.lmda``, ``astream_iterate``, ``update_state``, ``reset_to_entrypoint``,
``initialize_from`` in Burr's order with ``override_state_values``), and that what a program
does through them is stored, so that a restarted process sees it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from typing import Any

import pytest

from burr_async import (
    Application,
    ApplicationBuilder,
    ApplicationContext,
    CommitUnknownError,
    Condition,
    GraphBuilder,
    Input,
    ParentPointer,
    PostApplicationCreateHook,
    Result,
    SQLAlchemyPersister,
    State,
    action,
    default,
    streaming_action,
    when,
)
from tests.integration.test_persistence_seams import _unreachable_after_the_commit

pytestmark = pytest.mark.anyio


# -- a Burr-style program -----------------------------------------------------------------------


@action(reads=["question", "chat_history"], writes=["chat_history", "turns"], tags=["record"])
async def human_converse(state: State, __context: ApplicationContext) -> State:
    entry = f"Human[{__context.sequence_id}]: {state['question']}"
    return state.append(chat_history=entry).update(turns=state.get("turns", 0) + 1)


@streaming_action(reads=["question"], writes=["chat_history", "answer"], tags=["llm", "record"])
async def ai_converse(state: State) -> AsyncGenerator[tuple[dict[str, Any], State | None], None]:
    words = f"you said {state['question']}".split()
    for word in words:
        yield {"delta": word}, None
    answer = " ".join(words)
    yield {"answer": answer}, state.update(answer=answer).append(chat_history=f"AI: {answer}")


def _too_long(state: State) -> bool:
    return bool(state["turns"] >= 3)


GRAPH = (
    GraphBuilder()
    .with_actions(
        ask=Input("question"),
        human_converse=human_converse,
        ai_converse=ai_converse,
        terminal=Result("chat_history"),
    )
    .with_transitions(
        ("ask", "human_converse"),
        ("human_converse", "terminal", when(question__contains="exit")),
        ("human_converse", "terminal", Condition.lmda(_too_long, ["turns"])),
        ("human_converse", "ai_converse", default),
        ("ai_converse", "ask"),
    )
    .build()
)


def _builder(persister: SQLAlchemyPersister, app_id: str, **overrides: Any) -> ApplicationBuilder:
    return (
        ApplicationBuilder()
        .with_graph(GRAPH)
        .initialize_from(
            persister,
            True,
            {"chat_history": []},
            "ask",
            None,
            None,
            None,
            overrides or None,
        )
        .with_state_persister(persister)
        .with_identifiers(app_id=app_id, partition_key="burr-style")
    )


async def _app(persister: SQLAlchemyPersister, app_id: str, **overrides: Any) -> Application:
    return await _builder(persister, app_id, **overrides).abuild()


def new_id() -> str:
    return str(uuid.uuid4())


async def test_a_burr_style_program_runs_and_resumes(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    app = await _app(persister, app_id)
    streamed: list[str] = []
    async for act, container in app.astream_iterate(
        halt_after=["@tag:llm"], inputs={"question": "hello"}
    ):
        if act.name == "ai_converse":
            streamed.extend([partial["delta"] async for partial in container])
    assert streamed == ["you", "said", "hello"]
    assert app.state["chat_history"] == ["Human[1]: hello", "AI: you said hello"]

    restarted = await _app(persister, app_id)  # a new process would do the same
    assert (restarted.sequence_id, restarted.position) == (2, "ai_converse")
    act, result, state = await restarted.arun(
        halt_after=["terminal"], halt_before=["@tag:llm"], inputs={"question": "exit now"}
    )
    assert act is not None and act.name == "terminal"
    assert result == {"chat_history": state["chat_history"]}
    assert state["chat_history"][-1] == "Human[4]: exit now"
    history = await persister.history("burr-style", app_id)
    assert [h.position for h in history] == [
        "ask",
        "human_converse",
        "ai_converse",
        "ask",
        "human_converse",
        "terminal",
    ]


async def test_update_state_is_stored_and_a_restart_sees_it(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    app = await _app(persister, app_id)
    await app.arun(halt_after=["human_converse"], inputs={"question": "q"})
    assert app.get_next_action().name == "ai_converse"
    await app.update_state(app.state.update(turns=5))  # Burr's name, awaited
    restarted = await _app(persister, app_id)
    assert restarted.state["turns"] == 5
    assert (restarted.sequence_id, restarted.position) == (2, "human_converse")
    assert restarted.get_next_action().name == "terminal"  # the lmda condition now holds
    row = await persister.load("burr-style", app_id)
    assert row is not None
    assert (row.sequence_id, row.position, row.status) == (2, "human_converse", "completed")


async def test_reset_to_entrypoint_is_stored_and_a_restart_starts_over(
    persister: SQLAlchemyPersister,
) -> None:
    app_id = new_id()
    app = await _app(persister, app_id)
    await app.arun(halt_after=["terminal"], inputs={"question": "exit"})
    assert not app.has_next_action()
    await app.reset_to_entrypoint()
    row = await persister.load("burr-style", app_id)
    assert row is not None and (row.position, row.status) == ("@entrypoint", "completed")
    restarted = await _app(persister, app_id)
    assert restarted.position is None
    assert restarted.get_next_action().name == "ask"
    assert restarted.state["chat_history"] == app.state["chat_history"]
    await restarted.arun(halt_after=["human_converse"], inputs={"question": "again"})
    assert restarted.state["chat_history"][-1] == "Human[5]: again"  # 3 was the reset
    summaries = await persister.list_apps(partition_key="burr-style")
    assert any(s.app_id == app_id and s.position == "human_converse" for s in summaries)


async def test_override_state_values_over_a_stored_state(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    app = await _app(persister, app_id)
    await app.arun(halt_after=["human_converse"], inputs={"question": "q"})
    overridden = await _app(persister, app_id, turns=10)
    assert overridden.state["turns"] == 10
    assert overridden.get_next_action().name == "terminal"
    await overridden.astep()
    row = await persister.load("burr-style", app_id)
    assert row is not None and row.state["turns"] == 10


async def test_a_fork_of_a_reset_app_starts_at_its_entrypoint(
    persister: SQLAlchemyPersister,
) -> None:
    source_id, fork_id = new_id(), new_id()
    created: list[dict[str, Any]] = []

    class OnCreate(PostApplicationCreateHook):
        def post_application_create(self, **kwargs: Any) -> None:  # type: ignore[override]
            created.append(kwargs)

    source = await _app(persister, source_id)
    await source.arun(halt_after=["terminal"], inputs={"question": "exit"})
    await source.reset_to_entrypoint()
    fork = await (
        ApplicationBuilder()
        .with_graph(GRAPH)
        .initialize_from(
            persister, True, {}, "ask", source_id, "burr-style", override_state_values={"x": 1}
        )
        .with_state_persister(persister)
        .with_identifiers(app_id=fork_id, partition_key="burr-style")
        .with_hooks(OnCreate())
        .abuild()
    )
    assert fork.position is None and fork.get_next_action().name == "ask"
    assert fork.state["x"] == 1
    assert created[0]["parent_pointer"] == ParentPointer(source_id, "burr-style", 3)
    await fork.astep(inputs={"question": "forked"})
    assert [h.position for h in await persister.history("burr-style", fork_id)] == [
        "@entrypoint",
        "ask",
    ]


async def test_an_update_state_whose_commit_is_unknown_is_settled_by_the_next_call(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_id = new_id()
    app = await _app(persister, app_id)
    await app.astep(inputs={"question": "q"})
    await _unreachable_after_the_commit(persister, monkeypatch)
    with pytest.raises(CommitUnknownError) as info:
        await app.update_state(app.state.update(turns=7))
    assert (info.value.sequence_id, info.value.action) == (1, "ask")
    assert app.sequence_id == 0 and "turns" not in app.state  # not advanced
    monkeypatch.undo()
    await app.astep()  # settles the update (stored already), then runs human_converse
    assert app.state["turns"] == 8
    history = await persister.history("burr-style", app_id)
    assert [(h.sequence_id, h.position, h.state.get("turns")) for h in history] == [
        (0, "ask", None),
        (1, "ask", 7),
        (2, "human_converse", 8),
    ]
