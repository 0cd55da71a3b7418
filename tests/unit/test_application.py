"""Application: stepping, running, iterating, failures and the busy guard."""

from __future__ import annotations

from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest

from burr_async import (
    Application,
    ApplicationBuilder,
    ApplicationBusyError,
    ConditionError,
    GraphValidationError,
    State,
    action,
    default,
    expr,
)

from ._support import FlakyError, chatbot_app, counter_app

pytestmark = pytest.mark.anyio


async def test_astep_returns_action_result_state() -> None:
    app = await chatbot_app()
    assert app.sequence_id is None
    assert app.position is None
    outcome = await app.astep(inputs={"prompt": "hi"})
    assert outcome is not None
    act, result, state = outcome
    assert act.name == "user_input"
    assert result == {"prompt": "hi"}
    assert state.get_all() == {
        "chat_history": [{"role": "user", "content": "hi"}],
        "prompt": "hi",
    }
    assert app.state == state
    assert app.sequence_id == 0
    assert app.position == "user_input"


async def test_sequence_id_and_position_advance() -> None:
    app = await chatbot_app()
    seen = []
    for prompt in ("a", "b"):
        await app.astep(inputs={"prompt": prompt})
        seen.append((app.sequence_id, app.position))
        await app.astep()
        seen.append((app.sequence_id, app.position))
    assert seen == [(0, "user_input"), (1, "respond"), (2, "user_input"), (3, "respond")]
    assert app.state["response"] == "echo: b"
    assert [m["content"] for m in app.state["chat_history"]] == ["a", "echo: a", "b", "echo: b"]


async def test_astep_returns_none_when_there_is_no_next_action() -> None:
    app = await counter_app(limit=1)
    assert (await app.astep()) is not None
    outcome = await app.astep()
    assert outcome is not None
    assert outcome[0].name == "done"
    assert outcome[1] == {"count": 1}
    assert app.has_next_action() is False
    assert app.get_next_action() is None
    assert await app.astep() is None
    assert app.sequence_id == 1
    assert app.position == "done"


async def test_get_next_action() -> None:
    app = await chatbot_app()
    assert app.get_next_action().name == "user_input"  # type: ignore[union-attr]
    await app.astep(inputs={"prompt": "exit please"})
    assert app.get_next_action().name == "goodbye"  # type: ignore[union-attr]


async def test_arun_halt_after() -> None:
    app = await chatbot_app()
    act, result, state = await app.arun(halt_after=["respond"], inputs={"prompt": "yo"})
    assert act is not None
    assert act.name == "respond"
    assert result == {"response": "echo: yo"}
    assert state["response"] == "echo: yo"
    assert app.sequence_id == 1
    assert app.position == "respond"


async def test_arun_halt_before_returns_next_action_without_result() -> None:
    app = await chatbot_app()
    await app.astep(inputs={"prompt": "one"})
    act, result, state = await app.arun(halt_before=["user_input"])
    assert act is not None
    assert act.name == "user_input"
    assert result is None
    assert state["response"] == "echo: one"
    assert app.position == "respond"
    assert app.sequence_id == 1


async def test_arun_halt_after_wins_over_halt_before_of_the_next_action() -> None:
    app = await chatbot_app()
    act, result, state = await app.arun(
        halt_after=["user_input"], halt_before=["respond"], inputs={"prompt": "q"}
    )
    assert act is not None
    assert act.name == "user_input"
    assert result == {"prompt": "q"}
    assert state["prompt"] == "q"
    assert app.sequence_id == 0


async def test_arun_halt_before_the_entrypoint_runs_nothing() -> None:
    app = await chatbot_app()
    act, result, state = await app.arun(halt_before=["user_input"])
    assert act is not None
    assert act.name == "user_input"
    assert result is None
    assert state.get_all() == {"chat_history": []}
    assert app.sequence_id is None


async def test_arun_to_the_end_of_the_graph() -> None:
    app = await counter_app(limit=3)
    act, result, state = await app.arun()
    assert act is not None
    assert act.name == "done"
    assert result == {"count": 3}
    assert state["count"] == 3
    assert app.sequence_id == 3


async def test_arun_halt_at_unknown_action_names_it() -> None:
    app = await counter_app()
    with pytest.raises(GraphValidationError, match="'nope'"):
        await app.arun(halt_after=["nope"])
    assert app.sequence_id is None


async def test_aiterate_yields_each_step() -> None:
    app = await counter_app(limit=2)
    steps = [(act.name, result, state["count"]) async for act, result, state in app.aiterate()]
    assert steps == [
        ("increment", {"count": 1}, 1),
        ("increment", {"count": 2}, 2),
        ("done", {"count": 2}, 2),
    ]
    assert app.sequence_id == 2


async def test_aiterate_with_halts() -> None:
    app = await counter_app(limit=5)
    names = [step[0].name async for step in app.aiterate(halt_before=["done"])]
    assert names == ["increment"] * 5
    names = [step[0].name async for step in app.aiterate(halt_after=["done"])]
    assert names == ["done"]


async def test_inputs_are_passed_to_each_step() -> None:
    app = await counter_app(limit=6)
    act, _, state = await app.arun(halt_after=["done"], inputs={"by": 2})
    assert act is not None
    assert state["count"] == 6
    assert app.sequence_id == 3  # three increments of 2, then done


# -- failures ----------------------------------------------------------------------------------


def _flaky_app_builder(failures: list[bool]) -> ApplicationBuilder:
    """``work`` fails while ``failures`` pops True; then ``after`` runs."""

    @action(reads=["n"], writes=["n"])
    async def work(state: State) -> tuple[dict[str, Any], State]:
        if failures.pop(0):
            raise FlakyError("work exploded")
        return {}, state.increment(n=1)

    @action(reads=[], writes=[])
    def after(state: State) -> State:
        return state

    return (
        ApplicationBuilder()
        .with_actions(work, after)
        .with_transitions(("work", "after"))
        .with_state(n=0)
        .with_entrypoint("work")
    )


