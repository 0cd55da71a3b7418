"""ApplicationContext: what an action learns through __context and ApplicationContext.get()."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from burr_async import (
    ApplicationBuilder,
    ApplicationContext,
    InMemoryPersister,
    State,
    action,
    streaming_action,
)

from ._support import counter_app, single_action_app

pytestmark = pytest.mark.anyio


def _context(**changes: Any) -> ApplicationContext:
    values: dict[str, Any] = {
        "app_id": "a",
        "partition_key": None,
        "sequence_id": 0,
        "action_name": "x",
    }
    return ApplicationContext(**{**values, **changes})


def test_the_context_is_a_frozen_dataclass() -> None:
    context = _context()
    assert dataclasses.is_dataclass(context)
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.app_id = "b"  # type: ignore[misc]
    assert context == _context()
    assert context.state_persister is None and context.state_initializer is None
    assert {f.name for f in dataclasses.fields(ApplicationContext)} == {
        "app_id",
        "partition_key",
        "sequence_id",
        "action_name",
        "state_persister",
        "state_initializer",
        "first_attempt_sequence_id",
    }


def test_get_is_none_outside_an_action_and_the_context_manager_nests() -> None:
    assert ApplicationContext.get() is None
    outer, inner = _context(app_id="outer"), _context(app_id="inner")
    with outer as entered:
        assert entered is outer
        assert ApplicationContext.get() is outer
        with inner:
            assert ApplicationContext.get() is inner
        assert ApplicationContext.get() is outer
    assert ApplicationContext.get() is None


def _deep_helper() -> ApplicationContext | None:
    """Code several calls down, which was not handed the context."""
    return ApplicationContext.get()


@action(reads=[], writes=["seen"])
async def looks_it_up(state: State) -> State:
    await anyio.lowlevel.checkpoint()
    found = _deep_helper()
    assert found is not None
    return state.update(seen=(found.app_id, found.sequence_id, found.action_name))


@streaming_action(reads=[], writes=["seen"])
async def streams_and_looks(state: State) -> AsyncIterator[tuple[dict[str, Any], State | None]]:
    first = _deep_helper()
    yield {"partial": 1}, None
    second = _deep_helper()
    assert first is not None and second is not None
    yield {}, state.update(seen=(first.action_name, second.sequence_id))


async def test_get_inside_an_action_returns_its_context() -> None:
    app = await single_action_app(looks_it_up, name="look")
    await app.astep()
    assert app.state["seen"] == (app.uid, 0, "look")
    assert ApplicationContext.get() is None


async def test_get_inside_a_streaming_action_between_partial_results() -> None:
    app = await single_action_app(streams_and_looks, name="stream")
    _, container = await app.astream_result(halt_after=["stream"])
    async for _ in container:
        assert ApplicationContext.get() is None  # the caller's code does not see it
    await container.get()
    assert app.state["seen"] == ("stream", 0)


async def test_concurrent_applications_each_see_their_own_context() -> None:
    apps = [await single_action_app(looks_it_up, name="look") for _ in range(5)]
    async with anyio.create_task_group() as tg:
        for app in apps:
            tg.start_soon(app.astep)
    for app in apps:
        assert app.state["seen"][0] == app.uid


async def test_the_context_carries_the_persister_and_initializer_given() -> None:
    persister = InMemoryPersister()
    seen: list[tuple[object, object]] = []

    @action(reads=[], writes=[])
    def grab(state: State, __context: ApplicationContext) -> State:
        seen.append((__context.state_persister, __context.state_initializer))
        return state

    app = await (
        ApplicationBuilder()
        .with_actions(grab)
        .with_transitions(("grab", "grab"))
        .initialize_from(persister, True, {}, "grab")
        .with_state_persister(persister)
        .with_identifiers(app_id="ctx", partition_key="pk")
        .abuild()
    )
    await app.astep()
    assert seen == [(persister, persister)]


async def test_app_context_describes_the_next_step() -> None:
    app = await counter_app(app_id="c1", partition_key="p")
    assert app.context == ApplicationContext("c1", "p", 0, "increment")
    await app.astep()
    assert app.context.sequence_id == 1
