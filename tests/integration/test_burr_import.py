"""``burr-async import-burr``, against tables written by Apache Burr itself (installed).

Each test has a fresh Burr table, written by Burr's own persisters (``AsyncSQLitePersister``
and the sync ``SQLitePersister`` on SQLite, ``AsyncPostgreSQLPersister``, on asyncpg, on
Postgres: Burr's ``PostgreSQLPersister`` needs psycopg2, which is not installed), and a fresh
burr_async table, on the backend of the ``db`` fixture. Burr applications run a few steps, the
command copies them, and burr_async's builder resumes them with ``initialize_from``.

Like test_cli.py, the tests are sync and run the CLI and every coroutine in a fresh thread.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio
import asyncpg
import pytest
import sqlalchemy as sa
from burr.core import ApplicationBuilder as BurrBuilder
from burr.core import State as BurrState
from burr.core import action as burr_action
from burr.core.persistence import SQLitePersister as BurrSyncSQLitePersister
from burr.integrations.persisters.b_aiosqlite import AsyncSQLitePersister as BurrSQLitePersister
from burr.integrations.persisters.b_asyncpg import (
    AsyncPostgreSQLPersister as BurrPostgreSQLPersister,
)
from click.testing import Result

from burr_async import ApplicationBuilder, State, action, default, expr
from tests.databases import POSTGRES_URL, Database
from tests.integration.test_cli import assert_no_raw_controls, db_args, in_fresh_thread, unique
from tests.integration.test_cli_storage import StepTable

pytestmark = pytest.mark.usefixtures("anyio_backend")

T = TypeVar("T")


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await fn()

    return in_fresh_thread(lambda: anyio.run(main))


# -- Burr's side ---------------------------------------------------------------------------------
@burr_action(reads=["n"], writes=["n"])
async def burr_count(state: BurrState) -> BurrState:
    return state.update(n=state["n"] + 1)


@burr_action(reads=["n"], writes=["n"])
def burr_count_sync(state: BurrState) -> BurrState:
    return state.update(n=state["n"] + 1)


@burr_action(reads=["n"], writes=["n"])
async def burr_flaky(state: BurrState) -> BurrState:
    raise RuntimeError("flaky failed in Burr")


@dataclass
class BurrTable:
    """A fresh Burr table, on SQLite (a file) or Postgres (the public schema)."""

    backend: str
    name: str
    path: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}" if self.backend == "sqlite" else POSTGRES_URL

    def persister(self) -> Any:
        """Burr's async persister on this table, as Burr creates it (not yet awaited)."""
        if self.backend == "sqlite":
            return BurrSQLitePersister.from_values(str(self.path), table_name=self.name)
        url = sa.make_url(POSTGRES_URL)
        return BurrPostgreSQLPersister.from_values(
            url.database, url.username, url.password, url.host, url.port, table_name=self.name
        )

    def create(self) -> None:
        async def create() -> None:
            async with self.persister() as persister:
                await persister.initialize()

        run_async(create)

    def run(self, app_id: str, partition: str | None, steps: int, *, fail: bool = False) -> None:
        """Run a Burr app ``steps`` steps (count, count, ...; with ``fail``: count, then the
        flaky action, which raises), resuming it from the table."""

        async def run() -> None:
            async with self.persister() as persister:
                app = await (
                    BurrBuilder()
                    .with_actions(count=burr_count, flaky=burr_flaky)
                    .with_transitions(("count", "flaky" if fail else "count"), ("flaky", "count"))
                    .initialize_from(
                        persister,
                        resume_at_next_action=True,
                        default_state={"n": 0},
                        default_entrypoint="count",
                    )
                    .with_state_persister(persister)
                    .with_identifiers(app_id=app_id, partition_key=partition)
                    .abuild()
                )
                for _ in range(steps):
                    try:
                        await app.astep()
                    except RuntimeError:
                        assert fail

        run_async(run)

    def execute(self, sql: str) -> None:
        """Run one statement on Burr's database."""
        if self.backend == "sqlite":
            with sqlite3.connect(self.path) as conn:
                conn.execute(sql)
            conn.close()
            return

        async def execute() -> None:
            conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        run_async(execute)

    def insert(self, *rows: dict[str, Any]) -> None:
        """Insert rows by hand (as a hostile writer would), with only the columns given."""
        for row in rows:
            columns = ", ".join(row)
            if self.backend == "sqlite":
                marks = ", ".join("?" * len(row))
                with sqlite3.connect(self.path) as conn:
                    conn.execute(
                        f"INSERT INTO {self.name} ({columns}) VALUES ({marks})", list(row.values())
                    )
                conn.close()
            else:

                async def insert(row: dict[str, Any] = row, columns: str = columns) -> None:
                    conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
                    try:
                        marks = ", ".join(f"${i}" for i in range(1, len(row) + 1))
                        sql = f"INSERT INTO {self.name} ({columns}) VALUES ({marks})"
                        await conn.execute(sql, *row.values())
                    finally:
                        await conn.close()

                run_async(insert)

    def times(self, app_id: str) -> list[dt.datetime]:
        """The created_at of the app's rows as Burr stored them, in UTC."""

        async def read() -> list[dt.datetime]:
            if self.backend == "sqlite":
                with sqlite3.connect(self.path) as conn:
                    rows = conn.execute(
                        f"SELECT created_at FROM {self.name} WHERE app_id = ? ORDER BY sequence_id",
                        (app_id,),
                    ).fetchall()
                conn.close()
                return [dt.datetime.fromisoformat(r[0]).replace(tzinfo=dt.UTC) for r in rows]
            conn = await asyncpg.connect(POSTGRES_URL.replace("+asyncpg", ""))
            try:
                rows = await conn.fetch(
                    f"SELECT created_at::timestamptz AS t FROM {self.name} WHERE app_id = $1 "
                    "ORDER BY sequence_id",
                    app_id,
                )
            finally:
                await conn.close()
            return [r["t"].astimezone(dt.UTC) for r in rows]

        return run_async(read)

    def drop(self) -> None:
        if self.backend != "sqlite":
            self.execute(f"DROP TABLE IF EXISTS {self.name}")
            self.execute(f"DROP TABLE IF EXISTS {self.name}_other")


