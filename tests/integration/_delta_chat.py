"""A chat saved step by step as an application saves it, for the tests of delta rows: each
step appends one message to a list and counts the turn, beside a value no step changes."""

from __future__ import annotations

import uuid

import orjson

from burr_async import OrjsonSerde, State
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister

SERDE = OrjsonSerde()
PROFILE = "p" * 4000
"""A value no step changes, which makes a full state outweigh the deltas of the tests' short
runs: they then get a full state exactly every ``snapshot_every`` steps."""


def new_id() -> str:
    return str(uuid.uuid4())


def encoded(state: State) -> bytes:
    """What a state stores as, keys sorted (Postgres's JSONB keeps no key order): two states
    load back alike exactly when these are equal (so ``1`` and ``True``, equal in Python,
    still differ)."""
    return orjson.dumps(orjson.loads(SERDE.dumps(state)), option=orjson.OPT_SORT_KEYS)


async def chat(
    persister: SQLAlchemyPersister,
    app_id: str,
    turns: int,
    *,
    pk: str | None = "u",
    after: list[State] | None = None,
) -> list[State]:
    """Save ``turns`` steps of a chat that appends one message a step, as an application does
    (holding the state it last stored); the states saved. ``after``: the states an earlier
    call saved, which this one goes on from (and extends)."""
    saved = after if after is not None else []
    state = saved[-1] if saved else State({"chat": [], "turn": 0, "profile": PROFILE})
    for seq in range(len(saved), len(saved) + turns):
        state = state.append(chat={"role": "user", "content": f"message {seq} " + "x" * 60})
        state = state.increment(turn=1)
        await persister.save(pk, app_id, seq, "talk", state, "completed")
        saved.append(state)
    return saved
