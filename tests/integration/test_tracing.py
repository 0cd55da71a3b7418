"""burr_async.tracing.OpenTelemetryHook on SQLite and Postgres: the save spans of the SQL
persister (its backend, the group commit each save joined and waited for), and the span trees
of steps, failures, streams and concurrent applications on a real database."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from burr_async import (
    ApplicationBuilder,
    Result,
    SQLAlchemyPersister,
    State,
    action,
    default,
    expr,
    streaming_action,
)
from tests.integration._chat import check, counter
from tests.spans import Recorder, is_child, names

pytestmark = pytest.mark.anyio


def _backend(persister: SQLAlchemyPersister) -> str:
    return str(persister.engine.dialect.name)


def _chat_builder(persister: SQLAlchemyPersister, app_id: str) -> ApplicationBuilder:
    """The integration tests' counter -> check graph, new, on ``persister``."""
    return (
        ApplicationBuilder()
        .with_actions(counter, check, done=Result("count", "log"))
        .with_transitions(
            ("counter", "check", default),
            ("check", "done", expr("count >= 3")),
            ("check", "counter", default),
        )
        .with_state(count=0, log=[])
        .with_entrypoint("counter")
        .with_state_persister(persister)
        .with_identifiers(app_id=app_id, partition_key="tester")
    )


@pytest.fixture
def rec() -> Recorder:
    return Recorder.new()


async def test_span_tree_with_save_spans(persister: SQLAlchemyPersister, rec: Recorder) -> None:
    app_id = str(uuid.uuid4())
    app = await _chat_builder(persister, app_id).with_hooks(rec.hook()).abuild()
    with rec.tracer.start_as_current_span("POST /chat") as request:
        await app.arun(halt_after=["done"])
        assert trace.get_current_span() is request

    call = rec.one("burr_async.arun")
    assert is_child(call, rec.one("POST /chat"))
    steps = rec.children(call)
    assert names(steps) == ["counter", "check"] * 3 + ["done"], rec.outline()
    for sequence_id, step in enumerate(steps):
        attributes = dict(step.attributes or {})
        assert attributes == {
            "burr_async.app_id": app_id,
            "burr_async.partition_key": "tester",
            "burr_async.sequence_id": sequence_id,
            "burr_async.action": step.name,
            "burr_async.status": "completed",
        }
        (save,) = rec.children(step)
        assert save.name == "burr_async.save"
        assert dict(save.attributes or {}) == {
            "burr_async.app_id": app_id,
            "burr_async.partition_key": "tester",
            "burr_async.sequence_id": sequence_id,
            "burr_async.action": step.name,
            "burr_async.backend": _backend(persister),
            "burr_async.persister": "SQLAlchemyPersister",
            "burr_async.commit.batch_size": 1,  # one app alone: each row commits by itself
        }
        assert step.start_time <= save.start_time <= save.end_time <= step.end_time  # type: ignore[operator]
    assert _backend(persister) in ("sqlite", "postgresql")


async def test_failed_step_on_the_database(persister: SQLAlchemyPersister, rec: Recorder) -> None:
    app_id = str(uuid.uuid4())
    app = await _chat_builder(persister, app_id).with_hooks(rec.hook()).abuild()
    await app.astep()
    with pytest.raises(RuntimeError, match="check failed"):
        await app.astep(inputs={"fail": True})

    step = rec.named("check")[0]
    assert step.status.status_code is StatusCode.ERROR
    assert (step.attributes or {})["burr_async.status"] == "failed"
    (event,) = step.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "RuntimeError"
    assert is_child(step, rec.named("burr_async.astep")[1])
    (save,) = rec.children(step)  # the failed step is stored, and its save traced
    assert save.status.status_code is StatusCode.UNSET
    assert (save.attributes or {})["burr_async.commit.batch_size"] == 1
    stored = await persister.load("tester", app_id)
    assert stored is not None and stored["status"] == "failed"


