"""Persistence through InMemoryPersister: saving every step, resuming, forking, and failures."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from burr_async import (
    Application,
    ApplicationBuilder,
    ConcurrentStepError,
    ConfigurationError,
    InMemoryPersister,
    ParentPointer,
    PersistenceError,
    SerializationError,
    State,
    StateNotFoundError,
    action,
)

from ._support import FlakyError, chatbot_builder

pytestmark = pytest.mark.anyio


async def _fresh(persister: InMemoryPersister, app_id: str = "chat", pk: str | None = "u1") -> Any:
    return await (
        chatbot_builder()
        .with_state(chat_history=[])
        .with_entrypoint("user_input")
        .with_identifiers(app_id=app_id, partition_key=pk)
        .with_state_persister(persister)
        .abuild()
    )


async def _resumed(
    persister: InMemoryPersister,
    app_id: str = "chat",
    pk: str | None = "u1",
    *,
    resume: bool = True,
    **fork: Any,
) -> Application:
    return await (
        chatbot_builder()
        .initialize_from(
            persister,
            resume_at_next_action=resume,
            default_state={"chat_history": ["default"]},
            default_entrypoint="user_input",
            **fork,
        )
        .with_identifiers(app_id=app_id, partition_key=pk)
        .with_state_persister(persister)
        .abuild()
    )


async def test_every_step_is_saved_and_history_is_oldest_first() -> None:
    persister = InMemoryPersister()
    app = await _fresh(persister)
    await app.astep(inputs={"prompt": "hi"})
    await app.astep()
    rows = await persister.history("u1", "chat")
    assert [(r.sequence_id, r.position, r.status) for r in rows] == [
        (0, "user_input", "completed"),
        (1, "respond", "completed"),
    ]
    assert rows[0].state["prompt"] == "hi"
    assert "response" not in rows[0].state
    assert rows[1].state == app.state
    assert rows[1].app_id == "chat"
    assert rows[1].partition_key == "u1"
    assert rows[1].error is None
    assert rows[1].parent is None
    assert rows[0].created_at <= rows[1].created_at
    assert rows[1].created_at.tzinfo is not None
    assert rows[1]["state"] == rows[1].state
    with pytest.raises(KeyError):
        rows[1]["nope"]


async def test_load_latest_or_a_given_step() -> None:
    persister = InMemoryPersister()
    app = await _fresh(persister)
    await app.arun(halt_after=["respond"], inputs={"prompt": "a"})
    latest = await persister.load("u1", "chat")
    assert latest is not None
    assert (latest.sequence_id, latest.position) == (1, "respond")
    first = await persister.load("u1", "chat", 0)
    assert first is not None
    assert first.position == "user_input"
    assert await persister.load("u1", "chat", 7) is None
    assert await persister.load("other", "chat") is None
    assert await persister.load("u1", "missing") is None


async def test_resume_after_a_completed_step() -> None:
    persister = InMemoryPersister()
    app = await _fresh(persister)
    await app.astep(inputs={"prompt": "hello"})

    resumed = await _resumed(persister)
    assert resumed.sequence_id == 0
    assert resumed.position == "user_input"
    assert resumed.state == app.state
    assert resumed.get_next_action().name == "respond"  # type: ignore[union-attr]
    outcome = await resumed.astep()
    assert outcome is not None
    assert outcome[0].name == "respond"
    assert resumed.sequence_id == 1
    assert (await persister.load("u1", "chat")).sequence_id == 1  # type: ignore[union-attr]


async def test_resume_at_a_given_sequence_id() -> None:
    persister = InMemoryPersister()
    app = await _fresh(persister)
    await app.arun(halt_after=["respond"], inputs={"prompt": "x"})
    older = await (
        chatbot_builder()
        .initialize_from(
            persister,
            resume_at_next_action=True,
            default_state={},
            default_entrypoint="user_input",
        )
        .with_identifiers(app_id="chat", partition_key="u1", sequence_id=0)
        .abuild()
    )
    assert older.sequence_id == 0
    assert older.position == "user_input"
    assert "response" not in older.state


async def test_resume_without_next_action_starts_at_default_entrypoint() -> None:
    persister = InMemoryPersister()
    app = await _fresh(persister)
    await app.astep(inputs={"prompt": "p"})
    resumed = await _resumed(persister, resume=False)
    assert resumed.state == app.state
    assert resumed.sequence_id == 0
    assert resumed.position is None
    assert resumed.get_next_action().name == "user_input"  # type: ignore[union-attr]
    await resumed.astep(inputs={"prompt": "again"})
    assert resumed.sequence_id == 1
    assert resumed.position == "user_input"


async def test_nothing_stored_uses_the_defaults() -> None:
    persister = InMemoryPersister()
    app = await _resumed(persister, app_id="brand-new")
    assert app.state.get_all() == {"chat_history": ["default"]}
    assert app.sequence_id is None
    assert app.position is None
    assert app.parent_pointer is None
    assert app.get_next_action().name == "user_input"  # type: ignore[union-attr]
    assert await persister.history("u1", "brand-new") == []


async def test_resume_after_a_failed_step_reruns_the_failed_action() -> None:
    attempts: list[int] = []

    @action(reads=["n"], writes=["n"])
    async def fragile(state: State) -> State:
        attempts.append(state["n"])
        if len(attempts) == 1:
            raise FlakyError("first attempt fails")
        return state.increment(n=1)

    @action(reads=[], writes=["n"])
    def setup(state: State) -> State:
        return state.update(n=10)

    def builder() -> ApplicationBuilder:
        return (
            ApplicationBuilder()
            .with_actions(setup, fragile)
            .with_transitions(("setup", "fragile"), ("fragile", "setup"))
            .with_identifiers(app_id="f")
            .with_state_persister(persister)
        )

    persister = InMemoryPersister()
    app = await builder().with_entrypoint("setup").abuild()
    await app.astep()
    with pytest.raises(FlakyError):
        await app.astep()
    failed = await persister.load(None, "f")
    assert failed is not None
    assert (failed.sequence_id, failed.position, failed.status) == (1, "fragile", "failed")
    assert failed.error is not None
    assert "FlakyError" in failed.error
    assert "first attempt fails" in failed.error
    assert failed.state.get_all() == {"n": 10}

    for resume in (True, False):
        resumed = await (
            builder()
            .initialize_from(
                persister,
                resume_at_next_action=resume,
                default_state={},
                default_entrypoint="setup",
            )
            .abuild()
        )
        assert resumed.sequence_id == 1
        assert resumed.position == "fragile"
        assert resumed.get_next_action().name == "fragile"  # type: ignore[union-attr]
    outcome = await resumed.astep()
    assert outcome is not None
    assert outcome[0].name == "fragile"
    assert resumed.state["n"] == 11
    assert resumed.sequence_id == 2
    statuses = [(r.sequence_id, r.status) for r in await persister.history(None, "f")]
    assert statuses == [(0, "completed"), (1, "failed"), (2, "completed")]


# -- forking -----------------------------------------------------------------------------------


async def test_fork_copies_the_chosen_step_into_the_new_app() -> None:
    persister = InMemoryPersister()
    source = await _fresh(persister, app_id="source")
    await source.arun(halt_after=["respond"], inputs={"prompt": "one"})
    await source.astep(inputs={"prompt": "two"})
    source_history = await persister.history("u1", "source")
    assert len(source_history) == 3

    fork = await _resumed(
        persister,
        app_id="fork",
        fork_from_app_id="source",
        fork_from_partition_key="u1",
        fork_from_sequence_id=1,
    )
    expected_parent = ParentPointer(app_id="source", partition_key="u1", sequence_id=1)
    assert fork.uid == "fork"
    assert fork.parent_pointer == expected_parent
    assert fork.sequence_id == 1
    assert fork.position == "respond"
    assert fork.state == source_history[1].state

    copied = await persister.history("u1", "fork")
    assert len(copied) == 1
    assert copied[0].sequence_id == 1
    assert copied[0].position == "respond"
    assert copied[0].parent == expected_parent
    assert copied[0].state == source_history[1].state
    loaded = await persister.load("u1", "fork")
    assert loaded is not None
    assert loaded.parent == expected_parent

    await fork.astep(inputs={"prompt": "forked"})
    assert fork.sequence_id == 2
    assert fork.state["prompt"] == "forked"
    after = await persister.history("u1", "source")
    assert [(r.sequence_id, r.state) for r in after] == [
        (r.sequence_id, r.state) for r in source_history
    ]
    assert (await persister.load("u1", "source")).state["prompt"] == "two"  # type: ignore[union-attr]


async def test_fork_from_the_latest_step() -> None:
    persister = InMemoryPersister()
    source = await _fresh(persister, app_id="src")
    await source.arun(halt_after=["respond"], inputs={"prompt": "x"})
    fork = await _resumed(
        persister, app_id="dst", fork_from_app_id="src", fork_from_partition_key="u1"
    )
    assert fork.parent_pointer == ParentPointer("src", "u1", 1)
    assert fork.get_next_action().name == "user_input"  # type: ignore[union-attr]


async def test_fork_into_the_same_app_id_is_a_configuration_error() -> None:
    persister = InMemoryPersister()
    source = await _fresh(persister, app_id="same")
    await source.astep(inputs={"prompt": "x"})
    with pytest.raises(ConfigurationError, match="'same'"):
        await _resumed(
            persister, app_id="same", fork_from_app_id="same", fork_from_partition_key="u1"
        )
    assert len(await persister.history("u1", "same")) == 1


async def test_fork_from_a_missing_app_is_state_not_found() -> None:
    persister = InMemoryPersister()
    with pytest.raises(StateNotFoundError, match="'ghost'") as info:
        await _resumed(persister, app_id="x", fork_from_app_id="ghost")
    assert isinstance(info.value, PersistenceError)
    with pytest.raises(StateNotFoundError, match="sequence_id=4"):
        await _resumed(persister, app_id="x", fork_from_app_id="ghost", fork_from_sequence_id=4)
    assert await persister.list_app_ids("u1") == []


# -- save failures -----------------------------------------------------------------------------


class BrokenPersister(InMemoryPersister):
    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    async def save(self, *args: Any, **kwargs: Any) -> None:
        if self.broken:
            raise OSError("disk on fire")
        await super().save(*args, **kwargs)


async def test_failing_save_is_a_persistence_error_and_the_app_does_not_advance() -> None:
    persister = BrokenPersister()
    app = await _fresh(persister, app_id="fragile-app")
    before = app.state
    with pytest.raises(PersistenceError) as info:
        await app.astep(inputs={"prompt": "x"})
    err = info.value
    assert "'fragile-app'" in str(err)
    assert "'user_input'" in str(err)
    assert "disk on fire" in str(err)
    assert isinstance(err.__cause__, OSError)
    assert (err.app_id, err.action, err.sequence_id) == ("fragile-app", "user_input", 0)
    assert app.state is before
    assert app.sequence_id is None
    assert app.position is None

    persister.broken = False
    outcome = await app.astep(inputs={"prompt": "x"})
    assert outcome is not None
    assert app.sequence_id == 0
    assert app.position == "user_input"
    assert [r.sequence_id for r in await persister.history("u1", "fragile-app")] == [0]


async def test_duplicate_save_is_a_concurrent_step_error() -> None:
    persister = InMemoryPersister()
    await persister.save("p", "a", 0, "act", State({"x": 1}), "completed")
    with pytest.raises(ConcurrentStepError, match="'a'") as info:
        await persister.save("p", "a", 0, "act", State({"x": 2}), "completed")
    assert info.value.sequence_id == 0
    assert (await persister.load("p", "a")).state["x"] == 1  # type: ignore[union-attr]


async def test_two_apps_racing_for_the_same_step() -> None:
    persister = InMemoryPersister()
    first = await _resumed(persister, app_id="race")
    second = await _resumed(persister, app_id="race")
    await first.astep(inputs={"prompt": "first"})
    with pytest.raises(ConcurrentStepError) as info:
        await second.astep(inputs={"prompt": "second"})
    assert "'race'" in str(info.value)
    assert "'user_input'" in str(info.value)
    assert second.sequence_id is None
    assert second.state.get_all() == {"chat_history": ["default"]}
    assert (await persister.load("u1", "race")).state["prompt"] == "first"  # type: ignore[union-attr]


async def test_unserializable_state_names_the_key_and_stores_nothing() -> None:
    @action(reads=[], writes=["blob"])
    def make_blob(state: State) -> State:
        return state.update(blob=object())

    persister = InMemoryPersister()
    app = await (
        ApplicationBuilder()
        .with_actions(make_blob)
        .with_state(ok=1)
        .with_entrypoint("make_blob")
        .with_identifiers(app_id="blobby")
        .with_state_persister(persister)
        .abuild()
    )
    with pytest.raises(SerializationError, match="'blob'") as info:
        await app.astep()
    assert info.value.key == "blob"
    assert await persister.history(None, "blobby") == []
    assert await persister.list_app_ids(None) == []
    assert app.state.get_all() == {"ok": 1}
    assert app.sequence_id is None


# -- listing -----------------------------------------------------------------------------------


async def test_list_app_ids_newest_first_per_partition() -> None:
    persister = InMemoryPersister()
    state = State({"x": 1})
    await persister.save("p", "a", 0, "s", state, "completed")
    await persister.save("p", "b", 0, "s", state, "completed")
    await persister.save(None, "c", 0, "s", state, "completed")
    assert await persister.list_app_ids("p") == ["b", "a"]
    await persister.save("p", "a", 1, "s", state, "completed")
    assert await persister.list_app_ids("p") == ["a", "b"]
    assert await persister.list_app_ids(None) == ["c"]
    assert await persister.list_app_ids("nobody") == []


async def test_persister_is_an_async_context_manager() -> None:
    async with InMemoryPersister() as persister:
        await persister.save(None, "a", 0, "s", State(), "completed")
        row = await persister.load(None, "a")
    assert row is not None
    assert row.state.get_all() == {}
    assert isinstance(row.created_at, dt.datetime)


async def test_fork_into_an_app_that_has_steps_is_refused() -> None:
    persister = InMemoryPersister()
    source = await _fresh(persister, app_id="src")
    await source.astep(inputs={"prompt": "x"})
    taken = await _fresh(persister, app_id="taken")
    await taken.astep(inputs={"prompt": "mine"})
    with pytest.raises(ConfigurationError, match=r"'taken'.*already has stored steps"):
        await _resumed(
            persister, app_id="taken", fork_from_app_id="src", fork_from_partition_key="u1"
        )
    assert [r.state["prompt"] for r in await persister.history("u1", "taken")] == ["mine"]
