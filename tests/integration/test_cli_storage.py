"""``burr-async delete``, ``prune`` and ``expire``, and the paging of ``apps`` and ``history``,
on both backends.

Each test gets a fresh state table (``table``): removing "every partition" must not reach the
other tests' rows, and the app listing must hold only this test's apps. Like test_cli.py, the
tests are sync and run the CLI and the seeding in a fresh thread (see ``in_fresh_thread``).
"""

from __future__ import annotations

import datetime as dt
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from burr_async import State, _cli_storage
from burr_async.cli import cli
from tests.databases import Database
from tests.integration.test_cli import (
    assert_no_raw_controls,
    db_args,
    hostile,
    in_fresh_thread,
    table_rows,
    unique,
)

pytestmark = pytest.mark.usefixtures("anyio_backend")

REPO = Path(__file__).resolve().parents[2]
Key = tuple[str, str, int]  # (partition_key, app_id, sequence_id) as stored ('' for none)


@dataclass
class StepTable:
    """A fresh, provisioned state table of one test database."""

    db: Database
    name: str

    def cli(self, *args: str, input: str | None = None) -> Result:
        """Run ``burr-async`` on this table."""
        return self.run(*db_args(self.db), "--table-name", self.name, *args, input=input)

    def run(self, *args: str, input: str | None = None) -> Result:
        """Run ``burr-async ARGS`` as given (the global options too)."""
        return in_fresh_thread(
            lambda: CliRunner().invoke(
                cli,
                list(args),
                input=input,
                env={"BURR_ASYNC_DATABASE_URL": None},
                catch_exceptions=False,
            )
        )

    def _run(self, work: Any) -> Any:
        async def run() -> Any:
            async with self.db.persister(table_name=self.name) as persister:
                return await work(persister)

        return in_fresh_thread(lambda: anyio.run(run))

    def seed(self, partition: str | None, app_id: str, count: int, start: int = 0) -> None:
        async def save(persister: Any) -> None:
            for seq in range(start, start + count):
                await persister.save(
                    partition, app_id, seq, f"s{seq}", State({"n": seq}), "completed"
                )

        self._run(save)

    def stored(self) -> set[Key]:
        async def read(persister: Any) -> set[Key]:
            t = persister.table
            async with persister.engine.connect() as conn:
                query = sa.select(t.c.partition_key, t.c.app_uid, t.c.sequence_id)
                return {(pk, app, seq) for pk, app, seq in (await conn.execute(query)).all()}

        result: set[Key] = self._run(read)
        return result

    def steps(self, partition: str | None, app_id: str) -> list[int]:
        return sorted(
            seq for pk, app, seq in self.stored() if (pk, app) == (partition or "", app_id)
        )

    def age(self, partition: str | None, app_id: str, days: int) -> None:
        """Move every step of the app ``days`` back in time."""

        async def update(persister: Any) -> None:
            t = persister.table
            where = sa.and_(t.c.partition_key == (partition or ""), t.c.app_uid == app_id)
            async with persister.engine.begin() as conn:
                rows = (
                    await conn.execute(sa.select(t.c.sequence_id, t.c.created_at).where(where))
                ).all()
                for seq, created in rows:
                    old = created - dt.timedelta(days=days)
                    await conn.execute(
                        sa.update(t).where(where, t.c.sequence_id == seq).values(created_at=old)
                    )

        self._run(update)


