"""The CLI's reading commands on an app stored as delta rows, on both backends: ``show --seq``,
``diff`` and ``history`` print each step's full state, as for an app stored whole."""

from __future__ import annotations

import json

import anyio
import orjson
import pytest

from burr_async import State
from tests.databases import Database, stored_rows
from tests.integration._delta_chat import SERDE, chat
from tests.integration.test_cli import in_fresh_thread, run_db, table_rows, unique

pytestmark = pytest.mark.usefixtures("anyio_backend")


def seed_chat(db: Database, pk: str, app_id: str, turns: int) -> tuple[list[State], list[bool]]:
    """Save a chat of ``turns`` steps (a full row every 10 steps, deltas between); its states
    and, step by step, whether its row is a delta."""

    async def save() -> tuple[list[State], list[bool]]:
        async with db.persister(snapshot_every=10) as persister:
            saved = await chat(persister, app_id, turns, pk=pk)
            return saved, [delta for _seq, delta, _text in await stored_rows(persister, app_id)]

    return in_fresh_thread(lambda: anyio.run(save))


def as_shown(state: State) -> object:
    return orjson.loads(SERDE.dumps(state))


def test_show_and_diff_read_delta_rows_as_full_states(db: Database) -> None:
    pk, app_id = unique("p"), unique("a")
    saved, deltas = seed_chat(db, pk, app_id, 14)
    assert deltas[7] and deltas[13] and not deltas[10]  # the steps read below are deltas
    for seq in (7, 13):
        shown = run_db(db, "show", app_id, "-p", pk, "--seq", str(seq))
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout) == as_shown(saved[seq])
    latest = run_db(db, "show", app_id, "-p", pk)
    assert json.loads(latest.stdout) == as_shown(saved[13])

    changed = run_db(db, "diff", app_id, "6", "7", "-p", pk)
    assert changed.exit_code == 0, changed.output
    lines = changed.stdout.splitlines()
    assert lines[0] == f"app {app_id!r}: step 6 (talk) -> step 7 (talk)"
    assert [line.split(":")[0] for line in lines[1:]] == ["~ chat", "~ turn"]
    assert lines[-1] == "~ turn: 7 -> 8"
    across = run_db(db, "diff", app_id, "3", "13", "-p", pk)  # across a full row
    assert across.stdout.splitlines()[-1] == "~ turn: 4 -> 14"


def test_history_lists_every_step_of_a_delta_stored_app(db: Database) -> None:
    pk, app_id = unique("p"), unique("a")
    seed_chat(db, pk, app_id, 12)
    listed = run_db(db, "history", app_id, "-p", pk)
    assert listed.exit_code == 0, listed.output
    rows = table_rows(listed.stdout)
    assert [row[0] for row in rows] == [str(seq) for seq in range(12)]
