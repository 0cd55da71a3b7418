"""Property: whatever mix of concurrent saves hits the writer, each step ends up stored at most
once, by exactly one successful caller, and refused writes store nothing."""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from burr_async import ConcurrentStepError, PersistenceError, SQLAlchemyPersister, State

pytestmark = pytest.mark.anyio

# (app, step, valid): an invalid write breaks the table's CHECK on status. Each (app, step) is
# the first step of its own app (sequence_id 0), since a step is stored only after the one
# before it.
writes = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 2), st.booleans()), min_size=1, max_size=25
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=writes)
async def test_concurrent_saves_settle_like_the_model(
    persister: SQLAlchemyPersister, ops: list[tuple[int, int, bool]]
) -> None:
    partition = str(uuid.uuid4())
    outcomes: list[Any] = [None] * len(ops)

    async def save(index: int, app: int, seq: int, valid: bool) -> None:
        try:
            await persister.save(
                partition,
                f"app-{app}-{seq}",
                0,
                "a",
                State({"by": index}),
                "completed" if valid else "bogus",
            )
        except PersistenceError as exc:
            outcomes[index] = exc

    async with anyio.create_task_group() as tg:
        for index, (app, seq, valid) in enumerate(ops):
            tg.start_soon(save, index, app, seq, valid)

    keys = {(app, seq) for app, seq, _ in ops}
    for app, seq in keys:
        mine = [i for i, (a, s, _) in enumerate(ops) if (a, s) == (app, seq)]
        valid = [i for i in mine if ops[i][2]]
        winners = [i for i in mine if outcomes[i] is None]
        stored = await persister.load(partition, f"app-{app}-{seq}", 0)
        if not valid:  # only refused writes: nothing stored, nobody told they won
            assert winners == []
            assert stored is None
            continue
        assert len(winners) == 1  # exactly one caller committed the step
        assert winners[0] in valid
        assert stored is not None
        assert stored.state["by"] == winners[0]  # and it is that caller's row
        for loser in set(valid) - set(winners):
            assert isinstance(outcomes[loser], ConcurrentStepError)
        for refused in set(mine) - set(valid):
            assert isinstance(outcomes[refused], PersistenceError)
