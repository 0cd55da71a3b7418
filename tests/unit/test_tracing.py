"""burr_async.tracing.OpenTelemetryHook on the in-memory persister: the span tree of each way of
running, the attributes, failures, streams, and contexts that must not leak."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from burr_async import (
    ApplicationBuilder,
    InMemoryPersister,
    PersistenceError,
    State,
    action,
    streaming_action,
)
from tests.spans import Recorder, is_child, names

from ._support import FlakyError, chatbot_builder, counter_builder

pytestmark = pytest.mark.anyio


@pytest.fixture
def rec() -> Recorder:
    return Recorder.new()


async def _counter(rec: Recorder, *, limit: int = 2, **identifiers: Any) -> Any:
    identifiers.setdefault("app_id", "counter")
    return await (
        counter_builder(limit)
        .with_state(count=0)
        .with_entrypoint("increment")
        .with_identifiers(**identifiers)
        .with_state_persister(InMemoryPersister())
        .with_hooks(rec.hook())
        .abuild()
    )


async def test_arun_span_tree_and_attributes(rec: Recorder) -> None:
    app = await _counter(rec, app_id="a1", partition_key="user-7")
    await app.arun(halt_after=["done"])

    call = rec.one("burr_async.arun")
    assert call.parent is None  # no span was current where arun was called
    assert dict(call.attributes or {}) == {
        "burr_async.app_id": "a1",
        "burr_async.partition_key": "user-7",
        "burr_async.method": "arun",
    }
    steps = rec.children(call)
    assert names(steps) == ["increment", "increment", "done"], rec.outline()
    for sequence_id, step in enumerate(steps):
        assert dict(step.attributes or {}) == {
            "burr_async.app_id": "a1",
            "burr_async.partition_key": "user-7",
            "burr_async.sequence_id": sequence_id,
            "burr_async.action": step.name,
            "burr_async.status": "completed",
        }
        assert step.status.status_code is StatusCode.UNSET
        (save,) = rec.children(step)
        assert save.name == "burr_async.save"
        assert dict(save.attributes or {}) == {
            "burr_async.app_id": "a1",
            "burr_async.partition_key": "user-7",
            "burr_async.sequence_id": sequence_id,
            "burr_async.action": step.name,
            "burr_async.backend": "memory",
            "burr_async.persister": "InMemoryPersister",
        }
        # the save happens inside the step, and the step inside the call
        assert step.start_time <= save.start_time <= save.end_time <= step.end_time  # type: ignore[operator]
        assert call.start_time <= step.start_time <= step.end_time <= call.end_time  # type: ignore[operator]
    assert len(rec.spans()) == 1 + 3 * 2
    assert len({s.context.trace_id for s in rec.spans() if s.context}) == 1


async def test_partition_key_none_is_omitted(rec: Recorder) -> None:
    app = await _counter(rec, app_id="no-pk")
    await app.astep()
    for span in rec.spans():
        assert "burr_async.partition_key" not in (span.attributes or {})
        assert (span.attributes or {})["burr_async.app_id"] == "no-pk"


async def test_each_astep_is_a_call_span_with_its_step(rec: Recorder) -> None:
    app = await _counter(rec, limit=5)
    for _ in range(3):
        await app.astep()
    calls = rec.named("burr_async.astep")
    assert len(calls) == 3
    for sequence_id, call in enumerate(calls):
        (step,) = rec.children(call)
        assert step.name == "increment"
        assert (step.attributes or {})["burr_async.sequence_id"] == sequence_id
    assert len({c.context.trace_id for c in calls if c.context}) == 3  # separate traces


async def test_calls_nest_under_the_callers_current_span(rec: Recorder) -> None:
    app = await _counter(rec)
    with rec.tracer.start_as_current_span("GET /chat") as request:
        await app.astep()
        assert trace.get_current_span() is request  # nothing left attached
    outer = rec.one("GET /chat")
    call = rec.one("burr_async.astep")
    assert is_child(call, outer)
    assert is_child(rec.one("increment"), call)


async def test_the_action_runs_with_its_step_span_current(rec: Recorder) -> None:
    seen: list[Any] = []

    @action(reads=[], writes=["x"])
    async def work(state: State) -> State:
        seen.append(trace.get_current_span())
        with rec.tracer.start_as_current_span("llm call"):
            await asyncio.sleep(0)
        return state.update(x=1)

    app = await (
        ApplicationBuilder()
        .with_actions(work)
        .with_transitions()
        .with_entrypoint("work")
        .with_state(x=0)
        .with_hooks(rec.hook())
        .abuild()
    )
    before = trace.get_current_span()
    await app.astep()
    assert trace.get_current_span() is before
    step = rec.one("work")
    assert seen[0].get_span_context().span_id == step.context.span_id  # type: ignore[union-attr]
    assert is_child(rec.one("llm call"), step)
    assert rec.named("burr_async.save") == []  # no persister, no save


async def test_failed_step_has_error_status_and_the_exception(rec: Recorder) -> None:
    @action(reads=[], writes=["x"])
    async def explode(state: State) -> State:
        raise FlakyError("model unavailable")

    persister = InMemoryPersister()
    app = await (
        ApplicationBuilder()
        .with_actions(explode)
        .with_transitions()
        .with_entrypoint("explode")
        .with_state(x=0)
        .with_identifiers(app_id="boom")
        .with_state_persister(persister)
        .with_hooks(rec.hook())
        .abuild()
    )
    with pytest.raises(FlakyError):
        await app.astep()

    step = rec.one("explode")
    assert step.status.status_code is StatusCode.ERROR
    assert "model unavailable" in (step.status.description or "")
    assert (step.attributes or {})["burr_async.status"] == "failed"
    (event,) = [e for e in step.events if e.name == "exception"]
    assert (event.attributes or {})["exception.type"].endswith("FlakyError")
    assert (event.attributes or {})["exception.message"] == "model unavailable"
    call = rec.one("burr_async.astep")
    assert call.status.status_code is StatusCode.ERROR
    assert is_child(step, call)
    (save,) = rec.children(step)  # the failed step is stored too
    assert save.name == "burr_async.save"
    assert save.status.status_code is StatusCode.UNSET


class _FailingSaves(InMemoryPersister):
    async def save(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk full")


async def test_failed_save_is_recorded_on_the_save_and_the_step(rec: Recorder) -> None:
    app = await (
        counter_builder()
        .with_state(count=0)
        .with_entrypoint("increment")
        .with_identifiers(app_id="full")
        .with_state_persister(_FailingSaves())
        .with_hooks(rec.hook())
        .abuild()
    )
    with pytest.raises(PersistenceError):
        await app.astep()
    save = rec.one("burr_async.save")
    assert save.status.status_code is StatusCode.ERROR
    assert [e.name for e in save.events] == ["exception"]
    assert (save.attributes or {})["burr_async.persister"] == "_FailingSaves"
    step = rec.one("increment")
    assert is_child(save, step)
    assert step.status.status_code is StatusCode.ERROR  # ended by its call, with its error
    assert "burr_async.status" not in (step.attributes or {})
    assert rec.one("burr_async.astep").status.status_code is StatusCode.ERROR


@action(reads=[], writes=["prompt"])
def ask(state: State, prompt: str) -> State:
    return state.update(prompt=prompt)


@streaming_action(reads=["prompt"], writes=["response"])
async def reply(state: State) -> AsyncIterator[tuple[dict[str, Any], State | None]]:
    words = state["prompt"].split()
    for word in words:
        await asyncio.sleep(0.01)
        yield {"delta": word}, None
    text = " ".join(words)
    yield {"response": text}, state.update(response=text)


async def _streamer(rec: Recorder, app_id: str = "streamer") -> Any:
    return await (
        ApplicationBuilder()
        .with_actions(ask, reply)
        .with_transitions(("ask", "reply"), ("reply", "ask"))
        .with_entrypoint("ask")
        .with_state(prompt="")
        .with_identifiers(app_id=app_id)
        .with_state_persister(InMemoryPersister())
        .with_hooks(rec.hook())
        .abuild()
    )


async def test_streaming_step_span_covers_the_stream(rec: Recorder) -> None:
    app = await _streamer(rec)
    with rec.tracer.start_as_current_span("request") as request:
        _, container = await app.astream_result(
            halt_after=["reply"], inputs={"prompt": "one two three"}
        )
        assert rec.named("reply") == []  # the stream has not started
        await asyncio.sleep(0.02)
        read: list[int] = []
        async for _ in container:
            read.append(time.time_ns())
            assert trace.get_current_span() is request  # nothing leaks into the reader
        await asyncio.sleep(0.02)
        await container.get()
        done = time.time_ns()

    call = rec.one("burr_async.astream_result")
    step = rec.one("reply")
    assert is_child(call, rec.one("request"))
    assert is_child(rec.one("ask"), call)
    assert is_child(step, call)  # started after the call returned the container
    assert len(read) == 3
    assert call.end_time < step.start_time < read[0]  # type: ignore[operator]
    assert read[-1] < step.end_time <= done  # type: ignore[operator]
    assert (step.attributes or {})["burr_async.status"] == "completed"
    (save,) = rec.children(step)
    assert save.name == "burr_async.save"
    assert save.end_time <= step.end_time  # type: ignore[operator]


async def test_astream_iterate_steps_are_children_of_the_call(rec: Recorder) -> None:
    app = await _streamer(rec)
    async for _act, container in app.astream_iterate(
        halt_after=["reply"], inputs={"prompt": "a b"}
    ):
        async for _ in container:
            assert trace.get_current_span() is trace.INVALID_SPAN
    call = rec.one("burr_async.astream_iterate")
    assert names(rec.children(call)) == ["ask", "reply"]
    assert len(rec.spans()) == 1 + 2 * 2


async def test_a_dropped_stream_ends_its_step_span_as_unfinished(rec: Recorder) -> None:
    app = await _streamer(rec)
    _, container = await app.astream_result(halt_after=["reply"], inputs={"prompt": "x y z"})
    await anext(container)
    await container.aclose()  # abandoned: nothing stored, no post_run_step
    assert rec.named("reply") == []
    await app.astream_result(halt_after=["reply"])  # the next call: the first stream is over
    dropped = rec.one("reply")
    assert dropped.status.status_code is StatusCode.ERROR
    assert "did not finish" in (dropped.status.description or "")
    assert "burr_async.status" not in (dropped.attributes or {})
    assert rec.children(dropped) == []  # never saved


async def test_aiterate_leaves_the_callers_context_alone_between_steps(rec: Recorder) -> None:
    app = await _counter(rec, limit=3)
    with rec.tracer.start_as_current_span("request") as request:
        async for _ in app.aiterate(halt_after=["done"]):
            assert trace.get_current_span() is request
            with rec.tracer.start_as_current_span("loop body"):
                pass
    assert trace.get_current_span() is trace.INVALID_SPAN
    call = rec.one("burr_async.aiterate")
    assert is_child(call, rec.one("request"))
    assert names(rec.children(call)) == ["increment"] * 3 + ["done"]
    for body in rec.named("loop body"):  # the caller's spans stay the caller's
        assert is_child(body, rec.one("request"))


async def test_aiterate_closed_early_ends_its_spans(rec: Recorder) -> None:
    app = await _counter(rec, limit=5)
    with rec.tracer.start_as_current_span("request") as request:
        iterator = app.aiterate(halt_after=["done"])
        await anext(iterator)
        await iterator.aclose()
        assert trace.get_current_span() is request
    call = rec.one("burr_async.aiterate")
    assert names(rec.children(call)) == ["increment"]


async def test_a_call_in_an_aiterate_body_has_its_own_steps(rec: Recorder) -> None:
    app = await _counter(rec, limit=4)
    async for _ in app.aiterate(halt_after=["done"]):
        if app.sequence_id == 0:
            await app.astep()  # the application is not busy between aiterate's steps
    outer = rec.one("burr_async.aiterate")
    inner = rec.one("burr_async.astep")
    assert inner.parent is None  # aiterate's span is never the current one
    assert [(s.attributes or {})["burr_async.sequence_id"] for s in rec.children(inner)] == [1]
    ids = [(s.attributes or {})["burr_async.sequence_id"] for s in rec.children(outer)]
    assert ids == [0, 2, 3, 4]


async def test_concurrent_apps_each_have_their_own_span_tree(rec: Recorder) -> None:
    hook = rec.hook()  # one hook shared by every application
    persister = InMemoryPersister()

    async def run(n: int) -> None:
        app = await (
            counter_builder(3)
            .with_state(count=0)
            .with_entrypoint("increment")
            .with_identifiers(app_id=f"app-{n}")
            .with_state_persister(persister)
            .with_hooks(hook)
            .abuild()
        )
        with rec.tracer.start_as_current_span(f"request-{n}"):
            async for _ in app.aiterate(halt_after=["done"]):
                await asyncio.sleep(0.001 * (n % 3))  # interleave the apps' steps

    await asyncio.gather(*(run(n) for n in range(8)))

    for n in range(8):
        request = rec.one(f"request-{n}")
        (call,) = rec.children(request)
        steps = rec.children(call)
        assert names(steps) == ["increment"] * 3 + ["done"], rec.outline()
        for step in steps:
            assert (step.attributes or {})["burr_async.app_id"] == f"app-{n}"
            (save,) = rec.children(step)
            assert (save.attributes or {})["burr_async.app_id"] == f"app-{n}"
            assert save.context.trace_id == request.context.trace_id  # type: ignore[union-attr]
    assert len(rec.spans()) == 8 * (1 + 1 + 4 * 2)
    assert hook._calls == {} and hook._loose == {}  # nothing left open


async def test_a_cancelled_step_ends_its_span_and_restores_the_context(rec: Recorder) -> None:
    @action(reads=[], writes=["x"])
    async def hang(state: State) -> State:
        await asyncio.sleep(60)
        return state

    app = await (
        ApplicationBuilder()
        .with_actions(hang)
        .with_transitions()
        .with_entrypoint("hang")
        .with_state(x=0)
        .with_hooks(rec.hook())
        .abuild()
    )
    with rec.tracer.start_as_current_span("request") as request:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await app.astep()
        assert trace.get_current_span() is request  # the step's span is not left current
    step = rec.one("hang")
    assert step.status.status_code is StatusCode.ERROR
    assert "did not finish" in (step.status.description or "")
    assert is_child(step, rec.one("burr_async.astep"))


async def test_update_state_save_is_a_child_of_the_current_span(rec: Recorder) -> None:
    app = await _counter(rec)
    with rec.tracer.start_as_current_span("admin"):
        await app.update_state(State({"count": 10}))
    save = rec.one("burr_async.save")
    assert is_child(save, rec.one("admin"))
    assert (save.attributes or {})["burr_async.sequence_id"] == 0
    assert len(rec.spans()) == 2  # no call or step span: no action ran


async def test_works_beside_other_hooks_with_save_wrappers(rec: Recorder) -> None:
    order: list[str] = []

    class Wrapping:
        def post_run_step(self, **kwargs: Any) -> None:
            order.append("post")

        def _around_save(self, saving: Any, store: Any, step: Any) -> Any:
            async def wrapped() -> None:
                order.append("save")
                await saving

            return wrapped()

    app = await (
        chatbot_builder()
        .with_state(chat_history=[])
        .with_entrypoint("user_input")
        .with_state_persister(InMemoryPersister())
        .with_hooks(Wrapping(), rec.hook())
        .abuild()
    )
    await app.astep(inputs={"prompt": "hi"})
    assert order == ["save", "post"]
    assert is_child(rec.one("burr_async.save"), rec.one("user_input"))


def test_without_an_sdk_the_hook_is_a_no_op() -> None:
    """A fresh interpreter: no SDK, no provider set. ``import burr_async`` does not import
    opentelemetry; the hook's spans are the API's non-recording ones."""
    script = textwrap.dedent(
        """
        import asyncio, sys
        import burr_async
        assert not any(m.startswith("opentelemetry") for m in sys.modules), "imported by burr_async"
        from burr_async import InMemoryPersister
        from burr_async.tracing import OpenTelemetryHook
        from opentelemetry import trace
        from tests.unit._support import counter_builder

        seen = []

        class See:
            def pre_run_step(self, **kwargs):  # runs after the tracing hook's
                seen.append(trace.get_current_span())

        async def main():
            app = await (
                counter_builder(2).with_state(count=0).with_entrypoint("increment")
                .with_state_persister(InMemoryPersister())
                .with_hooks(OpenTelemetryHook(), See()).abuild()
            )
            await app.arun(halt_after=["done"])
            assert app.state["count"] == 2, app.state
            assert len(seen) == 3 and not any(s.is_recording() for s in seen), seen
            assert not any(m.startswith("opentelemetry.sdk") for m in sys.modules)
            print("ok")

        asyncio.run(main())
        """
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
