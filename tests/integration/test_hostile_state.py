"""Property: adversarial state (dicts that use the serde's tag key, name its tag kinds, or have
exactly the shape of its tags) is stored and loaded back equal by a persister, on SQLite and on
Postgres, whose JSONB reorders keys and re-spaces the text the serde reads back."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from burr_async import SQLAlchemyPersister, State
from tests.hostile_values import hostile_states

pytestmark = pytest.mark.anyio


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(values=hostile_states(for_postgres=True))  # what JSONB itself stores unchanged
async def test_hostile_state_is_stored_and_loaded_back_equal(
    persister: SQLAlchemyPersister, values: dict[str, Any]
) -> None:
    app_id = str(uuid.uuid4())
    await persister.save("hostile", app_id, 0, "start", State(values), "completed")
    loaded = await persister.load("hostile", app_id)
    assert loaded is not None
    assert loaded.state.get_all() == values
    history = await persister.history("hostile", app_id)
    assert [step.state.get_all() for step in history] == [values]