@pytest.fixture
def burr(db: Database, tmp_path: Path) -> Iterator[BurrTable]:
    table = BurrTable(db.backend, unique("burr_src"), tmp_path / "burr.db")
    table.create()
    yield table
    table.drop()


@pytest.fixture
def target(db: Database) -> Iterator[StepTable]:
    steps = StepTable(db, unique("imported"))
    assert steps.cli("db", "upgrade").exit_code == 0
    yield steps
    assert steps.cli("db", "downgrade", "base").exit_code == 0


def import_burr(target: StepTable, burr: BurrTable, *args: str) -> Result:
    result = target.cli("import-burr", "--from", burr.url, "--table", burr.name, *args)
    assert result.exit_code == 0, result.output
    assert_no_raw_controls(result.output)
    return result


def qualified(target: StepTable) -> str:
    """The target table as the command names it."""
    return f"{target.db.schema}.{target.name}" if target.db.schema else target.name


def lines(result: Result) -> list[str]:
    return result.stdout.splitlines()


# -- burr_async's side ---------------------------------------------------------------------------
@action(reads=["n"], writes=["n"])
async def count(state: State) -> State:
    return state.update(n=state["n"] + 1)


@action(reads=["n"], writes=["n"])
async def flaky(state: State) -> State:
    return state.update(n=state["n"] + 100)


