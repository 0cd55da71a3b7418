"""Bounded storage, alike on InMemoryPersister, SQLite and Postgres: deleting apps and
partitions, pruning, expiring idle apps, and paged reads."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from burr_async import (
    AppDeletedError,
    ApplicationBuilder,
    ConfigurationError,
    InvalidIdentifierError,
    PersistenceError,
    State,
    StateNotFoundError,
    action,
)
from burr_async.persistence import _retention
from tests.databases import age_steps

pytestmark = pytest.mark.anyio


def new_id() -> str:
    return str(uuid.uuid4())


async def steps(persister: Any, pk: str | None, app_id: str, count: int, start: int = 0) -> None:
    for seq in range(start, start + count):
        await persister.save(pk, app_id, seq, f"s{seq}", State({"n": seq}), "completed")


@action(reads=["n"], writes=["n"])
async def tick(state: State) -> State:
    return state.update(n=state["n"] + 1)


async def counter(persister: Any, app_id: str, pk: str, **init: Any) -> Any:
    return await (
        ApplicationBuilder()
        .with_actions(tick)
        .with_transitions(("tick", "tick"))
        .initialize_from(
            persister,
            resume_at_next_action=True,
            default_state={"n": 0},
            default_entrypoint="tick",
            **init,
        )
        .with_state_persister(persister)
        .with_identifiers(app_id=app_id, partition_key=pk)
        .abuild()
    )


async def test_delete_app_removes_every_step_and_nothing_else(every_persister: Any) -> None:
    pk, gone, kept = new_id(), new_id(), new_id()
    await steps(every_persister, pk, gone, 4)
    await steps(every_persister, pk, kept, 2)
    assert await every_persister.delete_app(pk, gone) == 4
    assert await every_persister.load(pk, gone) is None
    assert await every_persister.history(pk, gone) == []
    assert [h.sequence_id for h in await every_persister.history(pk, kept)] == [0, 1]
    assert await every_persister.list_app_ids(pk) == [kept]
    assert await every_persister.delete_app(pk, gone) == 0  # unknown now: 0, not an error
    assert await every_persister.delete_app(pk, new_id()) == 0


async def test_an_application_holding_a_deleted_app_writes_nothing_more(
    every_persister: Any,
) -> None:
    pk, app_id = new_id(), new_id()
    app = await counter(every_persister, app_id, pk)
    await app.astep()
    await app.astep()
    await every_persister.delete_app(pk, app_id)
    with pytest.raises(AppDeletedError) as info:
        await app.astep()
    assert (info.value.app_id, info.value.sequence_id) == (app_id, 2)
    assert await every_persister.history(pk, app_id) == []  # not re-created
    fresh = await counter(every_persister, app_id, pk)  # a new application starts it afresh
    await fresh.astep()
    assert [h.sequence_id for h in await every_persister.history(pk, app_id)] == [0]


async def test_delete_partition_removes_its_apps_only(every_persister: Any) -> None:
    pk, other = new_id(), new_id()
    for _ in range(3):
        await steps(every_persister, pk, new_id(), 2)
    await steps(every_persister, other, "stays", 1)
    assert await every_persister.delete_partition(pk) == 6
    assert await every_persister.list_app_ids(pk) == []
    assert await every_persister.list_app_ids(other) == ["stays"]
    assert await every_persister.delete_partition(pk) == 0


async def test_prune_keeps_the_last_steps_which_resume_and_fork_as_before(
    every_persister: Any,
) -> None:
    pk, app_id = new_id(), new_id()
    app = await counter(every_persister, app_id, pk)
    for _ in range(6):
        await app.astep()
    assert await every_persister.prune(pk, app_id, keep_last=2) == 4
    assert [h.sequence_id for h in await every_persister.history(pk, app_id)] == [4, 5]
    assert await every_persister.load(pk, app_id, 3) is None
    await app.astep()  # the application holding it goes on
    resumed = await counter(every_persister, app_id, pk)
    assert (resumed.sequence_id, resumed.state["n"]) == (6, 7)
    fork = await counter(
        every_persister,
        new_id(),
        pk,
        fork_from_app_id=app_id,
        fork_from_partition_key=pk,
        fork_from_sequence_id=5,
    )
    assert fork.state["n"] == 6
    await fork.astep()
    with pytest.raises(StateNotFoundError):  # a pruned step cannot be forked from
        await counter(
            every_persister,
            new_id(),
            pk,
            fork_from_app_id=app_id,
            fork_from_partition_key=pk,
            fork_from_sequence_id=1,
        )
    assert await every_persister.prune(pk, app_id, keep_last=10) == 0
    assert await every_persister.prune(pk, new_id(), keep_last=1) == 0


async def test_loading_a_pruned_step_by_its_sequence_id_is_an_error(every_persister: Any) -> None:
    pk, app_id = new_id(), new_id()
    await steps(every_persister, pk, app_id, 4)
    await every_persister.prune(pk, app_id, keep_last=1)
    with pytest.raises(StateNotFoundError):
        await (
            ApplicationBuilder()
            .with_actions(tick)
            .with_transitions(("tick", "tick"))
            .initialize_from(
                every_persister,
                resume_at_next_action=True,
                default_state={"n": 0},
                default_entrypoint="tick",
            )
            .with_identifiers(app_id=app_id, partition_key=pk, sequence_id=1)
            .abuild()
        )


async def test_prune_all_prunes_every_app_of_a_partition_or_of_all(
    every_persister: Any,
) -> None:
    pk, other = new_id(), new_id()
    a, b, c = new_id(), new_id(), new_id()
    await steps(every_persister, pk, a, 5)
    await steps(every_persister, pk, b, 1)
    await steps(every_persister, other, c, 3)
    assert await every_persister.prune_all(keep_last=2, partition_key=pk) == 3
    assert [h.sequence_id for h in await every_persister.history(pk, a)] == [3, 4]
    assert len(await every_persister.history(other, c)) == 3
    assert await every_persister.prune_all(keep_last=1) >= 3  # and other tests' apps
    assert [h.sequence_id for h in await every_persister.history(pk, a)] == [4]
    assert [h.sequence_id for h in await every_persister.history(other, c)] == [2]


@pytest.mark.parametrize("limit", [-1, 1.5, True, "10", None])
async def test_list_apps_refuses_a_limit_that_is_not_a_count(
    every_persister: Any, limit: Any
) -> None:
    pk = new_id()
    await steps(every_persister, pk, new_id(), 1)
    with pytest.raises(ConfigurationError, match="limit"):
        await every_persister.list_apps(pk, limit=limit)
    assert await every_persister.list_apps(pk, limit=0) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda p: p.delete_partition("bad\x00key"),
        lambda p: p.prune_all(keep_last=1, partition_key="bad\x00key"),
        lambda p: p.expire(idle_for=dt.timedelta(days=1), partition_key="bad\x00key"),
        lambda p: p.list_app_ids("bad\x00key"),
        lambda p: p.list_apps("bad\x00key"),
    ],
    ids=["delete_partition", "prune_all", "expire", "list_app_ids", "list_apps"],
)
async def test_every_persister_refuses_a_bad_partition_key_alike(
    every_persister: Any, call: Any
) -> None:
    with pytest.raises(InvalidIdentifierError, match="partition_key"):
        await call(every_persister)


@pytest.mark.parametrize(
    "operation", ["delete_app", "delete_partition", "prune", "prune_all", "expire"]
)
async def test_a_closed_persister_refuses_every_removal(
    every_persister: Any, operation: str
) -> None:
    await every_persister.aclose()
    with pytest.raises(PersistenceError, match=f"{operation}\\(\\) was called on a closed"):
        await REMOVALS[operation](every_persister, "p", "a")


@pytest.mark.parametrize("keep_last", [0, -1, 1.5, True, "2"])
async def test_keep_last_must_be_at_least_one(every_persister: Any, keep_last: Any) -> None:
    with pytest.raises(ConfigurationError, match="keep_last"):
        await every_persister.prune("p", "a", keep_last=keep_last)
    with pytest.raises(ConfigurationError, match="keep_last"):
        await every_persister.prune_all(keep_last=keep_last)


async def test_expire_removes_whole_idle_apps(every_persister: Any) -> None:
    pk, other = new_id(), new_id()
    idle, busy, elsewhere = new_id(), new_id(), new_id()
    await steps(every_persister, pk, idle, 3)
    await steps(every_persister, pk, busy, 2)
    await steps(every_persister, other, elsewhere, 1)
    for app_id, where in ((idle, pk), (busy, pk), (elsewhere, other)):
        await age_steps(every_persister, where, app_id, dt.timedelta(days=40))
    await steps(every_persister, pk, busy, 1, start=2)  # busy took a step just now
    assert await every_persister.expire(idle_for=dt.timedelta(days=30), partition_key=pk) == 1
    assert await every_persister.history(pk, idle) == []
    assert len(await every_persister.history(pk, busy)) == 3
    assert len(await every_persister.history(other, elsewhere)) == 1  # another partition
    assert await every_persister.expire(idle_for=dt.timedelta(days=30), partition_key=pk) == 0
    with pytest.raises(ConfigurationError, match="idle_for"):
        await every_persister.expire(idle_for=30)  # type: ignore[arg-type]


async def test_history_pages_oldest_first(every_persister: Any) -> None:
    pk, app_id = new_id(), new_id()
    await steps(every_persister, pk, app_id, 7)
    pages, after = [], None
    while True:
        page = await every_persister.history(pk, app_id, after_sequence_id=after, limit=3)
        if not page:
            break
        pages.append([h.sequence_id for h in page])
        after = page[-1].sequence_id
    assert pages == [[0, 1, 2], [3, 4, 5], [6]]
    assert [h.sequence_id for h in await every_persister.history(pk, app_id)] == list(range(7))


async def test_list_apps_pages_by_cursor_and_filters_by_status(every_persister: Any) -> None:
    pk = new_id()
    ids = [new_id() for _ in range(7)]
    for app_id in ids:
        await steps(every_persister, pk, app_id, 1)
    await every_persister.save(pk, ids[0], 1, "boom", State({}), "failed", error="E")
    seen: list[str] = []
    page = await every_persister.list_apps(pk, limit=3)
    while page:
        seen += [a.app_id for a in page]
        page = await every_persister.list_apps(pk, limit=3, after=page[-1])
    assert sorted(seen) == sorted(ids) and len(seen) == 7
    assert seen[0] == ids[0]  # the most recently updated first
    failed = await every_persister.list_apps(pk, status="failed")
    assert [a.app_id for a in failed] == [ids[0]]
    assert len(await every_persister.list_apps(pk, status="completed")) == 6


@pytest.mark.parametrize(
    "moved",
    [
        lambda when: when.astimezone(dt.timezone(dt.timedelta(hours=2))),
        lambda when: when.replace(tzinfo=None),  # naive: UTC, as stored times are
    ],
    ids=["another_offset", "naive"],
)
async def test_a_cursor_is_the_same_instant_in_any_offset(every_persister: Any, moved: Any) -> None:
    pk = new_id()
    for app_id in [new_id() for _ in range(4)]:
        await steps(every_persister, pk, app_id, 1)
    first = await every_persister.list_apps(pk, limit=2)
    expected = await every_persister.list_apps(pk, limit=2, after=first[-1])
    cursor = dataclasses.replace(first[-1], updated_at=moved(first[-1].updated_at))
    assert await every_persister.list_apps(pk, limit=2, after=cursor) == expected
    with pytest.raises(ConfigurationError, match="AppSummary"):
        await every_persister.list_apps(pk, after=first[-1].app_id)


async def test_paging_while_steps_are_written_has_no_duplicates_or_gaps(
    every_persister: Any,
) -> None:
    """Apps untouched while the pages are read appear exactly once; an app that takes a step
    meanwhile moves to the top and appears at most once."""
    pk = new_id()
    ids = [new_id() for _ in range(12)]
    for app_id in ids:
        await steps(every_persister, pk, app_id, 1)
    writing = set(ids[::3])
    seen: list[str] = []

    async def write() -> None:
        for app_id in writing:
            await steps(every_persister, pk, app_id, 1, start=1)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        page = await every_persister.list_apps(pk, limit=2)
        while page:
            seen += [a.app_id for a in page]
            await anyio.lowlevel.checkpoint()
            page = await every_persister.list_apps(pk, limit=2, after=page[-1])
    assert len(seen) == len(set(seen))  # no duplicates
    assert set(ids) - writing <= set(seen)  # no gaps among the untouched


async def test_large_deletions_go_in_bounded_batches(
    persister: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    every_persister = persister  # batches are statements: the database persisters' concern
    monkeypatch.setattr(_retention, "BATCH_ROWS", 3)
    statements: list[int] = []
    original = every_persister._retention._delete

    async def counting(statement: Any, what: str, **ids: Any) -> int:
        removed = await original(statement, what, **ids)
        statements.append(removed)
        return removed

    monkeypatch.setattr(every_persister._retention, "_delete", counting)
    pk, app_id = new_id(), new_id()
    await steps(every_persister, pk, app_id, 8)
    assert await every_persister.prune(pk, app_id, keep_last=1) == 7
    assert statements == [3, 3, 1]
    assert [h.sequence_id for h in await every_persister.history(pk, app_id)] == [7]
    statements.clear()
    await steps(every_persister, pk, new_id(), 4)
    await steps(every_persister, pk, new_id(), 3)
    assert await every_persister.delete_partition(pk) == 8
    assert max(statements) <= 3


REMOVALS = {
    "delete_app": lambda p, pk, app_id, **kw: p.delete_app(pk, app_id, **kw),
    "delete_partition": lambda p, pk, app_id, **kw: p.delete_partition(pk, **kw),
    "prune": lambda p, pk, app_id, **kw: p.prune(pk, app_id, keep_last=2, **kw),
    "prune_all": lambda p, pk, app_id, **kw: p.prune_all(keep_last=2, partition_key=pk, **kw),
    "prune_all_everywhere": lambda p, pk, app_id, **kw: p.prune_all(keep_last=2, **kw),
    "expire": lambda p, pk, app_id, **kw: p.expire(
        idle_for=dt.timedelta(days=30), partition_key=pk, **kw
    ),
    "expire_everywhere": lambda p, pk, app_id, **kw: p.expire(idle_for=dt.timedelta(days=30), **kw),
}


@pytest.mark.parametrize("operation", list(REMOVALS))
async def test_a_dry_run_counts_what_the_call_removes_and_removes_nothing(
    every_persister: Any, operation: str
) -> None:
    pk, other = new_id(), new_id()
    idle, busy, elsewhere = new_id(), new_id(), new_id()
    await steps(every_persister, pk, idle, 5)
    await steps(every_persister, pk, busy, 4)
    await steps(every_persister, other, elsewhere, 3)
    await age_steps(every_persister, pk, idle, dt.timedelta(days=40))
    await age_steps(every_persister, other, elsewhere, dt.timedelta(days=40))
    apps = [(pk, idle), (pk, busy), (other, elsewhere)]

    async def stored() -> list[list[int]]:
        return [
            [h.sequence_id for h in await every_persister.history(where, app_id)]
            for where, app_id in apps
        ]

    remove = REMOVALS[operation]
    before = await stored()
    would = await remove(every_persister, pk, idle, dry_run=True)
    assert await stored() == before  # nothing removed
    assert await remove(every_persister, pk, idle, dry_run=True) == would  # and again
    expected = {
        "delete_app": 5,
        "delete_partition": 9,
        "prune": 3,
        "prune_all": 3 + 2,
        "expire": 1,
    }
    if operation in expected:
        assert would == expected[operation]
    else:  # every partition: at least these apps, and other tests' too
        assert would >= {"prune_all_everywhere": 3 + 2 + 1, "expire_everywhere": 2}[operation]
    assert await remove(every_persister, pk, idle) == would  # what the real call removes
    assert await stored() != before
    assert await remove(every_persister, pk, idle, dry_run=True) == 0  # nothing left to remove


async def test_a_dry_run_of_an_unknown_app_or_partition_is_zero(every_persister: Any) -> None:
    pk, app_id = new_id(), new_id()
    assert await every_persister.delete_app(pk, app_id, dry_run=True) == 0
    assert await every_persister.delete_partition(pk, dry_run=True) == 0
    assert await every_persister.prune(pk, app_id, keep_last=1, dry_run=True) == 0
    assert await every_persister.prune_all(keep_last=1, partition_key=pk, dry_run=True) == 0
    assert (
        await every_persister.expire(idle_for=dt.timedelta(0), partition_key=pk, dry_run=True) == 0
    )
    with pytest.raises(ConfigurationError, match="keep_last"):
        await every_persister.prune(pk, app_id, keep_last=0, dry_run=True)
