"""The fault trials at small sizes, on SQLite and Postgres: no lost step, no double advance, no
mixed history, no hung call, no unclear error (``make reliability`` runs them at full size).

The second half breaks the library on purpose and checks that the trials notice: a suite that
cannot fail proves nothing.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import burr_async.persistence._writer as _writer
from burr_async import PersistenceError
from burr_async.persistence import _postgres
from burr_async.persistence._sqlite import SQLiteDialect
from burr_async.persistence._writer import GroupWriter
from tests.databases import Database
from tests.reliability import trials
from tests.reliability._support import Counts

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture
def quick_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's read-back window cut from about 1.85 s to 0.4 s; the trials' outages scale
    with it (the full run keeps the real one)."""
    monkeypatch.setattr(_writer, "SETTLE_DELAYS", (0.0, 0.05, 0.1, 0.25))


@pytest.fixture
def quick_silence(monkeypatch: pytest.MonkeyPatch) -> None:
    """The persister's statement timeout cut from 30 s to 0.5 s; a silent connection is cut
    after 5 s (not 45): a step must be over 2 s after its statement timeout, long before the
    cut. The caller's own timeout is 0.3 s."""
    monkeypatch.setattr(_postgres, "STATEMENT_TIMEOUT", 0.5)
    monkeypatch.setattr(trials, "SILENCE", 5.0)
    monkeypatch.setattr(trials, "CALLER_TIMEOUT", 0.3)


def assert_clean(counts: Counts) -> None:
    assert counts.runs > 0, counts
    assert counts.failures() == {}, (counts.failures(), counts.notes)


async def test_crashes_lose_no_committed_step(db: Database) -> None:
    counts = await trials.crash(db, 3, seed=7)
    assert_clean(counts)
    assert counts.committed > 0


@pytest.mark.parametrize("workers", [2, 4])
async def test_racing_processes_commit_each_step_once(db: Database, workers: int) -> None:
    counts = await trials.race(db, 8, workers=workers, seed=7)
    assert_clean(counts)
    assert counts.runs == 8
    assert counts.extra["conflicts"] == 8 * (workers - 1)  # every round was a real race


@pytest.mark.postgres
@pytest.mark.usefixtures("quick_settle")
async def test_lost_acknowledgements_through_a_proxy_are_settled(postgres_db: Database) -> None:
    counts = await trials.lost_ack(postgres_db, len(trials.LOST_ACK_MODES), seed=7)
    assert_clean(counts)
    assert_every_mode_ran(counts)


@pytest.mark.usefixtures("quick_settle")
async def test_lost_acknowledgements_on_sqlite_are_settled(sqlite_db: Database) -> None:
    counts = await trials.lost_ack(sqlite_db, len(trials.LOST_ACK_MODES), seed=7)
    assert_clean(counts)
    assert_every_mode_ran(counts)


def assert_every_mode_ran(counts: Counts) -> None:
    assert counts.extra["alone:ok"] == 1  # settled by reading it back
    assert counts.extra["request_lost:PersistenceError"] == 1  # not stored: an error
    assert counts.extra["down_long:CommitUnknownError"] == 1  # could not be read back
    assert counts.extra["batch_down:CommitUnknownError"] == 3  # the batch behind the leader
    # those had committed: the database was one step ahead until the next call settled it
    assert counts.extra["pending_after_commit_unknown"] >= 4


@pytest.mark.postgres
@pytest.mark.usefixtures("quick_silence")
async def test_a_silent_connection_cannot_hold_a_step_past_the_statement_timeout(
    postgres_db: Database,
) -> None:
    """With the default settings: the write's statement times out, its connection is dropped,
    and the row is read back on another one (it had committed)."""
    counts = await trials.silent(postgres_db, 2, seed=7)
    assert_clean(counts)
    assert counts.extra["silent_step:ok"] == 2
    assert counts.extra["seconds_until_the_step_returned (max)"] < 2.5


@pytest.mark.postgres
@pytest.mark.usefixtures("quick_silence")
async def test_asyncpgs_command_timeout_bounds_a_step_on_a_silent_connection(
    postgres_db: Database,
) -> None:
    counts = await trials.silent(postgres_db, 1, seed=7, command_timeout=0.5)
    assert_clean(counts)