def resume(target: StepTable, app_id: str, partition: str | None, steps: int) -> Any:
    """Resume the app in burr_async from ``target``, take ``steps`` steps; return
    (sequence_id, position, state values) after each step, and the stored history."""

    async def run() -> Any:
        async with target.db.persister(table_name=target.name) as persister:
            app = await (
                ApplicationBuilder()
                .with_actions(count=count, flaky=flaky)
                .with_transitions(
                    ("count", "flaky", expr("n < 0")),  # only reached from Burr's failed step
                    ("count", "count", default),
                    ("flaky", "count", default),
                )
                .initialize_from(
                    persister,
                    resume_at_next_action=True,
                    default_state={"n": 0},
                    default_entrypoint="count",
                )
                .with_state_persister(persister)
                .with_identifiers(app_id=app_id, partition_key=partition)
                .abuild()
            )
            before = (app.sequence_id, app.position, app.state.get_all())
            after = []
            for _ in range(steps):
                await app.astep()
                after.append((app.sequence_id, app.position, app.state.get_all()))
            return before, after, await persister.history(partition, app_id)

    return run_async(run)


def history(target: StepTable, app_id: str, partition: str | None) -> list[Any]:
    async def read() -> list[Any]:
        async with target.db.persister(table_name=target.name) as persister:
            return await persister.history(partition, app_id)

    return run_async(read)


# -- copying and resuming ------------------------------------------------------------------------
def test_burr_apps_resume_in_burr_async_where_burr_left_off(
    burr: BurrTable, target: StepTable
) -> None:
    burr.run("chat", "alice", 3)
    burr.run("solo", "", 2)  # Burr's asyncpg persister stores no None
    result = import_burr(target, burr)
    assert set(lines(result)[:-1]) == {
        "app 'chat' (partition 'alice'): copied steps 0-2 (3)",
        "app 'solo' (the default partition): copied steps 0-1 (2)",
    }
    assert lines(result)[-1] == (
        f"Copied 5 steps of 2 apps into table '{qualified(target)}'; 0 steps already there; "
        "skipped 0 rows of 0 apps."
    )

    stored = history(target, "chat", "alice")
    assert [(s.sequence_id, s.position, s.status) for s in stored] == [
        (0, "count", "completed"),
        (1, "count", "completed"),
        (2, "count", "completed"),
    ]
    assert [s.state.get_all() for s in stored] == [{"n": 1}, {"n": 2}, {"n": 3}]  # no __ keys
    assert [s.created_at for s in stored] == burr.times("chat")  # Burr's times, kept
    assert all(
        abs(t - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5) for t in burr.times("chat")
    )

    before, after, steps = resume(target, "chat", "alice", 2)
    assert before == (2, "count", {"n": 3})
    assert after == [(3, "count", {"n": 4}), (4, "count", {"n": 5})]
    assert [s.sequence_id for s in steps] == [0, 1, 2, 3, 4]
    before, after, _ = resume(target, "solo", None, 1)
    assert (before[0], after) == (1, [(2, "count", {"n": 3})])


def test_a_failed_burr_step_runs_its_action_again(burr: BurrTable, target: StepTable) -> None:
    burr.run("f", "p", 2, fail=True)  # count (step 0), then flaky fails (step 1)
    result = import_burr(target, burr)
    assert "app 'f' (partition 'p'): copied steps 0-1 (2)" in lines(result)
    stored = history(target, "f", "p")
    assert [(s.position, s.status, s.error) for s in stored] == [
        ("count", "completed", None),
        ("flaky", "failed", None),  # Burr stores no error text
    ]
    before, after, _ = resume(target, "f", "p", 2)
    assert before == (1, "flaky", {"n": 1})
    assert after == [(2, "flaky", {"n": 101}), (3, "count", {"n": 102})]


