"""Applications on the SQLAlchemy persister: resume, failure, fork, and failing writes."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from burr_async import PersistenceError, SQLAlchemyPersister, StateNotFoundError
from tests.integration._chat import build

pytestmark = pytest.mark.anyio


def new_id() -> str:
    return str(uuid.uuid4())


async def test_every_step_is_one_row(persister: SQLAlchemyPersister) -> None:
    app = await build(persister, new_id())
    await app.arun(halt_after=["done"])
    history = await persister.history("tester", app.uid)
    assert [h.position for h in history] == [
        "counter",
        "check",
        "counter",
        "check",
        "counter",
        "check",
        "done",
    ]
    assert [h.sequence_id for h in history] == list(range(7))
    assert history[-1].state == app.state
    assert app.sequence_id == 6 and app.position == "done"


async def test_resume_after_a_completed_step(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    first = await build(persister, app_id)
    await first.astep()
    await first.astep()  # counter, check

    resumed = await build(persister, app_id)
    assert resumed.sequence_id == 1 and resumed.position == "check"
    assert resumed.state.get_all() == {"count": 1, "log": [1]}
    next_action = resumed.get_next_action()
    assert next_action is not None and next_action.name == "counter"
    outcome = await resumed.astep()
    assert outcome is not None and outcome[0].name == "counter"
    assert resumed.sequence_id == 2
    stored = await persister.load("tester", app_id)
    assert stored is not None and stored.sequence_id == 2 and stored.state["count"] == 2


async def test_resume_after_a_failed_step_runs_it_again(persister: SQLAlchemyPersister) -> None:
    app_id = new_id()
    app = await build(persister, app_id)
    await app.astep()  # counter -> count 1
    with pytest.raises(RuntimeError, match="check failed at count=1"):
        await app.astep(inputs={"fail": True})
    failed = await persister.load("tester", app_id)
    assert failed is not None
    assert (failed.sequence_id, failed.position, failed.status) == (1, "check", "failed")
    assert failed.error == "RuntimeError: check failed at count=1"
    assert failed.state.get_all() == {"count": 1, "log": []}  # the state the action was given

    resumed = await build(persister, app_id)
    upcoming = resumed.get_next_action()
    assert upcoming is not None and upcoming.name == "check"
    outcome = await resumed.astep()
    assert outcome is not None and outcome[1] == {"count": 1}
    assert resumed.sequence_id == 2
    assert [h.status for h in await persister.history("tester", app_id)] == [
        "completed",
        "failed",
        "completed",
    ]


async def test_not_resuming_starts_at_the_default_entrypoint(
    persister: SQLAlchemyPersister,
) -> None:
    app_id = new_id()
    app = await build(persister, app_id)
    await app.astep()
    await app.astep()
    restarted = await build(persister, app_id, resume_at_next_action=False)
    upcoming = restarted.get_next_action()
    assert upcoming is not None and upcoming.name == "counter"
    assert restarted.sequence_id == 1 and restarted.state["count"] == 1


async def test_fork_copies_a_chosen_step_and_records_its_parent(
    persister: SQLAlchemyPersister,
) -> None:
    source = new_id()
    app = await build(persister, source)
    await app.arun(halt_after=["done"])

    fork_id = new_id()
    fork = await build(
        persister,
        fork_id,
        partition_key="other",
        fork_from_app_id=source,
        fork_from_partition_key="tester",
        fork_from_sequence_id=1,
    )
    assert fork.uid == fork_id
    assert fork.state.get_all() == {"count": 1, "log": [1]}
    assert fork.sequence_id == 1
    assert fork.parent_pointer is not None
    assert (fork.parent_pointer.app_id, fork.parent_pointer.sequence_id) == (source, 1)
    copied = await persister.load("other", fork_id)
    assert copied is not None and copied.sequence_id == 1 and copied.parent == fork.parent_pointer
    await fork.astep()
    forked_history = await persister.history("other", fork_id)
    assert [h.sequence_id for h in forked_history] == [1, 2]
    assert {h.parent for h in forked_history} == {fork.parent_pointer}  # on every step
    resumed_fork = await build(persister, fork_id, partition_key="other")
    assert resumed_fork.parent_pointer == fork.parent_pointer  # still knows where it came from
    assert len(await persister.history("tester", source)) == 7  # the source is untouched

    with pytest.raises(StateNotFoundError, match="Nothing to fork from"):
        await build(persister, new_id(), fork_from_app_id=new_id(), fork_from_partition_key="x")


class _FlakyInsert:
    """Fails the next ``failures`` inserts the way a dropped connection does."""

    def __init__(self, persister: SQLAlchemyPersister, failures: int) -> None:
        self.failures = failures
        self.original = persister._writer.dialect.insert_one

    async def __call__(self, driver: Any, values: Any) -> bool:
        if self.failures:
            self.failures -= 1
            raise ConnectionResetError("connection lost")
        return await self.original(driver, values)


async def test_failed_write_leaves_the_app_unchanged_and_a_retry_succeeds(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    app_id = new_id()
    app = await build(persister, app_id)
    await app.astep()
    before = (app.state, app.sequence_id, app.position)

    monkeypatch.setattr(persister._writer.dialect, "insert_one", _FlakyInsert(persister, 1))
    with pytest.raises(PersistenceError) as info:
        await app.astep()
    message = str(info.value)
    assert app_id in message and "sequence_id=1" in message and "'check'" in message
    assert (app.state, app.sequence_id, app.position) == before
    assert (await persister.load("tester", app_id)).sequence_id == 0  # type: ignore[union-attr]

    outcome = await app.astep()  # the retry runs the same action and commits
    assert outcome is not None and outcome[0].name == "check"
    assert app.sequence_id == 1
    stored = await persister.load("tester", app_id)
    assert stored is not None and stored.sequence_id == 1 and stored.position == "check"


async def test_unserializable_state_fails_the_step_and_stores_nothing(
    persister: SQLAlchemyPersister,
) -> None:
    from burr_async import ApplicationBuilder, SerializationError, State, action

    @action(reads=[], writes=["handle"])
    def grab(state: State) -> State:
        return state.update(handle=object())

    app = await (
        ApplicationBuilder()
        .with_actions(grab)
        .with_transitions()
        .with_entrypoint("grab")
        .with_state_persister(persister)
        .with_identifiers(app_id=new_id(), partition_key="p")
        .abuild()
    )
    with pytest.raises(SerializationError, match="'handle'"):
        await app.astep()
    assert app.sequence_id is None and "handle" not in app.state
    assert await persister.load("p", app.uid) is None
