"""Removals racing the steps of the apps they touch, on SQLite and Postgres: when an app takes a
step in the middle of a prune or an expire, what is left of it is a history that loads, each
step as it was saved, and the new step is kept; when it takes one while its app is deleted (or
expired), nothing of the app is left, and a step that finds its predecessor gone is refused."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

from burr_async import AppDeletedError, State
from burr_async.persistence import _retention
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister
from tests.databases import Database, age_steps
from tests.databases import stored_rows as rows
from tests.integration._delta_chat import chat, encoded, new_id

pytestmark = pytest.mark.anyio


@pytest.fixture
async def persister(db: Database) -> AsyncIterator[SQLAlchemyPersister]:
    async with db.persister(snapshot_every=10) as p:  # full rows at steps 0, 10, 20, ...
        yield p


def after_call(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    then: Callable[[], Awaitable[None]],
    *,
    nth: int = 1,
) -> None:
    """Run ``then`` once, right after the ``nth`` call of ``owner.name`` returns."""
    original = getattr(owner, name)
    calls = 0

    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        result = await original(*args, **kwargs)
        calls += 1
        if calls == nth:
            await then()
        return result

    monkeypatch.setattr(owner, name, wrapped)


async def assert_loads_as_saved(
    persister: SQLAlchemyPersister, pk: str, app_id: str, saved: list[State]
) -> list[int]:
    """Every stored step of the app loads as the state saved at it, the latest is the last one
    saved, and the oldest stored row is a full one; the stored sequence ids."""
    stored = await rows(persister, app_id)
    kept = [seq for seq, _delta, _text in stored]
    assert kept == list(range(kept[0], len(saved)))  # contiguous, up to the newest step
    assert stored[0][1] is False  # the oldest row holds a full state
    history = await persister.history(pk, app_id)
    assert [encoded(step.state) for step in history] == [encoded(saved[seq]) for seq in kept]
    latest = await persister.load(pk, app_id)
    assert latest is not None and latest.sequence_id == len(saved) - 1
    return kept


PRUNES = {
    "prune": lambda p, pk, app_id, keep: p.prune(pk, app_id, keep_last=keep),
    "prune_all": lambda p, pk, app_id, keep: p.prune_all(keep_last=keep, partition_key=pk),
}


@pytest.mark.parametrize("prune", list(PRUNES))
async def test_a_step_taken_while_its_app_is_pruned_leaves_it_loadable(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch, prune: str
) -> None:
    pk, app_id = new_id(), new_id()
    saved = await chat(persister, app_id, 15, pk=pk)  # full rows 0 and 10, deltas around them

    async def step() -> None:
        await chat(persister, app_id, 1, pk=pk, after=saved)

    # the step lands after the prune made its oldest kept step (12) a full row
    after_call(monkeypatch, persister._retention, "_keep_loadable", step)
    await PRUNES[prune](persister, pk, app_id, 3)
    kept = await assert_loads_as_saved(persister, pk, app_id, saved)
    assert kept[0] == 12  # nothing kept that the prune was to remove, nothing more removed


@pytest.mark.parametrize("prune", list(PRUNES))
async def test_steps_taken_between_the_batches_of_a_prune_leave_its_app_loadable(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch, prune: str
) -> None:
    monkeypatch.setattr(_retention, "BATCH_ROWS", 4)
    pk, app_id = new_id(), new_id()
    saved = await chat(persister, app_id, 25, pk=pk)

    async def steps() -> None:
        await chat(persister, app_id, 4, pk=pk, after=saved)

    after_call(monkeypatch, persister._retention, "_delete", steps)
    await PRUNES[prune](persister, pk, app_id, 5)
    kept = await assert_loads_as_saved(persister, pk, app_id, saved)
    assert kept[0] <= 20  # every step the prune was to keep is kept


@pytest.mark.parametrize("nth", [1, 2, 3])
async def test_an_app_that_takes_a_step_during_an_expire_is_left_loadable(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch, nth: int
) -> None:
    monkeypatch.setattr(_retention, "BATCH_ROWS", 8)
    pk, woken, idle = new_id(), new_id(), new_id()
    saved = await chat(persister, woken, 35, pk=pk)  # more rows than a batch: removed in parts
    await chat(persister, idle, 3, pk=pk)
    for app_id in (woken, idle):
        await age_steps(persister, pk, app_id, dt.timedelta(days=40))

    async def step() -> None:
        await chat(persister, woken, 1, pk=pk, after=saved)

    after_call(monkeypatch, persister._retention, "_delete", step, nth=nth)
    removed = await persister.expire(idle_for=dt.timedelta(days=30), partition_key=pk)
    assert await persister.history(pk, idle) == []
    assert removed == 1  # the app that took a step is no longer idle: not counted, not removed
    await assert_loads_as_saved(persister, pk, woken, saved)


async def test_an_expire_of_many_apps_counts_each_removed_app(
    persister: SQLAlchemyPersister, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_retention, "BATCH_ROWS", 8)
    pk, apps = new_id(), [new_id() for _ in range(7)]
    for n, app_id in enumerate(apps):
        await chat(persister, app_id, n + 1, pk=pk)  # 1 to 7 steps: batches of whole apps
        await age_steps(persister, pk, app_id, dt.timedelta(days=40))
    statements: list[int] = []
    original = _retention.deleted

    async def counting(conn: Any, statement: Any) -> int:
        removed = await original(conn, statement)
        statements.append(removed)
        return removed

    monkeypatch.setattr(_retention, "deleted", counting)
    assert await persister.expire(idle_for=dt.timedelta(days=30), partition_key=pk) == 7
    assert sum(statements) == 28 and max(statements) <= 8
    for app_id in apps:
        assert await persister.history(pk, app_id) == []


# -- a step racing the statements that remove its app -------------------------------------------
# On Postgres a statement sees the rows committed when it began: a DELETE that waits for a row
# lock, and a step whose INSERT checks for its predecessor while a removal has deleted it but not
# yet committed, could each leave the new step behind, alone: a delta with nothing to rebuild it
# from, in an app that was to be erased. SQLite runs one write at a time, so the same tests hold
# there trivially.


async def _await_lock_wait(persister: SQLAlchemyPersister, statement: str) -> None:
    """Return once a backend runs ``statement`` (a prefix) waiting for a lock (Postgres)."""
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND query LIKE :prefix"
    )
    with anyio.fail_after(10):
        while True:
            async with persister.engine.connect() as conn:
                if (await conn.execute(query, {"prefix": f"{statement}%"})).scalar_one():
                    return
            await anyio.sleep(0.01)


async def attempt_step(
    persister: SQLAlchemyPersister, pk: str, app_id: str, saved: list[State]
) -> str:
    """Save the app's next step (extending ``saved``): "stored", "refused" (AppDeletedError:
    its predecessor is gone), or "failed: ..." for any other error."""
    try:
        await chat(persister, app_id, 1, pk=pk, after=saved)
    except AppDeletedError:
        return "refused"
    except Exception as exc:
        return f"failed: {exc}"
    return "stored"


def lock_first_row(persister: SQLAlchemyPersister, pk: str, app_id: str) -> Any:
    """A SELECT that takes the weakest lock a DELETE waits for on the app's step 0."""
    t = persister.table
    step_0 = sa.select(t.c.sequence_id).where(
        t.c.partition_key == pk, t.c.app_uid == app_id, t.c.sequence_id == 0
    )
    return step_0.with_for_update(key_share=True)


