"""The ``burr-async`` command line, on both backends: db migrations, reading stored apps, errors,
the Mermaid graph, and the installed console script in a subprocess.

CliRunner runs the command in-process and the command calls ``anyio.run``, so every test here
is a sync test, and data is seeded with ``anyio.run`` of a helper coroutine. Both run in a fresh
thread (:func:`in_fresh_thread`): while the session's async database fixtures are alive, anyio's
pytest plugin marks the main thread as running asyncio (through sniffio), and ``anyio.run``
refuses to start there ("Already running asyncio in this thread").
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from burr_async import OrjsonSerde, State
from burr_async.cli import cli
from burr_async.persistence.models import HEAD_REVISION
from tests.databases import Database
from tests.integration._chat import build

# The session databases are async fixtures: sync tests need the anyio backend to set them up.
pytestmark = pytest.mark.usefixtures("anyio_backend")

T = TypeVar("T")
UNREACHABLE = [
    "postgresql+asyncpg://postgres@127.0.0.1:1/test",
    "sqlite+aiosqlite:////nonexistent-burr-async-dir/sub/x.db",
]


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def db_args(db: Database) -> list[str]:
    args = ["--url", db.url]
    if db.schema is not None:
        args += ["--schema", db.schema]
    return args


def in_fresh_thread(fn: Callable[[], T]) -> T:
    """``fn()`` in a new thread, whose context is empty: outside the anyio test runner's."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn).result()


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """Invoke the CLI in-process (BURR_ASYNC_DATABASE_URL unset unless ``env`` sets it)."""
    environment = {"BURR_ASYNC_DATABASE_URL": None, **(env or {})}
    return in_fresh_thread(
        lambda: CliRunner().invoke(cli, list(args), env=environment, catch_exceptions=False)
    )


def run_db(db: Database, *args: str) -> Result:
    return run(*db_args(db), *args)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