@pytest.mark.postgres
async def test_terminated_backends_fail_steps_clearly_and_recover(postgres_db: Database) -> None:
    counts = await trials.outage(postgres_db, 3, seed=7)
    assert_clean(counts)
    assert counts.extra["backends_terminated"] > 0


async def test_a_locked_sqlite_file_delays_or_refuses_steps_clearly(sqlite_db: Database) -> None:
    counts = await trials.outage(sqlite_db, 3, seed=7)
    assert_clean(counts)
    assert counts.extra["locked_wait:ok"] == 1
    assert counts.extra["locked_refuse:PersistenceError"] == 1
    assert counts.extra["locked_wait_cancelled:ok"] == 1  # the write held its timeout off


async def test_cancelled_steps_never_split_app_and_database(db: Database) -> None:
    counts = await trials.cancellation(db, 60, seed=7)
    assert_clean(counts)


async def test_bad_input_is_refused_up_front_or_round_trips(db: Database) -> None:
    counts = await trials.bad_input(db, 8, seed=7)
    assert_clean(counts)
    assert counts.outcomes["unserializable: object()"] == "refused:SerializationError"
    assert counts.outcomes["huge: a 3 MB string"] == "stored"


@pytest.mark.postgres
async def test_a_row_too_large_for_the_index_does_not_sink_its_batch(
    postgres_db: Database,
) -> None:
    """A 10 kB app id (too large for Postgres's index) is refused up front, on every backend,
    so it never reaches a batch to sink the good rows beside it."""
    counts = await trials.bad_input(postgres_db, 1, seed=7)
    assert counts.extra["collateral"] == 0, counts.notes
    assert counts.extra["bad_row_refused_up_front"] == 1


# -- the trials can fail -----------------------------------------------------------------------
async def test_the_checks_catch_a_writer_that_advances_without_saving(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = GroupWriter.write_settled  # what every write goes through
    calls = 0

    async def sometimes_not(self: GroupWriter, values: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls > 4 and calls % 3 == 0:
            return None, None  # reported durable, never written
        return await original(self, values)

    monkeypatch.setattr(GroupWriter, "write_settled", sometimes_not)
    counts = await trials.cancellation(sqlite_db, 20, seed=7)
    assert counts.lost > 0


async def test_the_checks_catch_a_writer_that_saves_but_reports_a_failure(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = GroupWriter.write_settled  # what every write goes through
    calls = 0

    async def saves_then_fails(self: GroupWriter, values: Any) -> Any:
        nonlocal calls
        calls += 1
        error, cancellation = await original(self, values)
        if error is None and calls > 4 and calls % 3 == 0:
            return PersistenceError("stored, yet reported as failed"), cancellation
        return error, cancellation

    monkeypatch.setattr(GroupWriter, "write_settled", saves_then_fails)
    counts = await trials.cancellation(sqlite_db, 20, seed=7)
    assert counts.extra["behind"] > 0


@pytest.mark.usefixtures("quick_settle")
async def test_the_checks_catch_a_lost_acknowledgement_taken_for_a_failure(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SQLiteDialect, "outcome_unknown", lambda self, exc: False)
    counts = await trials.lost_ack(sqlite_db, 1, seed=7)  # "alone"
    assert counts.extra["behind"] >= 1
    assert counts.extra["concurrent_step_error"] == 1  # the next step finds its own row


async def test_the_checks_catch_a_hung_write(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SQLiteDialect.insert_one
    calls = 0

    async def slow(self: SQLiteDialect, driver: Any, values: Any) -> bool:
        nonlocal calls
        calls += 1
        if calls == 6:
            await asyncio.sleep(1)  # longer than the bound below; the statement is shielded
        return await original(self, driver, values)

    monkeypatch.setattr(trials, "STEP_BOUND", 0.3)
    monkeypatch.setattr(SQLiteDialect, "insert_one", slow)
    counts = await trials.cancellation(sqlite_db, 5, seed=7)
    assert counts.hung == 1


async def test_the_crash_checks_catch_a_child_that_reports_unsaved_steps(
    sqlite_db: Database,
) -> None:
    counts = await trials.crash(sqlite_db, 2, seed=7, fault="skip_save", strategies=("none",))
    assert counts.lost + counts.mixed > 0


async def test_the_race_checks_catch_a_loser_that_advances(sqlite_db: Database) -> None:
    counts = await trials.race(sqlite_db, 3, workers=2, seed=7, fault="swallow_conflict")
    assert counts.double_advanced == 3