def test_tables_of_burrs_sync_sqlite_persister(tmp_path: Path, target: StepTable) -> None:
    path = tmp_path / "sync.db"
    # check_same_thread=False: Burr's __del__ closes the connection on whichever thread collects it
    persister = BurrSyncSQLitePersister.from_values(
        str(path), "burr_state", connect_kwargs={"check_same_thread": False}
    )
    persister.initialize()
    app = (
        BurrBuilder()
        .with_actions(count=burr_count_sync)
        .with_transitions(("count", "count"))
        .with_state(n=0)
        .with_entrypoint("count")
        .with_state_persister(persister)
        .with_identifiers(app_id="sync-app", partition_key="tenant")
        .build()
    )

    for _ in range(3):
        app.step()
    persister.cleanup()
    result = target.cli("import-burr", "--from", f"sqlite:///{path}")  # --table burr_state
    assert result.exit_code == 0, result.output
    assert "app 'sync-app' (partition 'tenant'): copied steps 0-2 (3)" in lines(result)
    before, after, _ = resume(target, "sync-app", "tenant", 1)
    assert before == (2, "count", {"n": 3}) and after == [(3, "count", {"n": 4})]
    with sqlite3.connect(path) as conn:  # opened read-only: Burr's journal mode is untouched
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()


def test_running_it_again_copies_only_new_steps(burr: BurrTable, target: StepTable) -> None:
    burr.run("chat", "alice", 3)
    import_burr(target, burr)
    first = history(target, "chat", "alice")

    again = import_burr(target, burr)
    assert lines(again) == [
        f"Copied 0 steps of 0 apps into table '{qualified(target)}'; 3 steps already there; "
        "skipped 0 rows of 0 apps."
    ]
    assert history(target, "chat", "alice") == first  # nothing rewritten, not even a time

    burr.run("chat", "alice", 2)  # Burr went on: steps 3 and 4
    more = import_burr(target, burr)
    assert lines(more)[0] == "app 'chat' (partition 'alice'): copied steps 3-4 (2); 3 already there"
    stored = history(target, "chat", "alice")
    assert stored[:3] == first
    assert [(s.sequence_id, s.state["n"]) for s in stored[3:]] == [(3, 4), (4, 5)]


def test_dry_run_reports_and_writes_nothing(burr: BurrTable, target: StepTable) -> None:
    burr.run("chat", "alice", 2)
    result = import_burr(target, burr, "--dry-run")
    assert lines(result) == [
        "app 'chat' (partition 'alice'): would copy steps 0-1 (2)",
        f"Would copy 2 steps of 1 app into table '{qualified(target)}'; 0 steps already there; "
        "skipped 0 rows of 0 apps. Nothing was written (--dry-run).",
    ]
    assert target.stored() == set()


def test_partition_filter(burr: BurrTable, target: StepTable) -> None:
    for i in range(12):  # more apps than the command copies at once
        burr.run(f"a{i}", "alice", 2)
    burr.run("b", "bob", 1)
    burr.run("d", "", 1)
    alice = import_burr(target, burr, "--partition", "alice")
    assert lines(alice)[-1].startswith("Copied 24 steps of 12 apps")
    assert {pk for pk, _, _ in target.stored()} == {"alice"}
    default = import_burr(target, burr, "-p", "")
    assert lines(default)[0] == "app 'd' (the default partition): copied step 0"
    assert {pk for pk, _, _ in target.stored()} == {"alice", ""}
    everything = import_burr(target, burr)
    assert lines(everything)[0] == "app 'b' (partition 'bob'): copied step 0"
    assert lines(everything)[-1].startswith("Copied 1 step of 1 app")
    assert len(target.stored()) == 26


def test_an_app_that_went_on_differently_is_not_overwritten(
    burr: BurrTable, target: StepTable
) -> None:
    burr.run("chat", "alice", 2)
    import_burr(target, burr)
    target.seed("alice", "chat", 1, start=2)  # burr_async's step 2: {"n": 2}, action "s2"
    burr.run("chat", "alice", 2)  # Burr's steps 2 and 3
    before = history(target, "chat", "alice")
    result = import_burr(target, burr)
    (line, summary) = lines(result)
    assert line == (
        "app 'chat' (partition 'alice'): skipped 4 rows: step 2 in burr_async's table is "
        "another step (its action 's2', Burr's 'count'; another state): the app went on "
        "differently there"
    )
    assert "skipped 4 rows of 1 app (see above)" in summary
    assert history(target, "chat", "alice") == before