def table_rows(output: str) -> list[list[str]]:
    """The body rows of a rich table as lists of cell texts."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


Step = tuple[str | None, str, int, str, dict[str, Any], str, str | None]


def seed(db: Database, *steps: Step) -> None:
    async def save_all() -> None:
        async with db.persister() as persister:
            for partition, app_id, seq, position, values, status, error in steps:
                await persister.save(
                    partition, app_id, seq, position, State(values), status, error=error
                )

    in_fresh_thread(lambda: anyio.run(save_all))


def test_show_displays_a_pydantic_model_as_its_data_without_its_class(db: Database) -> None:
    """The CLI has no model classes registered: it shows the stored data and imports nothing."""
    from pydantic import BaseModel

    class Ticket(BaseModel):
        title: str
        priority: int

    async def save() -> None:
        async with db.persister(serde=OrjsonSerde(models=[Ticket])) as persister:
            await persister.save(
                None, app_id, 0, "a", State({"t": Ticket(title="x", priority=2)}), "completed"
            )

    app_id = unique("model")
    in_fresh_thread(lambda: anyio.run(save))
    shown = run_db(db, "show", app_id)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == {"t": {"title": "x", "priority": 2}}


# -- db -------------------------------------------------------------------------------------------
def test_db_upgrade_current_check_downgrade_on_a_fresh_table(db: Database) -> None:
    name = unique("cli")
    try:
        assert run_db(db, "--table-name", name, "db", "current").stdout == "not provisioned\n"

        check = run_db(db, "--table-name", name, "db", "check")
        assert_one_line_error(check, "not provisioned", "db upgrade", f"--table-name {name}")

        upgraded = run_db(db, "--table-name", name, "db", "upgrade")
        assert upgraded.exit_code == 0, upgraded.output
        assert HEAD_REVISION in upgraded.stdout
        assert run_db(db, "--table-name", name, "db", "current").stdout == f"{HEAD_REVISION}\n"
        ok = run_db(db, "--table-name", name, "db", "check")
        assert ok.exit_code == 0, ok.output
        assert "(head)" in ok.stdout

        down = run_db(db, "--table-name", name, "db", "downgrade", "base")
        assert down.exit_code == 0, down.output
        assert "not provisioned" in down.stdout
        assert run_db(db, "--table-name", name, "db", "current").stdout == "not provisioned\n"
        assert run_db(db, "--table-name", name, "db", "check").exit_code == 1
    finally:
        assert run_db(db, "--table-name", name, "db", "downgrade", "base").exit_code == 0


def test_table_options_may_follow_the_db_command(db: Database) -> None:
    name = unique("cli")
    schema = ["--schema", db.schema] if db.schema else []
    url = ["--url", db.url]
    try:
        upgraded = run(*url, "db", "upgrade", "--table-name", name, *schema)
        assert upgraded.exit_code == 0, upgraded.output
        assert run(*url, "db", "current", "--table-name", name, *schema).stdout == (
            f"{HEAD_REVISION}\n"
        )
        assert run(*url, "db", "check", "--table-name", name, *schema).exit_code == 0
        assert_one_line_error(
            run(*url, "db", "check", "--table-name", "x;drop"), "Invalid table name"
        )
    finally:
        assert run(*url, "db", "downgrade", "base", "--table-name", name, *schema).exit_code == 0


def test_db_check_fails_on_an_unprovisioned_table(db: Database) -> None:
    result = run_db(db, "--table-name", unique("missing"), "db", "check")
    assert result.exit_code != 0
    assert_one_line_error(result, "is not provisioned", "Run: burr-async")


def test_db_check_passes_on_the_session_table(db: Database) -> None:
    result = run_db(db, "db", "check")
    assert result.exit_code == 0, result.output
    assert f"is at revision {HEAD_REVISION}" in result.stdout


def test_the_suggested_upgrade_command_works(db: Database) -> None:
    name = unique("hint")
    try:
        failed = run_db(db, "--table-name", name, "apps")
        assert_one_line_error(failed, "is not provisioned", "Run: burr-async")
        command = shlex.split(failed.stderr.split("Run: ", 1)[1])
        assert command[0] == "burr-async"
        assert run(*command[1:]).exit_code == 0
        listed = run_db(db, "--table-name", name, "apps")
        assert listed.exit_code == 0, listed.output
        assert "no apps in the default partition" in listed.stdout
    finally:
        run_db(db, "--table-name", name, "db", "downgrade", "base")


def test_downgrade_to_an_unknown_revision_is_one_line(db: Database) -> None:
    assert_one_line_error(run_db(db, "db", "downgrade", "nope"), "nope")


# -- reading --------------------------------------------------------------------------------------
def test_apps_lists_the_latest_step_of_each_app(db: Database) -> None:
    part, other = unique("p"), unique("q")
    first, second, elsewhere = unique("a"), unique("b"), unique("c")
    seed(
        db,
        (part, first, 0, "start", {"n": 0}, "completed", None),
        (part, first, 1, "count", {"n": 1}, "completed", None),
        (part, first, 2, "count", {"n": 2}, "failed", "RuntimeError: boom"),
        (part, second, 0, "start", {"n": 0}, "completed", None),
        (other, elsewhere, 0, "start", {"n": 0}, "completed", None),
    )
    result = run_db(db, "apps", "--partition", part)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].split() == [
        "┃", "app", "id", "┃", "partition", "┃", "last", "step", "┃", "position", "┃",
        "status", "┃", "updated", "┃",
    ]  # fmt: skip
    rows = table_rows(result.stdout)
    assert [row[:5] for row in rows] == [
        [second, part, "0", "start", "completed"],
        [first, part, "2", "count", "failed"],
    ]
    for row in rows:
        updated = dt.datetime.fromisoformat(row[5])
        assert updated.utcoffset() == dt.timedelta(0)
        assert abs(dt.datetime.now(dt.UTC) - updated) < dt.timedelta(minutes=10)

    limited = table_rows(run_db(db, "apps", "-p", part, "--limit", "1").stdout)
    assert [row[0] for row in limited] == [second]

    everything = table_rows(run_db(db, "apps", "--all").stdout)
    ids = [row[0] for row in everything]
    assert {first, second, elsewhere} <= set(ids)
    assert ids.index(elsewhere) < ids.index(second) < ids.index(first)  # newest first


def test_apps_on_an_empty_partition_says_so(db: Database) -> None:
    result = run_db(db, "apps", "-p", unique("empty"))
    assert result.exit_code == 0, result.output
    assert "no apps in partition" in result.stdout
    assert "--all" in result.stdout


def test_apps_rejects_partition_with_all(db: Database) -> None:
    result = run_db(db, "apps", "--all", "-p", "x")
    assert result.exit_code == 2
    assert "--partition or --all" in result.stderr


def test_history_prints_one_line_per_step(db: Database) -> None:
    part, app_id = unique("p"), unique("a")
    seed(
        db,
        (part, app_id, 0, "start", {"n": 0}, "completed", None),
        (part, app_id, 1, "count", {"n": 1}, "completed", None),
        (part, app_id, 2, "check", {"n": 1}, "failed", "RuntimeError: boom\n  at line 3"),
    )
    result = run_db(db, "history", app_id, "--partition", part)
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout)
    assert [(r[0], r[1], r[2], r[4]) for r in rows] == [
        ("0", "start", "completed", ""),
        ("1", "count", "completed", ""),
        ("2", "check", "failed", "RuntimeError: boom"),
    ]
    assert all(dt.datetime.fromisoformat(r[3]).tzinfo is not None for r in rows)


def test_show_prints_the_state_as_json(db: Database) -> None:
    app_id = unique("a")
    seed(
        db,
        (None, app_id, 0, "start", {"n": 0, "name": "[bold]x[/bold]"}, "completed", None),
        (
            None,
            app_id,
            1,
            "count",
            {
                "n": 1,
                "when": dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.UTC),
                "price": Decimal("1.10"),
                "tags": {"b", "a"},
                "nested": {"list": [1, "two", None], "ok": True},
            },
            "completed",
            None,
        ),
    )
    latest = run_db(db, "show", app_id)
    assert latest.exit_code == 0, latest.output
    assert json.loads(latest.stdout) == {
        "n": 1,
        "when": "2024-05-06T07:08:09+00:00",
        "price": "1.10",
        "tags": ["a", "b"],
        "nested": {"list": [1, "two", None], "ok": True},
    }
    assert latest.stdout.startswith('{\n  "')  # indented

    first = run_db(db, "show", app_id, "--seq", "0")
    assert json.loads(first.stdout) == {"n": 0, "name": "[bold]x[/bold]"}


def test_diff_prints_added_removed_and_changed_keys(db: Database) -> None:
    part, app_id = unique("p"), unique("a")
    seed(
        db,
        (part, app_id, 0, "start", {"n": 0, "gone": "x", "same": [1]}, "completed", None),
        (part, app_id, 1, "count", {"n": 1, "same": [1], "new": {"k": 2}}, "completed", None),
    )
    result = run_db(db, "diff", app_id, "0", "1", "-p", part)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"app {app_id!r}: step 0 (start) -> step 1 (count)",
        '+ new: {"k": 2}',
        '- gone: "x"',
        "~ n: 0 -> 1",
    ]
    same = run_db(db, "diff", app_id, "1", "1", "-p", part)
    assert same.stdout.splitlines()[-1] == "no differences"


def test_inspecting_an_app_that_ran(db: Database) -> None:
    app_id, partition = unique("run"), "tester"

    async def run_app() -> None:
        async with db.persister() as persister:
            app = await build(persister, app_id)
            await app.astep()  # 0: counter -> count 1
            with pytest.raises(RuntimeError):
                await app.astep(inputs={"fail": True})  # 1: check fails
            resumed = await build(persister, app_id)
            await resumed.arun(halt_after=["done"])  # 2..6: check, counter, check, counter, ...

    in_fresh_thread(lambda: anyio.run(run_app))
    steps = table_rows(run_db(db, "history", app_id, "-p", partition).stdout)
    assert [(r[0], r[1], r[2]) for r in steps] == [
        ("0", "counter", "completed"),
        ("1", "check", "failed"),
        ("2", "check", "completed"),
        ("3", "counter", "completed"),
        ("4", "check", "completed"),
        ("5", "counter", "completed"),
        ("6", "check", "completed"),
        ("7", "done", "completed"),
    ]
    assert steps[1][4] == "RuntimeError: check failed at count=1"
    listed = [r for r in table_rows(run_db(db, "apps", "-p", partition).stdout) if r[0] == app_id]
    assert [r[:5] for r in listed] == [[app_id, partition, "7", "done", "completed"]]
    assert json.loads(run_db(db, "show", app_id, "-p", partition).stdout) == {
        "count": 3,
        "log": [1, 2, 3],
    }
    assert run_db(db, "diff", app_id, "1", "2", "-p", partition).stdout.splitlines()[1:] == [
        "~ log: [] -> [1]"
    ]


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("command", "fragment"),
    [
        (["show"], "no app"),
        (["history"], "no app"),
        (["show", "--seq", "3"], "no step 3"),
        (["diff", "0", "1"], "no step 0"),
    ],
)
def test_unknown_app_is_one_line(db: Database, command: list[str], fragment: str) -> None:
    app_id = unique("ghost")
    args = [command[0], app_id, *command[1:]]
    assert_one_line_error(run_db(db, *args), fragment, repr(app_id))


def test_diff_names_the_missing_step(db: Database) -> None:
    app_id = unique("a")
    seed(db, (None, app_id, 0, "start", {}, "completed", None))
    assert_one_line_error(run_db(db, "diff", app_id, "0", "7"), "no step 7", repr(app_id))


@pytest.mark.parametrize("url", UNREACHABLE)
@pytest.mark.parametrize(
    "command", [["db", "upgrade"], ["db", "current"], ["db", "check"], ["apps"], ["show", "a"]]
)
def test_unreachable_database_is_one_line(url: str, command: list[str]) -> None:
    result = run("--url", url, *command)
    assert_one_line_error(result)
    assert not Path("/nonexistent-burr-async-dir").exists()


def test_passwords_are_hidden_in_messages() -> None:
    url = "postgresql+asyncpg://postgres:s3cret@127.0.0.1:1/test"
    for args in (["--url", url, "db", "current"], ["--url", url, "--table-name", "t1", "apps"]):
        result = run(*args)
        assert_one_line_error(result, "***")
        assert "s3cret" not in result.output


def test_reading_a_missing_sqlite_file_does_not_create_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    result = run("--url", f"sqlite:///{path}", "apps")
    assert_one_line_error(result, "does not exist", "db upgrade")
    assert run("--url", f"sqlite:///{path}", "db", "current").stdout == "not provisioned\n"
    assert not path.exists()


@pytest.mark.parametrize(
    "command",
    [
        ["db", "current"],
        ["db", "check"],
        ["db", "upgrade"],
        ["db", "downgrade", "base"],
        ["apps"],
        ["history", "a"],
        ["show", "a"],
        ["diff", "a", "0", "1"],
    ],
)
@pytest.mark.parametrize("parent", ["absent/sub", "a-file"])
def test_a_sqlite_file_in_a_missing_directory_is_unreachable(
    tmp_path: Path, parent: str, command: list[str]
) -> None:
    (tmp_path / "a-file").write_text("not a directory\n", encoding="utf-8")
    directory = tmp_path / parent
    result = run("--url", f"sqlite:///{directory / 'x.db'}", *command)
    state = "is not a directory" if parent == "a-file" else "does not exist"
    assert_one_line_error(result, "database error", f"directory '{directory}' {state}")
    assert not (tmp_path / "absent").exists()
    assert (tmp_path / "a-file").read_text(encoding="utf-8") == "not a directory\n"


def test_debug_shows_the_traceback() -> None:
    result = run("--debug", "--url", UNREACHABLE[0], "db", "current")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


@pytest.mark.parametrize("value", ["x;drop", 'a"b; drop table burr_state'])
@pytest.mark.parametrize("option", ["--table-name", "--schema"])
@pytest.mark.parametrize("command", [["apps"], ["db", "downgrade", "base"]])
def test_hostile_identifiers_are_rejected(
    db: Database, option: str, value: str, command: list[str]
) -> None:
    result = run("--url", db.url, option, value, *command)
    assert_one_line_error(result, "Invalid", repr(value))
    assert run_db(db, "db", "check").exit_code == 0  # the session table is untouched


def test_schema_on_sqlite_is_rejected(sqlite_db: Database) -> None:
    assert_one_line_error(run("--url", sqlite_db.url, "--schema", "s", "apps"), "Postgres")


def test_invalid_url_is_one_line() -> None:
    assert_one_line_error(run("--url", "not a url", "apps"))


def test_url_comes_from_the_environment(sqlite_db: Database) -> None:
    result = run("db", "current", env={"BURR_ASYNC_DATABASE_URL": sqlite_db.url})
    assert result.stdout == f"{HEAD_REVISION}\n"


# -- hostile strings -----------------------------------------------------------------------------
# Control and format characters, each with the escape the CLI shows for it, and rich markup and
# an emoji code, which must come out verbatim. json.dumps escapes only C0 controls, so DEL, a C1
# control (\x9b is CSI) and U+202E (bidi override) would pass through `show`; rich drops CR,
# backspace and BEL from table cells but keeps ESC. No NUL: Postgres cannot store it.
HOSTILE = [
    ("\x1b]0;pwned\x07", r"\x1b]0;pwned\x07"),
    ("\x1b[2J", r"\x1b[2J"),
    ("\r", r"\r"),
    ("\x08", r"\x08"),
    ("\x7f", r"\x7f"),
    ("\x9b", r"\x9b"),
    ("\u202e", r"\u202e"),
    ("\t", r"\t"),
    ("[bold red]x[/]:warning:", "[bold red]x[/]:warning:"),
]
RAW = ["\x1b", "\x07", "\r", "\x08", "\x7f", "\x9b", "\u202e", "\t", "\u26a0"]  # and no ⚠


def hostile(prefix: str) -> tuple[str, str]:
    """A string holding every HOSTILE piece after ``prefix``, and how the CLI shows it."""
    return prefix + "".join(raw for raw, _ in HOSTILE), prefix + "".join(esc for _, esc in HOSTILE)


def assert_no_raw_controls(text: str) -> None:
    for char in RAW:
        assert char not in text, (char, text)


def test_stored_strings_are_escaped_in_apps_and_history(db: Database) -> None:
    (part, part_shown), (app_id, app_shown) = hostile(unique("p")), hostile(unique("a"))
    (position, position_shown), (error, error_shown) = hostile("pos"), hostile("RuntimeError: ")
    seed(
        db,
        (part, app_id, 0, position, {"n": 0}, "completed", None),
        (part, app_id, 1, "count\nnext", {"n": 1}, "failed", f"{error}\r\n  at line 3"),
    )
    listed = run_db(db, "apps", "-p", part)
    assert listed.exit_code == 0, listed.output
    assert_no_raw_controls(listed.output)
    assert [row[:5] for row in table_rows(listed.stdout)] == [
        [app_shown, part_shown, "1", r"count\nnext", "failed"]
    ]
    everything = run_db(db, "apps", "--all")
    assert_no_raw_controls(everything.output)
    assert [app_shown, part_shown] in [row[:2] for row in table_rows(everything.stdout)]

    steps = run_db(db, "history", app_id, "-p", part)
    assert steps.exit_code == 0, steps.output
    assert_no_raw_controls(steps.output)
    assert [(r[0], r[1], r[2], r[4]) for r in table_rows(steps.stdout)] == [
        ("0", position_shown, "completed", ""),
        ("1", r"count\nnext", "failed", error_shown),
    ]


def test_stored_strings_are_escaped_in_show_and_diff(db: Database) -> None:
    app_id, (key, key_shown) = hostile(unique("a"))[0], hostile("k")
    (position, position_shown), (value, _) = hostile("pos"), hostile("v")
    before = {"n": 0, key: "old", "list": [value]}
    after = {"n": 1, key: value, "new": {key: value}}
    seed(
        db,
        (None, app_id, 0, position, before, "completed", None),
        (None, app_id, 1, "count", after, "completed", None),
    )
    shown = run_db(db, "show", app_id)
    assert shown.exit_code == 0, shown.output
    assert_no_raw_controls(shown.output)
    assert json.loads(shown.stdout) == after  # still valid JSON, with the same strings
    assert r"\u001b]0;pwned\u0007" in shown.stdout
    assert r"\u009b\u202e" in shown.stdout
    assert "[bold red]x[/]:warning:" in shown.stdout
    for command in (["show", app_id, "--seq", "9"], ["diff", app_id, "0", "9"]):
        missing = run_db(db, *command)
        assert_one_line_error(missing, "no step 9", r"\x1b]0;pwned\x07")
        assert_no_raw_controls(missing.output)

    changed = run_db(db, "diff", app_id, "0", "1")
    assert changed.exit_code == 0, changed.output
    assert_no_raw_controls(changed.output)
    lines = changed.stdout.splitlines()
    assert lines[0] == f"app {app_id!r}: step 0 ({position_shown}) -> step 1 (count)"
    value_json, key_json = as_json(value), as_json(key)
    assert lines[1:] == [
        f"+ new: {{{key_json}: {value_json}}}",
        f"- list: [{value_json}]",
        f'~ {key_shown}: "old" -> {value_json}',
        "~ n: 0 -> 1",
    ]


def as_json(text: str) -> str:
    """``text`` as a JSON string with every non-printable character escaped, as diff shows it."""
    return json.dumps(text, ensure_ascii=False).translate(
        {ord(c): f"\\u{ord(c):04x}" for c in "\x7f\x9b\u202e"}
    )


def test_a_stored_revision_is_escaped(db: Database) -> None:
    name = unique("rev")
    revision, revision_shown = "\x1b]0;pwned\x07\x9b\u202e", r"\x1b]0;pwned\x07\x9b\u202e"
    version_table = (
        f"{db.schema}.{name}_alembic_version" if db.schema else f"{name}_alembic_version"
    )

    async def forge() -> None:
        engine = db.engine()
        try:
            async with engine.begin() as conn:
                update = f"UPDATE {version_table} SET version_num = :v"
                await conn.execute(sa.text(update), {"v": revision})
        finally:
            await engine.dispose()

    try:
        assert run_db(db, "--table-name", name, "db", "upgrade").exit_code == 0
        in_fresh_thread(lambda: anyio.run(forge))
        current = run_db(db, "--table-name", name, "db", "current")
        assert (current.exit_code, current.stdout) == (0, f"{revision_shown}\n")
        for command in (["db", "check"], ["apps"]):
            failed = run_db(db, "--table-name", name, *command)
            assert_one_line_error(failed, revision_shown)
            assert_no_raw_controls(failed.output)
    finally:
        in_fresh_thread(lambda: anyio.run(drop_table, db, name))


async def drop_table(db: Database, name: str) -> None:
    engine = db.engine()
    prefix = f"{db.schema}." if db.schema else ""
    try:
        async with engine.begin() as conn:
            for table in (name, f"{name}_alembic_version"):
                await conn.execute(sa.text(f"DROP TABLE IF EXISTS {prefix}{table}"))
    finally:
        await engine.dispose()


def test_error_lines_are_escaped(tmp_path: Path) -> None:
    text, shown = hostile("")
    broken = tmp_path / "broken.py"
    broken.write_text(f"raise RuntimeError({text!r})\n", encoding="utf-8")
    directory = tmp_path / f"dir{text}"
    for args, fragment in [
        (["graph", f"{tmp_path}/absent{text}.py:builder"], f"absent{shown}.py"),
        (["graph", f"{broken}:builder"], f"RuntimeError: {shown}"),
        (["--url", f"sqlite:///{directory}/x.db", "apps"], f"dir{shown}' does not exist"),
    ]:
        result = run(*args)
        assert_one_line_error(result, fragment)
        assert_no_raw_controls(result.output)
    assert not directory.exists()


def test_the_debug_traceback_is_escaped(tmp_path: Path) -> None:
    text, shown = hostile("")
    broken = tmp_path / "broken.py"
    broken.write_text(f"raise RuntimeError({text!r})\n", encoding="utf-8")
    result = run("--debug", "graph", f"{broken}:builder")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert f"RuntimeError: {shown}" in result.stderr
    assert_no_raw_controls(result.output)


@pytest.mark.parametrize(
    "args", [["show", "a", "{text}"], ["apps", "--limit", "{text}"], ["--{text}", "apps"]]
)
def test_usage_errors_are_escaped(args: list[str]) -> None:
    text, shown = hostile("")
    result = run(*(arg.format(text=text) for arg in args))
    assert result.exit_code == 2
    assert shown in result.stderr
    assert_no_raw_controls(result.output)


@pytest.mark.parametrize("args", [[], ["db"]])
def test_a_group_without_a_command_still_prints_its_help(args: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert result.output.startswith("Usage: ")
    assert "\nCommands:\n" in result.output


def test_graph_labels_are_escaped(tmp_path: Path) -> None:
    text, shown = hostile("")
    module = tmp_path / "labels.py"
    module.write_text(
        textwrap.dedent(
            f"""
            from burr_async import ApplicationBuilder, Result, State, action, default

            @action(reads=[], writes=[])
            def step(state: State) -> State:
                return state

            builder = (
                ApplicationBuilder()
                .with_actions(**{{{text!r}: step}}, done=Result())
                .with_transitions(({text!r}, "done", default))
                .with_entrypoint({text!r})
            )
            """
        ),
        encoding="utf-8",
    )
    result = run("graph", f"{module}:builder")
    assert result.exit_code == 0, result.output
    assert_no_raw_controls(result.output)
    assert f'["{shown}"]' in result.stdout


# -- graph ----------------------------------------------------------------------------------------
GRAPH_MODULE = textwrap.dedent(
    """
    import anyio

    from burr_async import ApplicationBuilder, Result, State, action, default, expr

    @action(reads=["n"], writes=["n"])
    def count_up(state: State) -> State:
        return state.update(n=state["n"] + 1)

    builder = (
        ApplicationBuilder()
        .with_actions(count_up, done=Result("n"))
        .with_transitions(("count_up", "done", expr("n >= 3")), ("count_up", "count_up", default))
        .with_state(n=0)
        .with_entrypoint("count_up")
    )

    class Holder:
        graph = builder._graph.build()

    app = anyio.run(builder.abuild)

    not_a_graph = 42
    """
)


@pytest.fixture
def graph_module(tmp_path: Path) -> Path:
    path = tmp_path / f"{unique('flows')}.py"
    path.write_text(GRAPH_MODULE, encoding="utf-8")
    return path


def test_graph_of_a_builder_in_a_file(graph_module: Path) -> None:
    result = run("graph", f"{graph_module}:builder")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "flowchart TD"
    assert '    a0_count_up["count_up"]' in lines
    assert '    a1_done["done"]' in lines
    assert '    a0_count_up -- "n >= 3" --> a1_done' in lines
    assert "    a0_count_up --> a0_count_up" in lines
    assert "    style a0_count_up stroke-width:3px" in lines  # the entrypoint


def test_graph_of_a_module_object(graph_module: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(graph_module.parent)
    result = run("graph", f"{graph_module.stem}:Holder.graph")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("flowchart TD\n")
    assert 'a1_done["done"]' in result.stdout
    assert str(graph_module.parent) not in sys.path  # restored


def test_graph_of_an_application(graph_module: Path) -> None:
    result = run("graph", f"{graph_module}:app")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[:3] == [
        "flowchart TD",
        '    a0_count_up["count_up"]',
        '    a1_done["done"]',
    ]


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("{module}:not_a_graph", "is a int"),
        ("{module}:missing", "has no attribute 'missing'"),
        ("{module}", "is not MODULE:OBJECT"),
        ("{dir}/absent.py:builder", "no such file"),
        ("no_such_module_xyz:builder", "ModuleNotFoundError"),
        ("{dir}/broken.py:builder", "ZeroDivisionError"),
    ],
)
def test_graph_errors_are_one_line(graph_module: Path, target: str, fragment: str) -> None:
    (graph_module.parent / "broken.py").write_text("1 / 0\n", encoding="utf-8")
    spec = target.format(module=graph_module, dir=graph_module.parent)
    assert_one_line_error(run("graph", spec), fragment)


# -- the installed console script -----------------------------------------------------------------
def test_console_script_in_a_subprocess(tmp_path: Path) -> None:
    script = shutil.which("burr-async", path=str(Path(sys.executable).parent))
    assert script is not None, "burr-async is not installed next to the interpreter"
    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, "--url", url, *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if k != "BURR_ASYNC_DATABASE_URL"},
        )

    missing = call("db", "check")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: table 'burr_state' is not provisioned")
    assert "Traceback" not in missing.stderr

    upgraded = call("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    current = call("db", "current")
    assert (current.returncode, current.stdout) == (0, f"{HEAD_REVISION}\n")
    assert call("db", "check").returncode == 0

    unknown = call("show", "nobody")
    assert unknown.returncode == 1
    assert len(unknown.stderr.splitlines()) == 1
    assert "no app 'nobody'" in unknown.stderr
