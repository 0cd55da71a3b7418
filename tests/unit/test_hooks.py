"""Lifecycle hooks: what they receive, when they run, and what happens when they raise."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from burr_async import (
    ApplicationBuilder,
    ExecuteMethod,
    HookError,
    InMemoryPersister,
    PostApplicationCreateHook,
    PostApplicationExecuteCallHook,
    PostApplicationExecuteCallHookAsync,
    PostRunStepHook,
    PostRunStepHookAsync,
    PreApplicationExecuteCallHook,
    PreApplicationExecuteCallHookAsync,
    PreRunStepHook,
    PreRunStepHookAsync,
    State,
    action,
)

from ._support import FlakyError, chatbot_builder, counter_builder

pytestmark = pytest.mark.anyio


class AsyncStepRecorder(PreRunStepHookAsync, PostRunStepHookAsync):
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def pre_run_step(self, **kwargs: Any) -> None:  # type: ignore[override]
        self.calls.append(("pre", kwargs))

    async def post_run_step(self, **kwargs: Any) -> None:  # type: ignore[override]
        self.calls.append(("post", kwargs))


class SyncStepRecorder(PreRunStepHook, PostRunStepHook):
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def pre_run_step(self, **kwargs: Any) -> None:
        self.calls.append(("pre", kwargs))

    def post_run_step(self, **kwargs: Any) -> None:
        self.calls.append(("post", kwargs))


class CallRecorder(PreApplicationExecuteCallHookAsync, PostApplicationExecuteCallHook):
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def pre_run_execute_call(self, **kwargs: Any) -> None:  # type: ignore[override]
        self.calls.append(("pre", kwargs))

    def post_run_execute_call(self, **kwargs: Any) -> None:
        self.calls.append(("post", kwargs))


async def _chatbot(*hooks: object) -> Any:
    return await (
        chatbot_builder()
        .with_state(chat_history=[])
        .with_entrypoint("user_input")
        .with_identifiers(app_id="hooked", partition_key="pk")
        .with_hooks(*hooks)
        .abuild()
    )


@pytest.mark.parametrize("recorder_cls", [AsyncStepRecorder, SyncStepRecorder])
async def test_step_hooks_receive_the_documented_arguments(recorder_cls: type[Any]) -> None:
    recorder = recorder_cls()
    app = await _chatbot(recorder)
    await app.astep(inputs={"prompt": "hi", "ignored": 1})

    assert [phase for phase, _ in recorder.calls] == ["pre", "post"]
    pre, post = recorder.calls[0][1], recorder.calls[1][1]
    assert set(pre) == {
        "app_id",
        "partition_key",
        "sequence_id",
        "state",
        "action",
        "inputs",
    }
    assert pre["app_id"] == "hooked"
    assert pre["partition_key"] == "pk"
    assert pre["sequence_id"] == 0
    assert pre["state"].get_all() == {"chat_history": []}
    assert pre["action"].name == "user_input"
    assert pre["inputs"] == {"prompt": "hi"}

    assert set(post) == {
        "app_id",
        "partition_key",
        "sequence_id",
        "state",
        "action",
        "result",
        "exception",
    }
    assert post["app_id"] == "hooked"
    assert post["partition_key"] == "pk"
    assert post["sequence_id"] == 0
    assert post["state"]["prompt"] == "hi"
    assert post["state"] == app.state
    assert post["action"].name == "user_input"
    assert post["result"] == {"prompt": "hi"}
    assert post["exception"] is None

    await app.astep()
    assert recorder.calls[2][1]["sequence_id"] == 1
    assert recorder.calls[3][1]["action"].name == "respond"


async def test_post_step_hook_sees_the_exception_on_failure() -> None:
    @action(reads=[], writes=["x"])
    async def boom(state: State) -> State:
        raise FlakyError("kaboom")

    recorder = AsyncStepRecorder()
    app = await (
        ApplicationBuilder()
        .with_actions(boom)
        .with_state(x=0)
        .with_entrypoint("boom")
        .with_hooks(recorder)
        .abuild()
    )
    with pytest.raises(FlakyError):
        await app.astep()
    assert [phase for phase, _ in recorder.calls] == ["pre", "post"]
    post = recorder.calls[1][1]
    assert isinstance(post["exception"], FlakyError)
    assert post["result"] is None
    assert post["state"].get_all() == {"x": 0}
    assert post["sequence_id"] == 0
    assert post["action"].name == "boom"


async def test_hooks_run_in_order_given() -> None:
    order: list[str] = []

    class Named(PreRunStepHook):
        def __init__(self, name: str) -> None:
            self.name = name

        def pre_run_step(self, **kwargs: Any) -> None:
            order.append(self.name)

    app = await _chatbot(Named("a"), Named("b"))
    await app.astep(inputs={"prompt": "x"})
    assert order == ["a", "b"]


@pytest.mark.parametrize(
    ("method", "call"),
    [
        (ExecuteMethod.astep, "astep"),
        (ExecuteMethod.arun, "arun"),
        (ExecuteMethod.aiterate, "aiterate"),
        (ExecuteMethod.astream_result, "astream_result"),
    ],
)
async def test_execute_call_hooks(method: ExecuteMethod, call: str) -> None:
    recorder = CallRecorder()
    app = await _chatbot(recorder)
    inputs = {"prompt": "hello"}
    if call == "astep":
        await app.astep(inputs=inputs)
    elif call == "arun":
        await app.arun(halt_after=["user_input"], inputs=inputs)
    elif call == "aiterate":
        [_ async for _ in app.aiterate(halt_after=["user_input"], inputs=inputs)]
    else:
        _, container = await app.astream_result(halt_after=["user_input"], inputs=inputs)
        await container.get()

    assert [phase for phase, _ in recorder.calls] == ["pre", "post"]
    pre, post = recorder.calls[0][1], recorder.calls[1][1]
    assert set(pre) == {"app_id", "partition_key", "state", "method"}
    assert pre["method"] is method
    assert pre["app_id"] == "hooked"
    assert pre["partition_key"] == "pk"
    assert pre["state"].get_all() == {"chat_history": []}
    assert set(post) == {"app_id", "partition_key", "state", "method", "exception"}
    assert post["method"] is method
    assert post["exception"] is None
    assert post["state"]["prompt"] == "hello"


async def test_post_execute_call_hook_sees_the_exception() -> None:
    recorder = CallRecorder()
    app = await _chatbot(recorder)
    with pytest.raises(ValueError, match="prompt"):
        await app.astep()
    post = recorder.calls[-1][1]
    assert post["method"] is ExecuteMethod.astep
    assert "prompt" in str(post["exception"])


async def test_async_post_execute_call_hook() -> None:
    seen: list[ExecuteMethod] = []

    class AsyncPost(PostApplicationExecuteCallHookAsync):
        async def post_run_execute_call(self, **kwargs: Any) -> None:  # type: ignore[override]
            seen.append(kwargs["method"])

    class SyncPre(PreApplicationExecuteCallHook):
        def pre_run_execute_call(self, **kwargs: Any) -> None:
            seen.append(kwargs["method"])

    app = await _chatbot(SyncPre(), AsyncPost())
    await app.astep(inputs={"prompt": "a"})
    assert seen == [ExecuteMethod.astep, ExecuteMethod.astep]


async def test_post_application_create_hook_runs_at_abuild() -> None:
    created: list[dict[str, Any]] = []

    class OnCreate(PostApplicationCreateHook):
        def post_application_create(self, **kwargs: Any) -> None:  # type: ignore[override]
            created.append(kwargs)

    class OnCreateAsync(PostApplicationCreateHook):
        async def post_application_create(self, **kwargs: Any) -> None:  # type: ignore[override]
            created.append(kwargs)

    builder = (
        counter_builder()
        .with_state(count=5)
        .with_entrypoint("increment")
        .with_identifiers(app_id="new-app")
        .with_hooks(OnCreate(), OnCreateAsync())
    )
    assert created == []
    app = await builder.abuild()
    assert len(created) == 2
    for kwargs in created:
        assert set(kwargs) == {
            "app_id",
            "partition_key",
            "state",
            "application_graph",
            "parent_pointer",
            "spawning_parent_pointer",
        }
        assert kwargs["app_id"] == "new-app" == app.uid
        assert kwargs["partition_key"] is None
        assert kwargs["state"].get_all() == {"count": 5}
        assert kwargs["application_graph"] is app.graph
        assert kwargs["application_graph"].entrypoint.name == "increment"
        assert kwargs["parent_pointer"] is None
        assert kwargs["spawning_parent_pointer"] is None


# -- hooks that raise --------------------------------------------------------------------------


class ExplodingPreStep(PreRunStepHookAsync):
    async def pre_run_step(self, **kwargs: Any) -> None:  # type: ignore[override]
        raise FlakyError("pre hook broke")


class ExplodingPostStep(PostRunStepHook):
    def post_run_step(self, **kwargs: Any) -> None:
        raise FlakyError("post hook broke")


class ExplodingCall(PreApplicationExecuteCallHook):
    def pre_run_execute_call(self, **kwargs: Any) -> None:
        raise FlakyError("call hook broke")


class ExplodingCreate(PostApplicationCreateHook):
    def post_application_create(self, **kwargs: Any) -> None:  # type: ignore[override]
        raise FlakyError("create hook broke")


async def test_raising_pre_step_hook_is_a_hook_error_and_nothing_changes() -> None:
    app = await _chatbot(ExplodingPreStep())
    with pytest.raises(HookError) as info:
        await app.astep(inputs={"prompt": "x"})
    err = info.value
    assert "ExplodingPreStep" in str(err)
    assert "'user_input'" in str(err)
    assert "'hooked'" in str(err)
    assert isinstance(err.__cause__, FlakyError)
    assert err.action == "user_input"
    assert err.phase == "pre_run_step"
    assert app.sequence_id is None
    assert app.state.get_all() == {"chat_history": []}


async def test_raising_post_step_hook_is_a_hook_error() -> None:
    app = await _chatbot(ExplodingPostStep())
    with pytest.raises(HookError, match=r"ExplodingPostStep.*'user_input'") as info:
        await app.astep(inputs={"prompt": "x"})
    assert isinstance(info.value.__cause__, FlakyError)
    assert str(info.value.__cause__) == "post hook broke"


async def test_raising_execute_call_hook_is_a_hook_error() -> None:
    app = await _chatbot(ExplodingCall())
    with pytest.raises(HookError, match="ExplodingCall") as info:
        await app.astep(inputs={"prompt": "x"})
    assert isinstance(info.value.__cause__, FlakyError)
    assert app.sequence_id is None


async def test_raising_create_hook_is_a_hook_error() -> None:
    builder = (
        counter_builder()
        .with_state(count=0)
        .with_entrypoint("increment")
        .with_identifiers(app_id="doomed")
        .with_hooks(ExplodingCreate())
    )
    with pytest.raises(HookError, match=r"ExplodingCreate.*'doomed'") as info:
        await builder.abuild()
    assert isinstance(info.value.__cause__, FlakyError)


class _SlowPersister(InMemoryPersister):
    """Stores each step after a pause, so that a cancellation arrives while it is saved."""

    async def save(self, *args: Any, **kwargs: Any) -> None:
        await anyio.sleep(0.02)
        await super().save(*args, **kwargs)


class _AwaitingRecorder(AsyncStepRecorder):
    """Records after awaiting, as a hook that exports a span would."""

    async def post_run_step(self, **kwargs: Any) -> None:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        self.calls.append(("post", kwargs))


@pytest.mark.parametrize("how", ["asyncio.timeout", "anyio.move_on_after"])
async def test_post_step_hooks_run_for_a_step_cancelled_while_it_was_saved(how: str) -> None:
    """A tracing hook must see the slow steps too: the step committed, so its hooks run before
    the cancellation goes through."""
    recorder = _AwaitingRecorder()
    persister = _SlowPersister()
    app = await (
        counter_builder(limit=10)
        .with_state(count=0)
        .with_entrypoint("increment")
        .with_hooks(recorder)
        .with_state_persister(persister)
        .abuild()
    )
    if how == "asyncio.timeout":
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await app.astep()
    else:
        with anyio.move_on_after(0.01):
            await app.astep()
    assert app.sequence_id == 0  # the step committed and the application advanced
    assert [phase for phase, _ in recorder.calls] == ["pre", "post"]
    assert recorder.calls[1][1]["sequence_id"] == 0


# -- keyword dispatch: a hook is given what it declares -----------------------------------------


async def test_a_hook_without_kwargs_gets_only_the_keywords_it_names() -> None:
    seen: list[tuple[str, Any]] = []

    class Narrow(PreRunStepHook, PostRunStepHookAsync, PostApplicationCreateHook):
        def pre_run_step(self, *, action: Any) -> None:  # type: ignore[override]
            seen.append(("pre", action.name))

        async def post_run_step(self, *, sequence_id: int, result: Any) -> None:  # type: ignore[override]
            seen.append(("post", (sequence_id, result)))

        def post_application_create(  # type: ignore[override]
            self, *, app_id: str, application_graph: Any, parent_pointer: Any
        ) -> None:
            seen.append(("create", (app_id, application_graph.entrypoint.name, parent_pointer)))

    app = await _chatbot(Narrow())
    await app.astep(inputs={"prompt": "hi"})
    assert seen == [
        ("create", ("hooked", "user_input", None)),
        ("pre", "user_input"),
        ("post", (0, {"prompt": "hi"})),
    ]


async def test_post_application_create_receives_the_fork_parent_pointer() -> None:
    from burr_async import ParentPointer

    created: list[dict[str, Any]] = []

    class OnCreate(PostApplicationCreateHook):
        def post_application_create(self, **kwargs: Any) -> None:  # type: ignore[override]
            created.append(kwargs)

    persister = InMemoryPersister()
    source = await (
        counter_builder()
        .initialize_from(persister, True, {"count": 0}, "increment")
        .with_state_persister(persister)
        .with_identifiers(app_id="source", partition_key="p")
        .abuild()
    )
    await source.astep()
    fork = await (
        counter_builder()
        .initialize_from(
            persister, True, {}, "increment", fork_from_app_id="source", fork_from_partition_key="p"
        )
        .with_state_persister(persister)
        .with_identifiers(app_id="fork", partition_key="p")
        .with_hooks(OnCreate())
        .abuild()
    )
    assert created[0]["parent_pointer"] == ParentPointer("source", "p", 0) == fork.parent_pointer
    assert created[0]["spawning_parent_pointer"] is None
    assert created[0]["application_graph"] is fork.graph


async def test_burr_style_hook_ports_unchanged() -> None:
    """A hook written against Burr's signature (keyword arguments plus **future_kwargs)."""
    lines: list[str] = []

    class PrintStepHook(PostRunStepHook, PreRunStepHook):
        def pre_run_step(self, action: Any, **future_kwargs: Any) -> None:
            lines.append(f"pre {action.name}")

        def post_run_step(
            self, *, state: State, action: Any, result: dict[str, Any], **future_kwargs: Any
        ) -> None:
            lines.append(f"post {action.name} {sorted(result)}")

    app = await _chatbot(PrintStepHook())
    await app.arun(halt_after=["respond"], inputs={"prompt": "x"})
    assert lines == [
        "pre user_input",
        "post user_input ['prompt']",
        "pre respond",
        "post respond ['response']",
    ]
