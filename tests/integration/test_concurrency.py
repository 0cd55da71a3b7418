"""Concurrent writers: two engines racing on one app, and many apps on one persister."""

from __future__ import annotations

import uuid

import anyio
import pytest

from burr_async import Application, ConcurrentStepError, SQLAlchemyPersister
from tests.databases import Database
from tests.integration._chat import build

pytestmark = pytest.mark.anyio


async def test_two_engines_racing_on_one_step_exactly_one_commits(db: Database) -> None:
    app_id = str(uuid.uuid4())
    async with db.persister() as first, db.persister() as second:
        assert first.engine is not second.engine
        await (await build(first, app_id)).astep()
        racers = [await build(first, app_id), await build(second, app_id)]
        outcomes: list[str] = []

        async def advance(app: Application) -> None:
            try:
                await app.astep()
                outcomes.append("committed")
            except ConcurrentStepError as exc:
                assert exc.app_id == app_id and exc.sequence_id == 1
                outcomes.append("conflict")

        async with anyio.create_task_group() as tg:
            for app in racers:
                tg.start_soon(advance, app)

        assert sorted(outcomes) == ["committed", "conflict"]
        loser = next(a for a in racers if a.sequence_id == 0)
        assert loser.position == "counter"  # the loser did not advance
        history = await first.history("tester", app_id)
        assert [h.sequence_id for h in history] == [0, 1]

        # the loser reloads and continues from the step that won
        reloaded = await build(second, app_id)
        assert reloaded.sequence_id == 1
        await reloaded.astep()
        assert [h.sequence_id for h in await second.history("tester", app_id)] == [0, 1, 2]


async def test_many_concurrent_apps_on_one_persister(persister: SQLAlchemyPersister) -> None:
    partition = str(uuid.uuid4())
    app_ids = [str(uuid.uuid4()) for _ in range(40)]

    async def run(app_id: str) -> None:
        app = await build(persister, app_id, partition_key=partition)
        await app.arun(halt_after=["done"])

    async with anyio.create_task_group() as tg:
        for app_id in app_ids:
            tg.start_soon(run, app_id)

    assert sorted(await persister.list_app_ids(partition)) == sorted(app_ids)
    for app_id in app_ids[:5]:
        history = await persister.history(partition, app_id)
        assert [h.sequence_id for h in history] == list(range(7))
        assert history[-1].state.get_all() == {"count": 3, "log": [1, 2, 3]}