REMOVES_APP = {
    "delete_app": lambda p, pk, app_id: p.delete_app(pk, app_id),
    "delete_partition": lambda p, pk, app_id: p.delete_partition(pk),
}


@pytest.mark.parametrize("removal", list(REMOVES_APP))
async def test_a_step_committed_while_a_deletion_waits_is_deleted_too(
    postgres_db: Database, removal: str
) -> None:
    async with postgres_db.persister() as persister:
        pk, app_id = new_id(), new_id()
        saved = await chat(persister, app_id, 3, pk=pk)
        outcome: dict[str, object] = {}

        async def remove() -> None:
            outcome["removed"] = await REMOVES_APP[removal](persister, pk, app_id)

        async def step() -> None:  # refused when it waited for a row the deletion locked
            outcome["step"] = await attempt_step(persister, pk, app_id, saved)

        async with persister.engine.connect() as blocker, anyio.create_task_group() as tg:
            await blocker.execute(lock_first_row(persister, pk, app_id))  # holds row 0
            tg.start_soon(remove)
            await _await_lock_wait(persister, "DELETE")  # the deletion waits for row 0
            tg.start_soon(step)  # step 3, while the deletion waits
            await anyio.sleep(0.3)  # time to commit, unless it waits for the deletion
            await blocker.rollback()
        assert await rows(persister, app_id) == []  # nothing is left of the app
        assert (outcome["step"], outcome["removed"]) in {("stored", 4), ("refused", 3)}


@pytest.mark.parametrize("removal", list(REMOVES_APP))
async def test_a_step_whose_predecessor_a_deletion_removed_is_refused(
    db: Database, monkeypatch: pytest.MonkeyPatch, removal: str
) -> None:
    async with db.persister() as persister:
        pk, app_id = new_id(), new_id()
        saved = await chat(persister, app_id, 3, pk=pk)
        outcome: dict[str, object] = {}
        original = _retention.deleted

        async def racing(conn: Any, statement: Any) -> int:
            # the deletion's statements are done, its transaction not yet committed: a step of
            # the app arrives
            removed = await original(conn, statement)
            if removed == 0 and "step" not in outcome:
                outcome["step"] = "started"
                tg.start_soon(step)
                await anyio.sleep(0.3)  # time for the step to commit, were nothing to stop it
            return removed

        async def step() -> None:
            outcome["step"] = await attempt_step(persister, pk, app_id, saved)

        monkeypatch.setattr(_retention, "deleted", racing)
        async with anyio.create_task_group() as tg:
            await REMOVES_APP[removal](persister, pk, app_id)
        assert outcome["step"] == "refused"
        assert await rows(persister, app_id) == []