def test_pruned_steps_are_not_copied_back(burr: BurrTable, target: StepTable) -> None:
    burr.run("chat", "alice", 3)
    import_burr(target, burr)
    assert target.cli("prune", "chat", "-p", "alice", "--keep-last", "1", "--yes").exit_code == 0
    result = import_burr(target, burr)
    assert lines(result)[0] == (
        "app 'chat' (partition 'alice'): 1 already there; 2 older than its latest stored step "
        "and not stored there (pruned or deleted in burr_async): not copied back"
    )
    assert target.steps("alice", "chat") == [2]


# -- what cannot be copied -----------------------------------------------------------------------
def row(app_id: Any, seq: Any = 0, *, state: Any = '{"n": 1}', **columns: Any) -> dict[str, Any]:
    values = {
        "partition_key": "h",
        "app_id": app_id,
        "sequence_id": seq,
        "position": "count",
        "status": "completed",
        "state": state,
    }
    values.update(columns)
    return values


def test_hostile_rows_are_skipped_with_the_reason(
    burr: BurrTable, target: StepTable, db: Database
) -> None:
    escape = "\x1b]0;pwned\x07\x9b\u202e"
    huge = "h" * 100_000
    rows = [
        row("not-object", state="[1, 2]"),
        row("status", status="\x1b[31mrunning"),
        row("gap", 0),
        row("gap", 2),
        row("fork", 3),
        row("twice", 0),
        row("twice", 0, position="other"),
        row("long", state='{"n": 123456789012345678901234567890}'),
        row(huge),
        row("x" * 256),
        row(escape + "id", position=escape + "pos"),
        row("", 0),
        row(
            "objects",
            state='{"doc": {"__burr_serde__": "pydantic", "__pydantic_class": '
            '"tests.integration.not_imported.Boom", "x": 1}, '
            '"tag": {"__burr_async__": "pydantic", "value": {"cls": "os:system", "data": {}}}, '
            '"__SEQUENCE_ID": 0, "__PRIOR_STEP": "count"}',
        ),
    ]
    reasons = {
        "not-object": "step 0: state is a JSON list, not an object",
        "status": r"step 0: status '\x1b[31mrunning' is neither 'completed' nor 'failed'",
        "gap": "its history has a gap: no step 1 before step 2",
        "fork": "its history starts at step 3, not 0 (a Burr fork",
        "twice": "two rows are step 0 (actions 'count' and 'other')",
        "long": "step 0: state holds an integer beyond 64 bits, which burr_async's serde",
        "'hhhhh": "app_id has 100000 characters (burr_async takes 255)",
        "'xxxxx": "app_id has 256 characters (burr_async takes 255)",
        "'' ": "app_id is empty",
    }
    if db.backend == "sqlite":  # what only SQLite's loose typing lets a hostile writer store
        rows += [
            row("bad-json", state='{"n": '),
            row("nan", state='{"n": NaN}'),
            row("nul-state", state='{"n": "a\\u0000b"}'),
            row("nul\x00id"),
            row("text-seq", "abc"),
            row("blob-state", state=b'{"n": 1}'),
            row("when", created_at="yesterday"),
            row("null-pk", partition_key=None),
            row("blob-pk", partition_key=b"h"),
        ]
        reasons |= {
            "bad-json": "step 0: state is not valid JSON (Expecting value",
            "nan": "step 0: state is not valid JSON (NaN is not JSON)",
            "nul-state": "step 0: state key 'n' holds a NUL character",
            r"'nul\x00id'": "app_id holds a NUL character",
            "text-seq": "sequence_id 'abc' is not a whole number",
            "blob-state": "step 0: state is a bytes value, not JSON text",
            "when": "step 0: created_at 'yesterday' is not a timestamp",
            "null-pk": "partition_key is NULL",
            "app 'blob-pk' (partition a bytes value)": "partition_key is a bytes value, not text",
        }
    burr.insert(*rows)
    result = import_burr(target, burr)
    output = lines(result)
    for app, reason in reasons.items():
        matching = [line for line in output if app in line and ": skipped " in line]
        assert len(matching) == 1, (app, output)
        assert reason in matching[0], (reason, matching[0])
    assert all(len(line) < 400 for line in output)  # a huge id is shown cut short

    shown = r"\x1b]0;pwned\x07\x9b\u202e"
    assert f"app '{shown}id' (partition 'h'): copied step 0" in output
    assert "app 'objects' (partition 'h'): copied step 0" in output
    note = output[output.index("app 'objects' (partition 'h'): copied step 0") + 1]
    assert note.startswith("  note: state keys 'doc' ('pydantic') hold objects Burr serialized")
    assert "tests.integration.not_imported" not in sys.modules
    assert {app for _, app, _ in target.stored()} == {escape + "id", "objects"}

    (step,) = history(target, "objects", "h")
    assert step.state.get_all() == {  # plain JSON: nothing decoded, nothing imported
        "doc": {
            "__burr_serde__": "pydantic",
            "__pydantic_class": "tests.integration.not_imported.Boom",
            "x": 1,
        },
        "tag": {"__burr_async__": "pydantic", "value": {"cls": "os:system", "data": {}}},
    }
    (odd,) = history(target, escape + "id", "h")
    assert odd.position == escape + "pos"
    assert output[-1].startswith(f"Copied 2 steps of 2 apps into table '{qualified(target)}'")
    assert output[-1].endswith(f"skipped {len(rows) - 2} rows of {len(reasons)} apps (see above).")