@pytest.fixture
def table(db: Database) -> Iterator[StepTable]:
    steps = StepTable(db, unique("storage"))
    upgraded = steps.cli("db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    yield steps
    assert steps.cli("db", "downgrade", "base").exit_code == 0


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def next_page(output: str) -> list[str] | None:
    """The arguments of the ``next page:`` hint after ``burr-async``, or None."""
    hints = [line for line in output.splitlines() if line.startswith("next page: ")]
    if not hints:
        return None
    (hint,) = hints
    args = shlex.split(hint.removeprefix("next page: "))
    assert args[0] == "burr-async"
    return args[1:]


def command(args: list[str] | None) -> list[str] | None:
    """``args`` without the global options."""
    if args is None:
        return None
    while args and args[0] in ("--url", "--table-name", "--schema"):
        args = args[2:]
    return args


# -- delete -----------------------------------------------------------------------------------
def test_delete_removes_one_app_of_its_partition(table: StepTable) -> None:
    table.seed("alice", "chat", 3)
    table.seed("alice", "other", 2)
    table.seed("bob", "chat", 1)
    table.seed(None, "chat", 1)
    before = table.stored()
    out = ok(table.cli("delete", "chat", "-p", "alice", "--yes"))
    assert out == "Removed 3 steps of app 'chat' (partition 'alice').\n"
    assert table.stored() == {k for k in before if k[:2] != ("alice", "chat")}

    out = ok(table.cli("delete", "chat", "--yes"))  # no -p: the default partition
    assert out == "Removed 1 step of app 'chat' (the default partition).\n"
    assert table.steps("bob", "chat") == [0] and table.steps("alice", "other") == [0, 1]


def test_delete_partition_removes_every_app_of_it(table: StepTable) -> None:
    table.seed("alice", "a", 3)
    table.seed("alice", "b", 2)
    table.seed("bob", "a", 1)
    table.seed(None, "a", 1)
    out = ok(table.cli("delete", "--partition", "alice", "--yes"))
    assert out == "Removed 5 steps of partition 'alice'.\n"
    assert table.stored() == {("bob", "a", 0), ("", "a", 0)}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "give the APP_ID"),
        (["a", "--partition", "alice"], "not both"),
        (["--partition", "alice", "-p", "alice"], "takes no -p"),
        (["-p", "alice"], "give the APP_ID"),
    ],
)
def test_delete_takes_exactly_one_of_app_id_and_partition(
    table: StepTable, args: list[str], fragment: str
) -> None:
    table.seed("alice", "a", 2)
    result = table.cli("delete", *args, "--yes")
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr
    assert table.steps("alice", "a") == [0, 1]


# -- prune ------------------------------------------------------------------------------------
def test_prune_one_app_keeps_its_last_steps(table: StepTable) -> None:
    table.seed("alice", "a", 6)
    table.seed("alice", "b", 6)
    out = ok(table.cli("prune", "a", "-p", "alice", "--keep-last", "2", "--yes"))
    assert out == "Removed 4 steps of app 'a' (partition 'alice'), keeping the last 2.\n"
    assert table.steps("alice", "a") == [4, 5]
    assert table.steps("alice", "b") == list(range(6))


def test_prune_without_an_app_prunes_the_partition_or_every_partition(table: StepTable) -> None:
    table.seed("alice", "a", 5)
    table.seed("alice", "b", 2)
    table.seed("bob", "c", 4)
    table.seed(None, "d", 3)
    out = ok(table.cli("prune", "-p", "alice", "--keep-last", "1", "--yes"))
    assert out == (
        "Removed 5 steps of the apps of partition 'alice', keeping the last 1 of each.\n"
    )
    assert (table.steps("alice", "a"), table.steps("alice", "b")) == ([4], [1])
    assert table.steps("bob", "c") == [0, 1, 2, 3]

    out = ok(table.cli("prune", "-p", "", "--keep-last", "2", "--yes"))  # the default one
    assert "Removed 1 step of the apps of the default partition" in out
    assert (table.steps(None, "d"), table.steps("bob", "c")) == ([1, 2], [0, 1, 2, 3])

    out = ok(table.cli("prune", "--keep-last", "1", "--yes"))
    assert out == "Removed 4 steps of the apps of every partition, keeping the last 1 of each.\n"
    assert table.stored() == {("alice", "a", 4), ("alice", "b", 1), ("bob", "c", 3), ("", "d", 2)}


@pytest.mark.parametrize("keep_last", ["0", "-1", "1.5", "two"])
def test_keep_last_must_be_a_whole_number_of_at_least_one(table: StepTable, keep_last: str) -> None:
    table.seed("alice", "a", 3)
    for app in (["a", "-p", "alice"], []):
        result = table.cli("prune", *app, "--keep-last", keep_last, "--yes")
        assert result.exit_code == 2, result.output
        assert "--keep-last" in result.stderr
    assert table.steps("alice", "a") == [0, 1, 2]