async def test_an_app_woken_while_an_expire_waits_to_delete_it_is_spared_whole(
    postgres_db: Database,
) -> None:
    async with postgres_db.persister() as persister:
        pk, app_id = new_id(), new_id()
        saved = await chat(persister, app_id, 3, pk=pk)
        await age_steps(persister, pk, app_id, dt.timedelta(days=40))
        outcome: dict[str, int] = {}
        async with persister.engine.connect() as blocker, anyio.create_task_group() as tg:
            await blocker.execute(lock_first_row(persister, pk, app_id))

            async def expire() -> None:
                outcome["removed"] = await persister.expire(
                    idle_for=dt.timedelta(days=30), partition_key=pk
                )

            tg.start_soon(expire)
            await _await_lock_wait(persister, "DELETE")
            await chat(persister, app_id, 1, pk=pk, after=saved)  # the app wakes up meanwhile
            await blocker.rollback()
        assert outcome["removed"] == 0
        await assert_loads_as_saved(persister, pk, app_id, saved)
        assert [seq for seq, _delta, _text in await rows(persister, app_id)] == [0, 1, 2, 3]


async def test_a_step_of_an_app_an_expire_removed_is_refused(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db.persister() as persister:
        pk, app_id = new_id(), new_id()
        saved = await chat(persister, app_id, 3, pk=pk)
        await age_steps(persister, pk, app_id, dt.timedelta(days=40))
        outcome: dict[str, str] = {}
        original = _retention.deleted

        async def racing(conn: Any, statement: Any) -> int:
            removed = await original(conn, statement)
            if removed and "step" not in outcome:
                outcome["step"] = "started"
                tg.start_soon(step)
                await anyio.sleep(0.3)
            return removed

        async def step() -> None:
            outcome["step"] = await attempt_step(persister, pk, app_id, saved)

        monkeypatch.setattr(_retention, "deleted", racing)
        async with anyio.create_task_group() as tg:
            removed = await persister.expire(idle_for=dt.timedelta(days=30), partition_key=pk)
        assert (removed, outcome["step"]) == (1, "refused")
        assert await rows(persister, app_id) == []


async def test_a_batch_caught_in_a_deadlock_with_a_deletion_is_written_row_by_row(
    postgres_db: Database,
) -> None:
    """A multi-row INSERT locks its rows' predecessors one by one, and a DELETE of rows of
    several apps locks those rows: the two can wait for each other, and Postgres then aborts
    one. When it aborts the INSERT (nothing of it stored), its rows are written one at a time
    (a single-row INSERT holds no lock while it waits, so it cannot deadlock): an app that is
    not being deleted still gets its step stored."""
    async with postgres_db.persister() as persister:
        pk = new_id()
        z, a1, b, a2 = (new_id() for _ in range(4))
        saved = {app: await chat(persister, app, 1, pk=pk) for app in (z, a1, b, a2)}
        t = persister.table

        def rows_of(app: str) -> Any:
            return sa.and_(t.c.partition_key == pk, t.c.app_uid == app)

        outcome: dict[str, str] = {}

        async def step(app: str) -> None:
            outcome[app] = await attempt_step(persister, pk, app, saved[app])

        async with (
            persister.engine.connect() as blocker,
            persister.engine.connect() as deletion,
            anyio.create_task_group() as tg,
        ):
            # z's step waits for a row lock, so that the next three steps queue up as one batch
            await blocker.execute(sa.select(t.c.sequence_id).where(rows_of(z)).with_for_update())
            tg.start_soon(step, z)
            await _await_lock_wait(persister, "INSERT")
            for app in (a1, b, a2):
                tg.start_soon(step, app)
            await anyio.sleep(0.2)  # a1, b and a2 are queued behind z
            # a deletion of the partition's apps holds a2's rows; it outwaits the INSERT, whose
            # backend (deadlock_timeout 1 s) then finds the deadlock and is the one aborted
            await deletion.execute(sa.text("SET LOCAL deadlock_timeout = '20s'"))
            await deletion.execute(sa.delete(t).where(rows_of(a2)))
            await blocker.rollback()  # z's step commits; the batch locks a1's and b's rows...
            await _await_lock_wait(persister, "INSERT")  # ...and waits for a2's
            await deletion.execute(sa.delete(t).where(rows_of(a1)))  # waits for the batch
            await deletion.commit()
        # b, which nobody deletes, is stored; so is z. a2's rows were deleted before the batch:
        # its step alone waits for the deletion and is refused. a1's step alone races the
        # DELETE that waited for the batch: it is refused when the DELETE locks a1's first row
        # before it, stored when it locks that row first (a single DELETE statement does not
        # see a row committed after it began; delete_app repeats its DELETE for that reason)
        assert (outcome[z], outcome[b], outcome[a2]) == ("stored", "stored", "refused")
        assert outcome[a1] in {"stored", "refused"}
        assert [seq for seq, _delta, _text in await rows(persister, b)] == [0, 1]
