"""Several processes advancing the same application: each step is committed exactly once."""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import anyio
import pytest

from tests.databases import Database

pytestmark = pytest.mark.anyio
REPO = Path(__file__).resolve().parents[2]

WORKER = """
import sys, time, anyio
from burr_async import ApplicationBuilder, ConcurrentStepError, SQLAlchemyPersister, State, action

@action(reads=["count"], writes=["count"])
async def count(state: State) -> State:
    await anyio.sleep(0.001)  # widen the window between loading and writing
    return state.increment(count=1)

async def main(url: str, schema: str, app_id: str, attempts: int, start_at: float) -> None:
    committed = conflicts = 0
    async with SQLAlchemyPersister.from_url(url, schema=schema or None) as persister:
        await persister.load("race", app_id)  # connect and check the schema before the start
        await anyio.sleep(max(0.0, start_at - time.time()))  # all processes start together
        for _ in range(attempts):
            app = await (ApplicationBuilder().with_actions(count)
                .with_transitions(("count", "count"))
                .initialize_from(persister, resume_at_next_action=True,
                                 default_state={"count": 0}, default_entrypoint="count")
                .with_state_persister(persister)
                .with_identifiers(app_id=app_id, partition_key="race").abuild())
            try:
                await app.astep()
                committed += 1
            except ConcurrentStepError:
                conflicts += 1
    print(committed, conflicts)

anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))
"""


async def test_processes_racing_on_one_app_commit_each_step_once(db: Database) -> None:
    app_id = str(uuid.uuid4())
    attempts, workers = 25, 3
    outputs: list[tuple[int, int]] = []
    start_at = time.time() + 3  # time for every interpreter to start and connect

    async def worker() -> None:
        done = await anyio.run_process(
            [
                sys.executable,
                "-c",
                WORKER,
                db.url,
                db.schema or "",
                app_id,
                str(attempts),
                str(start_at),
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        committed, conflicts = map(int, done.stdout.split())
        outputs.append((committed, conflicts))

    with anyio.fail_after(180):
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)

    assert sum(k for _, k in outputs) > 0  # the processes did race
    assert sum(c + k for c, k in outputs) == attempts * workers
    total = sum(c for c, _ in outputs)
    async with db.persister() as persister:
        history = await persister.history("race", app_id)
    # every step was committed exactly once, by one process, on top of the step before it
    assert [h.sequence_id for h in history] == list(range(total))
    assert [h.state["count"] for h in history] == list(range(1, total + 1))
    assert all(h.status == "completed" for h in history)
