"""Streaming actions and astream_result."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import pytest

from burr_async import (
    ApplicationBuilder,
    ApplicationBusyError,
    AsyncStreamingResultContainer,
    ExecuteMethod,
    GraphValidationError,
    InMemoryPersister,
    InvalidActionResultError,
    MissingInputError,
    PostApplicationExecuteCallHook,
    PreApplicationExecuteCallHook,
    State,
    StreamingAction,
    StreamingFunctionAction,
    StreamingResultContainer,
    UndeclaredWriteError,
    action,
    streaming_action,
)

from ._support import FlakyError

pytestmark = pytest.mark.anyio


@action(reads=[], writes=["prompt"])
def ask(state: State, prompt: str) -> State:
    return state.update(prompt=prompt)


@streaming_action(reads=["prompt"], writes=["response"])
async def stream_reply(state: State) -> AsyncIterator[tuple[dict[str, Any], State | None]]:
    words = state["prompt"].split()
    for word in words:
        yield {"delta": word}, None
    text = " ".join(words)
    yield {"response": text}, state.update(response=text)


@streaming_action(reads=["prompt"], writes=["response"])
def sync_stream_reply(state: State) -> Iterator[tuple[dict[str, Any], State | None]]:
    yield {"delta": "s"}, None
    yield {"response": "sync"}, state.update(response="sync")


class ClassStream(StreamingAction):
    @property
    def reads(self) -> list[str]:
        return ["prompt"]

    @property
    def writes(self) -> list[str]:
        return ["response"]

    async def stream_run(self, state: State, **run_kwargs: Any) -> AsyncIterator[dict[str, Any]]:
        for char in state["prompt"]:
            yield {"char": char}
        yield {"response": state["prompt"].upper()}

    def update(self, result: dict[str, Any], state: State) -> State:
        return state.update(response=result["response"])


async def _app(reply: Any = stream_reply, persister: InMemoryPersister | None = None) -> Any:
    builder = (
        ApplicationBuilder()
        .with_actions(ask, reply=reply)
        .with_transitions(("ask", "reply"), ("reply", "ask"))
        .with_entrypoint("ask")
        .with_identifiers(app_id="streamer")
    )
    if persister is not None:
        builder.with_state_persister(persister)
    return await builder.abuild()


def test_streaming_action_decorator() -> None:
    assert isinstance(stream_reply, StreamingFunctionAction)
    assert stream_reply.streaming is True
    assert ClassStream().streaming is True


async def test_astream_result_yields_partials_then_final() -> None:
    persister = InMemoryPersister()
    app = await _app(persister=persister)
    act, container = await app.astream_result(halt_after=["reply"], inputs={"prompt": "a b c"})
    assert act is not None
    assert act.name == "reply"
    assert isinstance(container, StreamingResultContainer)
    # ask ran and is stored; reply has not run yet.
    assert app.position == "ask"
    assert [row.position for row in await persister.history(None, "streamer")] == ["ask"]

    partials = [partial async for partial in container]
    assert partials == [{"delta": "a"}, {"delta": "b"}, {"delta": "c"}]
    result, state = await container.get()
    assert result == {"response": "a b c"}
    assert state.get_all() == {"prompt": "a b c", "response": "a b c"}
    assert app.state == state
    assert app.position == "reply"
    assert app.sequence_id == 1

    rows = await persister.history(None, "streamer")
    assert [(r.sequence_id, r.position, r.status) for r in rows] == [
        (0, "ask", "completed"),
        (1, "reply", "completed"),
    ]
    assert rows[1].state["response"] == "a b c"


async def test_get_without_iterating_drains_the_stream() -> None:
    app = await _app()
    _, container = await app.astream_result(halt_after=["reply"], inputs={"prompt": "x y"})
    result, state = await container.get()
    assert result == {"response": "x y"}
    assert state["response"] == "x y"
    assert await container.get() == (result, state)
    assert [p async for p in container] == []


async def test_breaking_out_early_then_get_finishes_and_records_the_step() -> None:
    persister = InMemoryPersister()
    app = await _app(persister=persister)
    _, container = await app.astream_result(halt_after=["reply"], inputs={"prompt": "a b c"})
    async for partial in container:
        assert partial == {"delta": "a"}
        break
    async for partial in container:  # the loop can be resumed where it stopped
        assert partial == {"delta": "b"}
        break
    assert app.position == "ask"  # not recorded yet: the stream has not ended
    result, state = await container.get()  # drains "c" and records the step
    assert result == {"response": "a b c"}
    assert app.state == state
    assert [r.position for r in await persister.history(None, "streamer")] == ["ask", "reply"]
    assert await app.astep(inputs={"prompt": "next"}) is not None  # not busy any more


async def test_non_streaming_halt_action_returns_a_finished_container() -> None:
    persister = InMemoryPersister()
    app = await _app(persister=persister)
    act, container = await app.astream_result(halt_after=["ask"], inputs={"prompt": "q"})
    assert act is not None
    assert act.name == "ask"
    assert app.position == "ask"
    assert len(await persister.history(None, "streamer")) == 1
    assert [p async for p in container] == []
    result, state = await container.get()
    assert result == {}
    assert state.get_all() == {"prompt": "q"}


async def test_astream_result_halt_before() -> None:
    app = await _app()
    act, container = await app.astream_result(
        halt_after=["reply"], halt_before=["ask"], inputs={"prompt": "q"}
    )
    assert act is not None
    assert act.name == "ask"
    assert app.sequence_id is None
    assert await container.get() == (None, app.state)


async def test_astep_on_a_streaming_action_drains_it() -> None:
    app = await _app()
    await app.astep(inputs={"prompt": "one two"})
    outcome = await app.astep()
    assert outcome is not None
    act, result, state = outcome
    assert act.name == "reply"
    assert result == {"response": "one two"}
    assert state["response"] == "one two"
    assert app.sequence_id == 1


async def test_arun_through_a_streaming_action() -> None:
    app = await _app()
    act, result, _ = await app.arun(halt_after=["reply"], inputs={"prompt": "p q"})
    assert act is not None
    assert act.name == "reply"
    assert result == {"response": "p q"}


async def test_sync_generator_streaming_action() -> None:
    app = await _app(reply=sync_stream_reply)
    _, container = await app.astream_result(halt_after=["reply"], inputs={"prompt": "z"})
    assert [p async for p in container] == [{"delta": "s"}]
    assert (await container.get())[1]["response"] == "sync"


async def test_class_based_streaming_action() -> None:
    persister = InMemoryPersister()
    app = await _app(reply=ClassStream(), persister=persister)
    act, container = await app.astream_result(halt_after=["reply"], inputs={"prompt": "hi"})
    assert act is not None
    assert act.name == "reply"
    assert [p async for p in container] == [{"char": "h"}, {"char": "i"}]
    result, state = await container.get()
    assert result == {"response": "HI"}
    assert state["response"] == "HI"
    assert (await persister.load(None, "streamer")).position == "reply"  # type: ignore[union-attr]

    # astep drains the class-based stream too.
    await app.astep(inputs={"prompt": "yo"})
    outcome = await app.astep()
    assert outcome is not None
    assert outcome[1] == {"response": "YO"}


async def test_class_based_streaming_action_yielding_nothing_is_invalid() -> None:
    class Empty(ClassStream):
        async def stream_run(self, state: State, **run_kwargs: Any) -> AsyncIterator[Any]:
            return
            yield

    app = await _app(reply=Empty())
    await app.astep(inputs={"prompt": "x"})
    with pytest.raises(InvalidActionResultError, match="'reply'"):
        await app.astep()


async def test_streaming_action_yielding_a_bad_item_names_the_action() -> None:
    @streaming_action(reads=[], writes=["response"])
    async def bad(state: State) -> AsyncIterator[Any]:
        yield "not a tuple"

    app = await _app(reply=bad)
    await app.astep(inputs={"prompt": "x"})
    _, container = await app.astream_result(halt_after=["reply"])
    with pytest.raises(InvalidActionResultError, match="'reply'"):
        await container.get()
    assert app.position == "reply"
    assert app.state.get_all() == {"prompt": "x"}


async def test_streaming_action_without_final_state_is_invalid() -> None:
    @streaming_action(reads=[], writes=["response"])
    async def unfinished(state: State) -> AsyncIterator[Any]:
        yield {"partial": 1}, None

    app = await _app(reply=unfinished)
    await app.astep(inputs={"prompt": "x"})
    with pytest.raises(InvalidActionResultError, match="'reply'"):
        await app.astep()


async def test_streaming_action_failing_mid_stream_records_a_failed_step() -> None:
    @streaming_action(reads=[], writes=["response"])
    async def breaks(state: State) -> AsyncIterator[Any]:
        yield {"partial": 1}, None
        raise FlakyError("stream broke")

    persister = InMemoryPersister()
    app = await _app(reply=breaks, persister=persister)
    _, container = await app.astream_result(halt_after=["reply"], inputs={"prompt": "x"})
    partials: list[dict[str, Any]] = []

    async def consume() -> None:
        async for partial in container:
            partials.append(partial)

    with pytest.raises(FlakyError, match="stream broke"):
        await consume()
    assert partials == [{"partial": 1}]
    assert app.position == "reply"
    assert app.sequence_id == 1
    assert app.state.get_all() == {"prompt": "x"}
    last = await persister.load(None, "streamer")
    assert last is not None
    assert (last.sequence_id, last.status) == (1, "failed")
    assert "stream broke" in (last.error or "")


async def test_streaming_undeclared_write_names_action_and_key() -> None:
    @streaming_action(reads=[], writes=["response"])
    async def sneaky(state: State) -> AsyncIterator[Any]:
        yield {}, state.update(response=1, other=2)

    app = await _app(reply=sneaky)
    await app.astep(inputs={"prompt": "x"})
    _, container = await app.astream_result(halt_after=["reply"])
    with pytest.raises(UndeclaredWriteError, match=r"'reply'.*'other'"):
        await container.get()


async def test_missing_input_of_a_streaming_action_is_raised_by_astream_result() -> None:
    @streaming_action(reads=[], writes=["response"])
    async def needs_topic(state: State, topic: str) -> AsyncIterator[Any]:
        yield {"response": topic}, state.update(response=topic)

    app = await _app(reply=needs_topic)
    await app.astep(inputs={"prompt": "x"})
    with pytest.raises(MissingInputError, match=r"'reply'.*'topic'"):
        await app.astream_result(halt_after=["reply"])
    assert app.sequence_id == 0


async def test_calling_the_app_while_a_stream_is_consumed_is_busy() -> None:
    persister = InMemoryPersister()
    app = await _app(persister=persister)
    _, container = await app.astream_result(halt_after=["reply"], inputs={"prompt": "a b"})
    async for _ in container:
        with pytest.raises(ApplicationBusyError, match="'streamer'"):
            await app.astep(inputs={"prompt": "again"})
    result, state = await container.get()
    assert result == {"response": "a b"}
    assert state["response"] == "a b"
    assert app.sequence_id == 1
    # The flag is released once the stream has ended.
    await app.astep(inputs={"prompt": "next"})
    assert [r.position for r in await persister.history(None, "streamer")] == [
        "ask",
        "reply",
        "ask",
    ]


async def test_a_stream_gone_stale_does_not_run_its_action_again() -> None:
    persister = InMemoryPersister()
    app = await _app(persister=persister)
    _, container = await app.astream_result(halt_after=["reply"], inputs={"prompt": "a b"})
    outcome = await app.astep()
    assert outcome is not None
    assert outcome[0].name == "reply"
    with pytest.raises(ApplicationBusyError, match="'reply'"):
        await container.get()
    assert app.sequence_id == 1
    assert app.get_next_action().name == "ask"  # type: ignore[union-attr]
    assert [r.position for r in await persister.history(None, "streamer")] == ["ask", "reply"]


def _closing_stream(log: list[str]) -> Any:
    @streaming_action(reads=[], writes=["text"])
    async def speak(state: State) -> AsyncIterator[tuple[dict[str, Any], State | None]]:
        try:
            for word in ("a", "b", "c"):
                yield {"delta": word}, None
            yield {"text": "abc"}, state.update(text="abc")
            log.append("after the final item")  # never: the step ends at the final item
        finally:
            log.append("closed")

    return speak


async def _speaking_app(log: list[str], persister: InMemoryPersister) -> Any:
    return await (
        ApplicationBuilder()
        .with_actions(speak=_closing_stream(log))
        .with_transitions(("speak", "speak"))
        .with_entrypoint("speak")
        .with_state_persister(persister)
        .with_identifiers(app_id="talker")
        .abuild()
    )


async def test_the_actions_generator_is_closed_when_the_step_ends() -> None:
    log: list[str] = []
    app = await _speaking_app(log, InMemoryPersister())
    await app.astep()
    assert log == ["closed"]  # its finally ran at the end of the step, not at garbage collection
    _, container = await app.astream_result(halt_after=["speak"])
    assert [p async for p in container] == [{"delta": "a"}, {"delta": "b"}, {"delta": "c"}]
    assert log == ["closed", "closed"]


async def test_an_abandoned_stream_is_closed_by_aclose_and_stores_nothing() -> None:
    log: list[str] = []
    persister = InMemoryPersister()
    app = await _speaking_app(log, persister)
    _, container = await app.astream_result(halt_after=["speak"])
    async with container:
        assert await anext(container) == {"delta": "a"}
    assert log == ["closed"]
    assert await persister.history(None, "talker") == []
    assert app.sequence_id is None
    await app.astep()  # the application is free again, and runs the action afresh
    assert app.sequence_id == 0


async def test_aclose_after_the_stream_ended_keeps_the_result() -> None:
    app = await _speaking_app([], InMemoryPersister())
    _, container = await app.astream_result(halt_after=["speak"])
    result, state = await container.get()
    await container.aclose()
    assert (result, state["text"]) == ({"text": "abc"}, "abc")
    assert await container.get() == (result, state)


# -- astream_iterate ---------------------------------------------------------------------------


def test_async_streaming_result_container_is_burrs_name() -> None:
    assert AsyncStreamingResultContainer is StreamingResultContainer


async def _persisted_app() -> tuple[Any, InMemoryPersister]:
    persister = InMemoryPersister()
    return await _app(persister=persister), persister


async def test_astream_iterate_yields_each_step_with_its_container() -> None:
    app, persister = await _persisted_app()
    seen: list[tuple[str, list[dict[str, Any]], Any]] = []
    async for act, container in app.astream_iterate(
        halt_after=["reply"], inputs={"prompt": "hello big world"}
    ):
        partials = [partial async for partial in container]
        result, _ = await container.get()
        seen.append((act.name, partials, result))
    assert seen == [
        ("ask", [], {}),  # ask returns only a State: its result is {}
        (
            "reply",
            [{"delta": "hello"}, {"delta": "big"}, {"delta": "world"}],
            {"response": "hello big world"},
        ),
    ]
    assert app.state["response"] == "hello big world"
    assert [row.position for row in await persister.history(None, "streamer")] == ["ask", "reply"]


async def test_astream_iterate_non_streaming_step_has_already_run() -> None:
    app, _ = await _persisted_app()
    async for act, container in app.astream_iterate(halt_after=["ask"], inputs={"prompt": "x"}):
        assert act.name == "ask"
        assert app.sequence_id == 0  # the step ran before the container was handed out
        assert [p async for p in container] == []
        result, state = await container.get()
        assert result == {} and state["prompt"] == "x"


async def test_astream_iterate_finishes_a_container_the_body_did_not_read() -> None:
    app, persister = await _persisted_app()
    names = [
        act.name
        async for act, _ in app.astream_iterate(halt_after=["reply"], inputs={"prompt": "a b"})
    ]
    assert names == ["ask", "reply"]
    assert app.state["response"] == "a b"
    assert len(await persister.history(None, "streamer")) == 2


async def test_astream_iterate_halts_before_and_by_tag() -> None:
    @streaming_action(reads=["prompt"], writes=["response"], tags=["llm"])
    async def tagged_reply(state: State) -> AsyncIterator[tuple[dict[str, Any], State | None]]:
        yield {"delta": "d"}, None
        yield {"response": "r"}, state.update(response="r")

    app = await _app(reply=tagged_reply)
    names = [
        act.name
        async for act, _ in app.astream_iterate(halt_before=["@tag:llm"], inputs={"prompt": "p"})
    ]
    assert names == ["ask"]
    assert app.get_next_action().name == "reply"
    names = [act.name async for act, _ in app.astream_iterate(halt_after="@tag:llm")]
    assert names == ["reply"]
    assert app.state["response"] == "r"
    # Halts are checked before the first step too: nothing runs.
    assert [a async for a in app.astream_iterate(halt_before=["ask"])] == []
    with pytest.raises(GraphValidationError, match="'nope'"):
        async for _ in app.astream_iterate(halt_after=["@tag:nope"]):
            pass


async def test_astream_iterate_a_closed_container_abandons_the_step_and_ends_the_loop() -> None:
    app, persister = await _persisted_app()
    names = []
    async for act, container in app.astream_iterate(
        halt_after=["reply"], inputs={"prompt": "a b c"}
    ):
        names.append(act.name)
        if act.name == "reply":
            assert await anext(container) == {"delta": "a"}
            await container.aclose()
    assert names == ["ask", "reply"]
    assert app.sequence_id == 0 and app.position == "ask"
    assert len(await persister.history(None, "streamer")) == 1
    # The next call runs the abandoned action again, from the start.
    _, container = await app.astream_result(halt_after=["reply"])
    assert await anext(container) == {"delta": "a"}


async def test_astream_iterate_closing_the_loop_closes_a_half_read_stream() -> None:
    app, _ = await _persisted_app()
    loop = app.astream_iterate(halt_after=["reply"], inputs={"prompt": "a b c"})
    async with aclosing(loop):
        async for act, container in loop:
            if act.name == "reply":
                await anext(container)
                break
    assert not app._busy
    assert app.sequence_id == 0
    await app.astep()  # free for the next call, which runs reply again
    assert app.state["response"] == "a b c"


async def test_astream_iterate_a_failing_stream_raises_from_the_loop() -> None:
    @streaming_action(reads=["prompt"], writes=["response"])
    async def breaks(state: State) -> AsyncIterator[tuple[dict[str, Any], State | None]]:
        yield {"delta": "ok"}, None
        raise FlakyError("stream broke")

    persister = InMemoryPersister()
    app = await _app(reply=breaks, persister=persister)
    with pytest.raises(FlakyError, match="stream broke"):
        async for _act, _container in app.astream_iterate(
            halt_after=["reply"], inputs={"prompt": "p"}
        ):
            pass
    rows = await persister.history(None, "streamer")
    assert [(r.position, r.status) for r in rows] == [("ask", "completed"), ("reply", "failed")]


async def test_astream_iterate_runs_the_execute_call_hooks_once() -> None:
    calls: list[tuple[str, ExecuteMethod]] = []

    class Calls(PreApplicationExecuteCallHook, PostApplicationExecuteCallHook):
        def pre_run_execute_call(self, *, method: ExecuteMethod, **kwargs: Any) -> None:
            calls.append(("pre", method))

        def post_run_execute_call(self, *, method: ExecuteMethod, **kwargs: Any) -> None:
            calls.append(("post", method))

    app = await (
        ApplicationBuilder()
        .with_actions(ask, reply=stream_reply)
        .with_transitions(("ask", "reply"), ("reply", "ask"))
        .with_entrypoint("ask")
        .with_hooks(Calls())
        .abuild()
    )
    async for _ in app.astream_iterate(halt_after=["reply"], inputs={"prompt": "p"}):
        pass
    assert calls == [
        ("pre", ExecuteMethod.astream_iterate),
        ("post", ExecuteMethod.astream_iterate),
    ]


async def test_astream_result_accepts_tags() -> None:
    @streaming_action(reads=["prompt"], writes=["response"], tags=["llm"])
    async def tagged_reply(state: State) -> AsyncIterator[tuple[dict[str, Any], State | None]]:
        yield {"response": "r"}, state.update(response="r")

    app = await _app(reply=tagged_reply)
    act, container = await app.astream_result(halt_after=["@tag:llm"], inputs={"prompt": "p"})
    assert act is not None and act.name == "reply"
    assert (await container.get())[0] == {"response": "r"}