async def test_failing_action_raises_its_own_error_and_is_rerun() -> None:
    app = await _flaky_app_builder([True, True, False]).abuild()
    with pytest.raises(FlakyError, match="work exploded"):
        await app.astep()
    assert app.state.get_all() == {"n": 0}
    assert app.sequence_id == 0
    assert app.position == "work"
    assert app.get_next_action().name == "work"  # type: ignore[union-attr]

    with pytest.raises(FlakyError):
        await app.astep()
    assert app.sequence_id == 1
    assert app.state.get_all() == {"n": 0}

    outcome = await app.astep()
    assert outcome is not None
    assert outcome[0].name == "work"
    assert app.state.get_all() == {"n": 1}
    assert app.sequence_id == 2
    assert app.get_next_action().name == "after"  # type: ignore[union-attr]


async def test_arun_stops_on_a_failing_action() -> None:
    app = await _flaky_app_builder([True, False]).abuild()
    with pytest.raises(FlakyError):
        await app.arun(halt_after=["after"])
    act, _, state = await app.arun(halt_after=["after"])
    assert act is not None
    assert act.name == "after"
    assert state["n"] == 1
    assert app.sequence_id == 2


async def test_broken_condition_raises_before_anything_changes() -> None:
    @action(reads=[], writes=[])
    def first(state: State) -> State:
        return state

    @action(reads=[], writes=[])
    def second(state: State) -> State:
        return state

    app = await (
        ApplicationBuilder()
        .with_actions(first, second)
        .with_transitions(("first", "second", expr("missing_key > 1")), ("first", "first"))
        .with_state(x=1)
        .with_entrypoint("first")
        .abuild()
    )
    await app.astep()
    with pytest.raises(ConditionError, match="'missing_key'"):
        await app.astep()
    assert app.sequence_id == 0
    assert app.position == "first"
    assert app.state.get_all() == {"x": 1}
    with pytest.raises(ConditionError, match="'missing_key'"):
        await app.arun()
    assert app.sequence_id == 0


# -- the busy guard ----------------------------------------------------------------------------


def _blocking_app_builder(started: anyio.Event, release: anyio.Event) -> ApplicationBuilder:
    @action(reads=[], writes=["done"])
    async def slow(state: State) -> State:
        started.set()
        await release.wait()
        return state.update(done=True)

    return (
        ApplicationBuilder()
        .with_actions(slow)
        .with_transitions(("slow", "slow", default))
        .with_entrypoint("slow")
        .with_identifiers(app_id="busy-app")
    )


async def test_concurrent_astep_raises_application_busy() -> None:
    started, release = anyio.Event(), anyio.Event()
    app = await _blocking_app_builder(started, release).abuild()
    outcomes: list[Any] = []

    async def first_call() -> None:
        outcomes.append(await app.astep())

    async with anyio.create_task_group() as tg:
        tg.start_soon(first_call)
        await started.wait()
        try:
            # fail_after: were the guard missing, the second call would wait for `release`.
            with anyio.fail_after(2):
                with pytest.raises(ApplicationBusyError, match="'busy-app'"):
                    await app.astep()
                with pytest.raises(ApplicationBusyError, match="arun"):
                    await app.arun()
        finally:
            release.set()

    assert len(outcomes) == 1
    assert outcomes[0][2]["done"] is True
    assert app.sequence_id == 0
    # Once the first call is done the app can step again.
    await app.astep()
    assert app.sequence_id == 1


async def test_busy_flag_is_released_after_a_failure() -> None:
    app = await _flaky_app_builder([True, False]).abuild()
    with pytest.raises(FlakyError):
        await app.astep()
    assert await app.astep() is not None


# -- visualize ---------------------------------------------------------------------------------


async def test_visualize_returns_mermaid_and_writes_the_file(tmp_path: Path) -> None:
    app: Application = await chatbot_app()
    await app.astep(inputs={"prompt": "hey"})
    target = tmp_path / "graph.mmd"
    text = app.visualize(target)
    assert text.startswith("flowchart TD")
    for name in ("user_input", "respond", "goodbye"):
        assert name in text
    assert "'exit' in prompt" in text
    assert "style" in text and "user_input stroke-width" in text
    assert target.read_text(encoding="utf-8") == text
    assert app.graph.to_mermaid(highlight="user_input") == text


async def test_aiterate_closed_early_with_aclosing_frees_the_app() -> None:
    app = await counter_app(limit=5)
    async with aclosing(app.aiterate()) as steps:
        async for _ in steps:
            break
    assert app.sequence_id == 0
    outcome = await app.astep()
    assert outcome is not None
    assert app.sequence_id == 1


async def test_breaking_out_of_aiterate_frees_the_app_at_once() -> None:
    app = await counter_app(limit=5)
    async for _ in app.aiterate():
        break  # no aclosing: the generator is left for the garbage collector
    assert app.sequence_id == 0
    outcome = await app.astep()  # not ApplicationBusyError
    assert outcome is not None
    assert app.sequence_id == 1


async def test_astep_inside_an_aiterate_loop_body_is_allowed() -> None:
    app = await counter_app(limit=5)
    seen: list[int | None] = []
    async for _ in app.aiterate(halt_after=["done"]):
        seen.append(app.sequence_id)
        await app.astep()  # the loop body runs between steps, when the app is not busy
    assert seen == [0, 2, 4]  # each loop step and each body step took a number
    assert app.position == "done"