def test_removing_an_unknown_app_removes_zero_steps(table: StepTable) -> None:
    table.seed("alice", "a", 3)
    assert ok(table.cli("delete", "ghost", "-p", "alice", "--yes")) == (
        "Removed 0 steps of app 'ghost' (partition 'alice').\n"
    )
    assert ok(table.cli("delete", "a", "-p", "nobody", "--yes")) == (
        "Removed 0 steps of app 'a' (partition 'nobody').\n"
    )
    assert ok(table.cli("prune", "ghost", "--keep-last", "1", "--yes")).startswith(
        "Removed 0 steps of app 'ghost' (the default partition)"
    )
    assert ok(table.cli("delete", "--partition", "nobody", "--yes")) == (
        "Removed 0 steps of partition 'nobody'.\n"
    )
    assert table.steps("alice", "a") == [0, 1, 2]


# -- expire -----------------------------------------------------------------------------------
def test_expire_removes_whole_idle_apps(table: StepTable) -> None:
    for partition, app_id in (("alice", "idle"), ("alice", "busy"), ("bob", "idle"), (None, "x")):
        table.seed(partition, app_id, 2)
    for partition, app_id in (("alice", "idle"), ("bob", "idle"), (None, "x")):
        table.age(partition, app_id, 40)
    out = ok(table.cli("expire", "--idle-for", "30d", "-p", "alice", "--yes"))
    assert out == "Removed 1 app idle for more than 30d (partition 'alice').\n"
    assert table.steps("alice", "idle") == [] and table.steps("alice", "busy") == [0, 1]
    assert table.steps("bob", "idle") == [0, 1]

    out = ok(table.cli("expire", "--idle-for", "30d", "--yes"))
    assert out == "Removed 2 apps idle for more than 30d (every partition).\n"
    assert {key[:2] for key in table.stored()} == {("alice", "busy")}


@pytest.mark.parametrize(
    ("duration", "shown", "expires"),
    [
        ("30d", "30d", True),
        ("5w", "35d", True),
        ("6w", "42d", False),  # 42 days: an app idle for 40 is not idle for that long
        ("959h", "39d23h", True),
        ("961h", "40d1h", False),
        ("57599m", "39d23h59m", True),
        ("3455999s", "39d23h59m59s", True),
        ("39d23h", "39d23h", True),
        ("1w33d1h", "40d1h", False),
        ("90m", "1h30m", True),
        ("45s", "45s", True),
        ("0s", "0s", True),
    ],
)
def test_expire_reads_durations(table: StepTable, duration: str, shown: str, expires: bool) -> None:
    table.seed("alice", "old", 2)
    table.age("alice", "old", 40)
    out = ok(table.cli("expire", "--idle-for", duration, "-p", "alice", "--dry-run"))
    count = "1 app" if expires else "0 apps"
    assert out == f"Would remove {count} idle for more than {shown} (partition 'alice').\n"


@pytest.mark.parametrize(
    "duration",
    [
        "30",
        "d",
        "30x",
        "30D",
        "1h1d",
        "-1d",
        "1.5d",
        "30 d",
        " 30d",
        "1d 12h",
        "1dd",
        "1d1d",
        "2w3w",
        "",
        "٣d",
    ],
)
def test_a_bad_duration_is_a_usage_error_naming_the_accepted_forms(
    table: StepTable, duration: str
) -> None:
    table.seed("alice", "old", 1)
    table.age("alice", "old", 400)
    result = table.cli("expire", "--idle-for", duration, "--yes")
    assert result.exit_code == 2, result.output
    assert "--idle-for" in result.stderr
    assert "30d, 12h, 90m, 45s or 2w" in result.stderr and "1d12h" in result.stderr
    assert table.steps("alice", "old") == [0]


@pytest.mark.parametrize("duration", ["999999999w", "800000d", "9" * 5000 + "s"])
def test_a_duration_reaching_before_year_one_is_a_usage_error(
    table: StepTable, duration: str
) -> None:
    result = table.cli("expire", "--idle-for", duration, "--yes")
    assert result.exit_code == 2, result.output
    assert "too long a duration" in result.stderr


# -- --dry-run, --yes and confirmation -----------------------------------------------------------
REMOVALS = {
    "delete": (["delete", "a", "-p", "alice"], "4 steps of app 'a' (partition 'alice')"),
    "delete_partition": (["delete", "--partition", "alice"], "6 steps of partition 'alice'"),
    "prune": (
        ["prune", "a", "-p", "alice", "--keep-last", "1"],
        "3 steps of app 'a' (partition 'alice'), keeping the last 1",
    ),
    "prune_all": (
        ["prune", "--keep-last", "1"],
        "6 steps of the apps of every partition, keeping the last 1 of each",
    ),
    "expire": (["expire", "--idle-for", "1d"], "1 app idle for more than 1d (every partition)"),
}