@action(reads=[], writes=["prompt"])
def ask(state: State, prompt: str) -> State:
    return state.update(prompt=prompt)


@streaming_action(reads=["prompt"], writes=["response"])
async def reply(state: State) -> AsyncIterator[tuple[dict[str, Any], State | None]]:
    for word in state["prompt"].split():
        await asyncio.sleep(0.01)
        yield {"delta": word}, None
    yield {"response": state["prompt"]}, state.update(response=state["prompt"])


async def test_streaming_step_on_the_database(
    persister: SQLAlchemyPersister, rec: Recorder
) -> None:
    app = await (
        ApplicationBuilder()
        .with_actions(ask, reply)
        .with_transitions(("ask", "reply"), ("reply", "ask"))
        .with_entrypoint("ask")
        .with_state(prompt="")
        .with_identifiers(app_id=str(uuid.uuid4()))
        .with_state_persister(persister)
        .with_hooks(rec.hook())
        .abuild()
    )
    with rec.tracer.start_as_current_span("request") as request:
        _, container = await app.astream_result(halt_after=["reply"], inputs={"prompt": "a b c"})
        read: list[int] = []
        async for _ in container:
            read.append(time.time_ns())
            assert trace.get_current_span() is request
        await container.get()

    call = rec.one("burr_async.astream_result")
    step = rec.one("reply")
    assert is_child(step, call) and is_child(call, rec.one("request"))
    assert step.start_time < read[0] and read[-1] < step.end_time  # type: ignore[operator]
    (save,) = rec.children(step)
    assert (save.attributes or {})["burr_async.backend"] == _backend(persister)
    assert read[-1] < save.start_time  # type: ignore[operator]  # saved once the stream ends


async def test_concurrent_apps_share_a_group_commit_but_not_their_spans(
    persister: SQLAlchemyPersister, rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first row's write is held up, so the other apps' rows queue behind it and commit
    together: each of their saves says it joined a commit of 4 rows and lasted as long as it
    waited for it. Each app's spans stay in its own request's trace."""
    dialect = persister._writer.dialect
    insert_one = dialect.insert_one
    held = {"first": True}

    async def slow_first(driver: Any, row: Any) -> bool:
        if held["first"]:
            held["first"] = False
            await asyncio.sleep(0.3)
        return await insert_one(driver, row)

    monkeypatch.setattr(dialect, "insert_one", slow_first)
    hook = rec.hook()
    apps = []
    for n in range(5):
        app_id = f"{uuid.uuid4()}-{n}"
        apps.append(await _chat_builder(persister, app_id).with_hooks(hook).abuild())

    async def run(n: int) -> None:
        with rec.tracer.start_as_current_span(f"request-{n}") as request:
            async for _ in apps[n].aiterate(halt_after=["check"]):
                assert trace.get_current_span() is request  # nothing leaks between steps

    await asyncio.gather(*(run(n) for n in range(5)))

    first_saves = []
    for n, app in enumerate(apps):
        request = rec.one(f"request-{n}")
        (call,) = rec.children(request)
        assert call.name == "burr_async.aiterate"
        steps = rec.children(call)
        assert names(steps) == ["counter", "check"], rec.outline()
        for step in steps:
            assert (step.attributes or {})["burr_async.app_id"] == app.uid
            (save,) = rec.children(step)
            assert (save.attributes or {})["burr_async.app_id"] == app.uid
            assert save.context.trace_id == request.context.trace_id  # type: ignore[union-attr]
        first_saves.append(rec.children(steps[0])[0])
    sizes = sorted((s.attributes or {})["burr_async.commit.batch_size"] for s in first_saves)
    assert sizes == [1, 4, 4, 4, 4], rec.outline()
    for save in first_saves:
        if (save.attributes or {})["burr_async.commit.batch_size"] == 4:
            waited = (save.end_time or 0) - (save.start_time or 0)
            assert waited > 0.2e9  # the span covers the wait for the held-up commit
    assert hook._calls == {} and hook._loose == {}