# -- errors --------------------------------------------------------------------------------------
def one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in line, line


def test_errors_are_one_line(burr: BurrTable, target: StepTable, tmp_path: Path) -> None:
    missing = target.cli("import-burr", "--from", f"sqlite:///{tmp_path}/none.db")
    one_line_error(missing, "Burr's database file", "none.db' does not exist")
    assert not (tmp_path / "none.db").exists()
    no_table = target.cli("import-burr", "--from", burr.url, "--table", "nope")
    one_line_error(no_table, "no table 'nope' in")
    other = target.cli("import-burr", "--from", "mysql://u@h/db")
    one_line_error(other, "SQLite and Postgres persisters are supported")
    down = target.cli("import-burr", "--from", "postgresql://burr:secret@127.0.0.1:1/burr")
    one_line_error(down, "--from: database error (postgresql+asyncpg://burr:***@127.0.0.1:1/burr)")
    assert "secret" not in down.output
    not_sqlite = tmp_path / "notes.db"
    not_sqlite.write_text("not a database, " * 100)
    garbage = target.cli("import-burr", "--from", f"sqlite:///{not_sqlite}")
    one_line_error(garbage, "--from: database error", "DatabaseError: file is not a database")
    same = target.run("--url", burr.url, "import-burr", "--from", burr.url)
    one_line_error(same, "--table 'burr_state' of --from is burr_async's own table")
    bad_name = target.cli("import-burr", "--from", burr.url, "--table", "x; DROP TABLE y")
    assert bad_name.exit_code == 2 and "--table" in bad_name.stderr
    unprovisioned = target.run(
        *db_args(target.db), "--table-name", unique("none"), "import-burr", "--from", burr.url
    )
    one_line_error(unprovisioned, "is not provisioned", "db upgrade")


def test_a_table_that_is_not_burrs_is_refused(burr: BurrTable, target: StepTable) -> None:
    other = f"{burr.name}_other"
    burr.execute(f"CREATE TABLE {other} (partition_key TEXT, app_uid TEXT, sequence_id INTEGER)")
    result = target.cli("import-burr", "--from", burr.url, "--table", other)
    one_line_error(
        result, "is not a table of Burr's persisters: it has no column app_id, position, status"
    )