def seed_for_removals(table: StepTable) -> set[Key]:
    table.seed("alice", "a", 4)
    table.seed("alice", "b", 2)
    table.seed("bob", "c", 3)
    table.age("bob", "c", 2)
    return table.stored()


@pytest.mark.parametrize("operation", list(REMOVALS))
def test_dry_run_prints_what_would_be_removed_and_removes_nothing(
    table: StepTable, operation: str
) -> None:
    args, what = REMOVALS[operation]
    before = seed_for_removals(table)
    for extra in ([], ["--yes"]):  # never asks, and --yes does not make it remove
        assert ok(table.cli(*args, "--dry-run", *extra)) == f"Would remove {what}.\n"
        assert table.stored() == before
    assert ok(table.cli(*args, "--yes")) == f"Removed {what}.\n"  # the same count
    assert table.stored() < before


@pytest.mark.parametrize("operation", list(REMOVALS))
def test_without_yes_and_without_a_terminal_nothing_is_removed(
    table: StepTable, operation: str
) -> None:
    args, _ = REMOVALS[operation]
    before = seed_for_removals(table)
    result = table.cli(*args, input="y\n")  # an answer on a pipe is not a confirmation
    assert result.exit_code == 2, result.output
    assert "--yes" in result.stderr and "--dry-run" in result.stderr
    assert "Nothing was removed" in result.stderr
    assert result.stdout == ""
    assert table.stored() == before


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stdin is a terminal (CliRunner's input stream is not one)."""
    monkeypatch.setattr(_cli_storage, "_stdin_is_terminal", lambda: True)


@pytest.mark.usefixtures("terminal")
@pytest.mark.parametrize("operation", list(REMOVALS))
@pytest.mark.parametrize("answer", ["y\n", "yes\n"])
def test_on_a_terminal_yes_to_the_prompt_removes(
    table: StepTable, operation: str, answer: str
) -> None:
    args, what = REMOVALS[operation]
    before = seed_for_removals(table)
    result = table.cli(*args, input=answer)
    assert result.exit_code == 0, result.output
    assert f"Remove {what}? [y/N]" in result.stderr
    assert result.stdout.endswith(f"Removed {what}.\n")
    assert table.stored() < before


@pytest.mark.usefixtures("terminal")
@pytest.mark.parametrize("operation", list(REMOVALS))
@pytest.mark.parametrize("answer", ["n\n", "\n", ""])  # no, the default (Enter), end of input
def test_on_a_terminal_anything_but_yes_removes_nothing(
    table: StepTable, operation: str, answer: str
) -> None:
    args, what = REMOVALS[operation]
    before = seed_for_removals(table)
    result = table.cli(*args, input=answer)
    assert result.exit_code == 1, result.output
    assert f"Remove {what}? [y/N]" in result.stderr
    assert "Removed" not in result.stdout
    assert table.stored() == before


@pytest.mark.usefixtures("terminal")
def test_on_a_terminal_yes_skips_the_prompt_and_nothing_to_remove_asks_nothing(
    table: StepTable,
) -> None:
    before = seed_for_removals(table)
    result = table.cli("delete", "b", "-p", "alice", "--yes")
    assert (result.exit_code, result.stderr) == (0, "")
    assert table.stored() == before - {("alice", "b", 0), ("alice", "b", 1)}
    result = table.cli("delete", "ghost")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == "Removed 0 steps of app 'ghost' (the default partition).\n"


def test_removing_from_a_missing_sqlite_file_does_not_create_it(tmp_path: Path) -> None:
    path = tmp_path / "absent.db"
    for args in (["delete", "a", "--yes"], ["prune", "--keep-last", "1", "--dry-run"]):
        result = in_fresh_thread(
            lambda args=args: CliRunner().invoke(
                cli, ["--url", f"sqlite:///{path}", *args], env={"BURR_ASYNC_DATABASE_URL": None}
            )
        )
        assert result.exit_code == 1, result.output
        assert "does not exist" in result.stderr
    assert not path.exists()


# -- paging -------------------------------------------------------------------------------------
def seqs(output: str) -> list[int]:
    return [int(row[0]) for row in table_rows(output)]


def test_history_pages_with_after_and_limit(table: StepTable) -> None:
    table.seed("alice", "a", 7)
    first = ok(table.cli("history", "a", "-p", "alice", "--limit", "3"))
    assert seqs(first) == [0, 1, 2]
    assert command(next_page(first)) == [
        "history", "a", "-p", "alice", "--after", "2", "--limit", "3",
    ]  # fmt: skip
    pages, args = [], next_page(first)
    while args is not None:
        out = ok(table.run(*args))  # the printed command, global options included
        pages.append(seqs(out))
        args = next_page(out)
    assert pages == [[3, 4, 5], [6]]
    assert seqs(ok(table.cli("history", "a", "-p", "alice", "--after", "4"))) == [5, 6]
    assert next_page(ok(table.cli("history", "a", "-p", "alice"))) is None  # no --limit


def test_a_last_full_page_has_no_next_page(table: StepTable) -> None:
    table.seed(None, "a", 6)
    out = ok(table.cli("history", "a", "--after", "2", "--limit", "3"))
    assert (seqs(out), next_page(out)) == ([3, 4, 5], None)


def test_history_after_the_last_step_says_so_and_an_unknown_app_is_an_error(
    table: StepTable,
) -> None:
    table.seed(None, "a", 2)
    assert ok(table.cli("history", "a", "--after", "1")) == "no steps of app 'a' after step 1\n"
    ghost = table.cli("history", "ghost", "--after", "1")
    assert ghost.exit_code == 1 and "no app 'ghost'" in ghost.stderr
    assert table.cli("history", "a", "--limit", "0").exit_code == 2


def walk(table: StepTable, *args: str) -> list[tuple[str, str]]:
    """(partition, app id) of every row over the pages: ``apps ARGS``, then the printed
    commands for the next pages as they are, global options included."""
    out = ok(table.cli(*args))
    seen = [(row[1], row[0]) for row in table_rows(out)]
    while (page := next_page(out)) is not None:
        out = ok(table.run(*page))
        seen += [(row[1], row[0]) for row in table_rows(out)]
    return seen


def test_apps_pages_by_cursor(table: StepTable) -> None:
    ids = [f"app{i}" for i in range(9)]
    for app_id in ids:
        table.seed("alice", app_id, 1)
    table.seed("bob", "elsewhere", 1)
    first = ok(table.cli("apps", "-p", "alice", "--limit", "4"))
    assert [row[0] for row in table_rows(first)] == ids[::-1][:4]  # newest first
    assert command(next_page(first)) == [
        "apps", "-p", "alice", "--limit", "4", "--after", "app5", "--after-seq", "0",
    ]  # fmt: skip
    seen = walk(table, "apps", "-p", "alice", "--limit", "4")
    assert seen == [("alice", app_id) for app_id in ids[::-1]]
    # --after alone: the cursor is the app's latest step, the same while it takes none
    rest = ok(table.cli("apps", "-p", "alice", "--limit", "100", "--after", "app5"))
    assert [row[0] for row in table_rows(rest)] == ids[::-1][4:]
    assert next_page(rest) is None
    end = ok(table.cli("apps", "-p", "alice", "--after", "app0"))
    assert end.startswith("no more apps after 'app0' in partition 'alice'")


def test_apps_of_every_partition_page_with_the_cursor_partition(table: StepTable) -> None:
    apps = [(pk, f"app{i}") for i in range(4) for pk in ("alice", "bob", "")]
    for pk, app_id in apps:
        table.seed(pk, app_id, 1)
    first = ok(table.cli("apps", "--all", "--limit", "2"))
    hint = next_page(first)
    assert hint is not None and hint[-2:] == ["--after-partition", "bob"]
    seen = walk(table, "apps", "--all", "--limit", "2")
    assert seen == apps[::-1]


def test_apps_cursor_usage_and_an_unknown_cursor_app(table: StepTable) -> None:
    table.seed("alice", "a", 2)
    for args in (
        ["--after-seq", "1"],
        ["--after-partition", "alice"],
        ["-p", "alice", "--after", "a", "--after-partition", "alice"],
    ):
        assert table.cli("apps", *args).exit_code == 2
    for args, fragment in (
        (["-p", "alice", "--after", "ghost"], "no app 'ghost'"),
        (["-p", "alice", "--after", "a", "--after-seq", "7"], "no step 7 of app 'a'"),
        (["--all", "--after", "a"], "no app 'a' in the default partition"),  # needs its partition
    ):
        result = table.cli("apps", *args)
        assert result.exit_code == 1, result.output
        assert fragment in result.stderr and "--after" in result.stderr
    ok(table.cli("apps", "--all", "--after", "a", "--after-partition", "alice"))


def test_apps_pages_under_writes_between_pages_have_no_duplicates_or_gaps(
    table: StepTable,
) -> None:
    """Between every two pages, an app already listed, the app the cursor names and an app not
    listed yet each take a step. Every app untouched throughout is listed exactly once, and no
    app twice: the cursor is the step the app was listed at, which a new step does not move."""
    ids = [f"app{i:02}" for i in range(15)]
    for app_id in ids:
        table.seed("alice", app_id, 1)
    touched: set[str] = set()
    seen: list[str] = []

    def step(app_id: str) -> None:
        table.seed("alice", app_id, 1, start=len(table.steps("alice", app_id)))
        touched.add(app_id)

    out = ok(table.cli("apps", "-p", "alice", "--limit", "3"))
    seen += [row[0] for row in table_rows(out)]
    while (page := next_page(out)) is not None:
        step(seen[0])  # listed on the first page
        step(seen[-1])  # the app the cursor names
        step(next(a for a in reversed(ids) if a not in seen and a not in touched))  # not yet
        out = ok(table.run(*page))
        seen += [row[0] for row in table_rows(out)]
    assert len(seen) == len(set(seen))  # no duplicates
    assert set(ids) - touched <= set(seen)  # no gaps
    assert len(touched) >= 6 and len(set(ids) - touched) >= 3  # both kinds were there


# -- escaping -------------------------------------------------------------------------------------
def test_hostile_ids_are_escaped_in_what_is_printed(table: StepTable) -> None:
    (part, part_shown), (app_id, app_shown) = hostile(unique("p")), hostile(unique("a"))
    table.seed(part, app_id, 3)
    table.seed(part, app_id + "2", 1)
    outputs = [
        table.cli("apps", "-p", part, "--limit", "1"),
        table.cli("history", app_id, "-p", part, "--limit", "1"),
        table.cli("delete", app_id, "-p", part, "--dry-run"),
        table.cli("prune", app_id, "-p", part, "--keep-last", "1", "--yes"),
        table.cli("expire", "--idle-for", "1d", "-p", part, "--dry-run"),
        table.cli("delete", app_id, "-p", part),  # refused: no terminal
        table.cli("delete", "--partition", part, "--yes"),
        table.cli("history", app_id, "-p", part, "--after", "9"),  # unknown now
    ]
    for result in outputs:
        assert_no_raw_controls(result.output)
    apps, history, dry, pruned, expired, refused, deleted, gone = outputs
    assert f"--after '{app_shown}2'" in next_page_line(apps.stdout)  # quoted, then escaped
    assert f"history '{app_shown}' -p '{part_shown}'" in next_page_line(history.stdout)
    assert dry.stdout == f"Would remove 3 steps of app '{app_shown}' (partition '{part_shown}').\n"
    assert pruned.stdout.startswith(
        f"Removed 2 steps of app '{app_shown}' (partition '{part_shown}')"
    )
    assert (
        expired.stdout == f"Would remove 0 apps idle for more than 1d (partition '{part_shown}').\n"
    )
    assert refused.exit_code == 2
    assert deleted.stdout == f"Removed 2 steps of partition '{part_shown}'.\n"
    assert gone.exit_code == 1 and app_shown in gone.stderr


def next_page_line(output: str) -> str:
    (line,) = [line for line in output.splitlines() if line.startswith("next page: ")]
    return line


# -- the console script ---------------------------------------------------------------------------
def test_python_dash_m_has_the_storage_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "burr_async.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    for command in ("apps", "history", "delete", "prune", "expire"):
        assert f"\n  {command} " in result.stdout


# -- spawning parents -------------------------------------------------------------------------
def seed_child(
    table: StepTable, partition: str | None, app_id: str, parent: Any, count: int
) -> None:
    """``count`` steps of a sub-application whose spawning parent is ``parent``."""

    async def save(persister: Any) -> None:
        for seq in range(count):
            await persister.save(
                partition, app_id, seq, f"s{seq}", State({}), "completed", spawning_parent=parent
            )

    table._run(save)


def test_history_and_apps_show_the_spawning_parent(table: StepTable) -> None:
    from burr_async import ParentPointer

    table.seed("p", "root", 2)
    seed_child(table, "p", "child", ParentPointer("root", "p", 1), 2)
    seed_child(table, None, "orphan-pk", ParentPointer("root", None, 0), 1)
    steps = table_rows(ok(table.cli("history", "child", "-p", "p")))
    assert [(r[0], r[-1]) for r in steps] == [
        ("0", "root@1 (partition 'p')"),
        ("1", "root@1 (partition 'p')"),
    ]
    plain = ok(table.cli("history", "root", "-p", "p"))
    assert "spawned by" not in plain and len(table_rows(plain)[0]) == 5
    listed = {r[0]: r[-1] for r in table_rows(ok(table.cli("apps", "-p", "p")))}
    assert listed == {"child": "root@1 (partition 'p')", "root": ""}
    assert "spawned by" not in ok(table.cli("apps", "-p", "nobody-here-is-spawned")).lower()
    everywhere = {r[0]: r[-1] for r in table_rows(ok(table.cli("apps", "--all")))}
    assert everywhere["orphan-pk"] == "root@0"


def test_apps_spawned_by_lists_the_children_of_an_app_or_a_step(table: StepTable) -> None:
    from burr_async import ParentPointer

    table.seed("p", "root", 3)
    seed_child(table, "p", "a", ParentPointer("root", "p", 1), 1)
    seed_child(table, None, "b", ParentPointer("root", "p", 2), 2)
    seed_child(table, "p", "c", ParentPointer("root", None, 2), 1)  # another parent app
    seed_child(table, "p", "d", ParentPointer("root@2", "p", 0), 1)  # an id with "@2" in it

    def children(*args: str) -> list[tuple[str, str, str]]:
        return [(r[0], r[1], r[2]) for r in table_rows(ok(table.cli("apps", *args)))]

    assert children("-p", "p", "--spawned-by", "root") == [("b", "", "1"), ("a", "p", "0")]
    assert children("-p", "p", "--spawned-by", "root@2") == [("b", "", "1")]
    assert children("--spawned-by", "root@2") == [("c", "p", "0")]
    assert children("-p", "p", "--spawned-by", "root@2@") == [("d", "p", "0")]
    assert children("-p", "p", "--spawned-by", "root@2@0") == [("d", "p", "0")]
    limited = ok(table.cli("apps", "-p", "p", "--spawned-by", "root", "--limit", "1"))
    assert len(table_rows(limited)) == 1
    assert "1 more app spawned by app 'root' in partition 'p'" in limited
    none = ok(table.cli("apps", "-p", "p", "--spawned-by", "root@0"))
    assert none.startswith("no apps spawned by step 0 of app 'root' in partition 'p' of table")
    assert table.name in none and len(none.splitlines()) == 1
    refused = table.cli("apps", "--all", "--spawned-by", "root")
    assert refused.exit_code == 2 and "--spawned-by goes without --all" in refused.output
    empty = table.cli("apps", "--spawned-by", "@3")
    assert empty.exit_code == 2 and "no app id" in empty.output


def test_hostile_spawning_parents_are_escaped(table: StepTable) -> None:
    from burr_async import ParentPointer

    (part, part_shown), (parent, parent_shown) = hostile(unique("p")), hostile(unique("a"))
    seed_child(table, "q", "child", ParentPointer(parent, part, 3), 1)
    outputs = [
        table.cli("history", "child", "-p", "q"),
        table.cli("apps", "-p", "q"),
        table.cli("apps", "-p", part, "--spawned-by", f"{parent}@3"),
    ]
    for result in outputs:
        assert_no_raw_controls(result.output)
        assert result.exit_code == 0, result.output
    history, apps, children = outputs
    shown = f"{parent_shown}@3 (partition '{part_shown}')"
    assert table_rows(history.stdout)[0][-1] == shown
    assert table_rows(apps.stdout)[0][-1] == shown
    assert [r[0] for r in table_rows(children.stdout)] == ["child"]
