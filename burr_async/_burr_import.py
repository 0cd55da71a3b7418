"""``burr-async import-burr``: copy the applications Burr's SQLite and Postgres persisters
stored into burr_async's table, so that ``initialize_from`` resumes them where Burr left off.

It registers itself on :data:`burr_async.cli.cli` when ``burr_async.cli`` is imported.

Burr's table (``SQLitePersister``, ``AsyncSQLitePersister``, ``PostgreSQLPersister``,
``AsyncPostgreSQLPersister``): ``partition_key`` (``''`` for none), ``app_id``,
``sequence_id``, ``position`` (the action), ``status`` (``completed`` or ``failed``),
``state`` (``json.dumps`` of ``State.serialize()``: TEXT on SQLite, JSONB on Postgres, with
Burr's bookkeeping keys ``__SEQUENCE_ID`` and ``__PRIOR_STEP`` inside) and ``created_at``
(SQLite: UTC text from ``CURRENT_TIMESTAMP``; Postgres: a ``TIMESTAMP`` in the server's time
zone), keyed by (partition_key, app_id, sequence_id, position). It records neither a fork's
parent nor a sub-application's spawning parent (Burr keeps those in its tracking client's
metadata, not in the persister's table), so every imported step has neither.

What it does, per app, in sequence order:

- every row is validated first (ids, sequence id, action, status, state JSON, time); the state
  is parsed as plain JSON (strict: no NaN, no integer beyond 64 bits), Burr's bookkeeping keys
  are dropped, and nothing in it is imported or instantiated: an object Burr serialized (a dict
  with ``__burr_serde__``, naming a class) stays a plain dict, and the report says so;
- an app is copied whole or not at all: one bad row, two rows of one step, or a history that
  does not start at step 0 or has a gap (a Burr fork starts at its source's step + 1) skips
  the app, since burr_async stores each step only after the one before it;
- steps keep their sequence id, action, status and Burr's time; each is written through the
  persister's save path (its checks, its delta encoding, its "after its predecessor" rule);
- a step already in the table is compared, never overwritten: the same step is skipped (so a
  second run copies only what Burr stored since), a different one (the app went on in
  burr_async, or another app has the id) skips the app;
- the source is opened read-only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import click
import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from burr_async.cli import (
    CliError,
    Settings,
    _fail,
    _first_line,
    _printable,
    _with_engine,
    cli,
)
from burr_async.errors import (
    AppDeletedError,
    CommitUnknownError,
    ConcurrentStepError,
    SerializationError,
    quote,
)
from burr_async.persistence.base import MAX_ID_LENGTH, PersistedStateData, Status
from burr_async.persistence.engine import normalize_url, parse_url
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister
from burr_async.serde import OrjsonSerde
from burr_async.state import State

__all__: list[str] = []

BURR_KEYS = ("__SEQUENCE_ID", "__PRIOR_STEP")
"""The bookkeeping keys Burr keeps inside the state; burr_async has them as columns."""
BURR_SERDE_KEY = "__burr_serde__"
"""The key of a dict Burr's serde wrote for an object (its value names the deserializer)."""
COLUMNS = ("partition_key", "app_id", "sequence_id", "position", "status", "state", "created_at")
_MAX_SEQUENCE_ID = 2**31 - 1  # the sequence_id column is a 32-bit integer on Postgres
_TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_WORKERS = 8  # apps copied at once: their writes share commits in the persister's writer


# -- reading Burr's table -------------------------------------------------------------------------
class BurrTable:
    """Burr's table in the source database, read-only. A failure of that database is a
    CliError naming it (not burr_async's database, which the CLI's messages name)."""

    def __init__(self, engine: AsyncEngine, name: str) -> None:
        self.engine = engine
        self.shown_url = engine.url.render_as_string(hide_password=True)
        self.name = name
        self.postgres = engine.dialect.name == "postgresql"
        self.t = sa.table(name, *(sa.column(c) for c in COLUMNS))

    @classmethod
    def engine_for(cls, url: str) -> AsyncEngine:
        """A read-only engine on the source database (SQLite or Postgres)."""
        parsed = parse_url(url)
        backend = parsed.get_backend_name()
        shown = parsed.render_as_string(hide_password=True)
        if backend == "sqlite":
            name = parsed.database or ""
            on_disk = name not in ("", ":memory:") and "uri" not in parsed.query
            if on_disk and not Path(name).is_file():
                _fail(f"--from: Burr's database file {name!r} does not exist ({shown})")
            engine = create_async_engine(parsed)

            def read_only(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                try:
                    cursor.execute("PRAGMA query_only=ON")
                finally:
                    cursor.close()

            sa.event.listen(engine.sync_engine, "connect", read_only)
            return engine
        if backend != "postgresql":
            _fail(f"--from: Burr's SQLite and Postgres persisters are supported, not {shown!r}")
        settings = {"server_settings": {"default_transaction_read_only": "on"}}
        return create_async_engine(parsed, connect_args=settings)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (SQLAlchemyError, OSError) as exc:
            cause = getattr(exc, "orig", None) or exc
            raise CliError(
                f"--from: database error ({self.shown_url}): {type(cause).__name__}: "
                f"{_first_line(cause)}"
            ) from exc

    async def check(self) -> None:
        """CliError unless the table exists with Burr's columns."""
        name, shown_url = self.name, self.shown_url

        def columns(conn: sa.Connection) -> set[str] | None:
            inspector = sa.inspect(conn)
            if not inspector.has_table(name):
                return None
            return {column["name"] for column in inspector.get_columns(name)}

        with self._errors():
            async with self.engine.connect() as conn:
                found = await conn.run_sync(columns)
        if found is None:
            _fail(f"--from: no table {name!r} in {shown_url} (give Burr's table with --table)")
        missing = [c for c in COLUMNS if c not in found]
        if missing:
            _fail(
                f"--from: table {name!r} in {shown_url} is not a table of Burr's persisters: "
                f"it has no column {', '.join(missing)}"
            )

    async def apps(self, partition: str | None) -> list[tuple[Any, Any, int]]:
        """(partition_key, app_id, number of rows) of every app, as stored (unchecked)."""
        t = self.t
        query = sa.select(t.c.partition_key, t.c.app_id, sa.func.count()).group_by(
            t.c.partition_key, t.c.app_id
        )
        if partition is not None:
            query = query.where(t.c.partition_key == partition)
        query = query.order_by(t.c.partition_key, t.c.app_id)
        with self._errors():
            async with self.engine.connect() as conn:
                return [(pk, app, int(n)) for pk, app, n in (await conn.execute(query)).all()]

    async def rows(self, partition_key: str, app_id: str) -> list[tuple[Any, ...]]:
        """(sequence_id, position, status, state, created_at) of the app's rows, as stored.
        On Postgres the state comes as JSON text and the time with its zone (a ``TIMESTAMP``
        is read in the session's time zone, the one Burr's ``CURRENT_TIMESTAMP`` wrote in)."""
        t = self.t
        state: sa.ColumnElement[Any] = t.c.state
        created: sa.ColumnElement[Any] = t.c.created_at
        if self.postgres:
            state = sa.cast(state, sa.Text)
            created = sa.cast(created, sa.DateTime(timezone=True))
        query = (
            sa.select(t.c.sequence_id, t.c.position, t.c.status, state, created)
            .where(t.c.partition_key == partition_key, t.c.app_id == app_id)
            .order_by(t.c.sequence_id)
        )
        with self._errors():
            async with self.engine.connect() as conn:
                return [tuple(row) for row in (await conn.execute(query)).all()]


# -- validating -----------------------------------------------------------------------------------
class Invalid(Exception):
    """A stored value that cannot be copied; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Step:
    """One of Burr's rows, checked and converted."""

    sequence_id: int
    position: str
    status: Status
    values: dict[str, Any]
    created_at: dt.datetime
    serialized: frozenset[tuple[str, str]]  # (state key, Burr serde kind) of the objects


def _kind(value: object) -> str:
    return f"a {type(value).__name__} value"


def check_id(kind: str, value: object, *, empty_ok: bool = False) -> str:
    """``value`` if it is an id burr_async stores, else Invalid."""
    if value is None:
        raise Invalid(f"{kind} is NULL")
    if not isinstance(value, str):
        raise Invalid(f"{kind} is {_kind(value)}, not text")
    if not value and not empty_ok:
        raise Invalid(f"{kind} is empty")
    if len(value) > MAX_ID_LENGTH:
        raise Invalid(f"{kind} has {len(value)} characters (burr_async takes {MAX_ID_LENGTH})")
    if "\x00" in value:
        raise Invalid(f"{kind} holds a NUL character")
    return value


class _Unstorable(ValueError):
    """A JSON number burr_async's serde cannot store."""


def _int(text: str) -> int:
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise _Unstorable("an integer beyond 64 bits")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unstorable(f"the number {text[:40]}, too large for a float")
    return value


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_state(text: object) -> dict[str, Any]:
    """The state values in Burr's JSON text, without Burr's bookkeeping keys; Invalid unless it
    is a JSON object burr_async can store. Plain JSON only: nothing is instantiated."""
    if not isinstance(text, str):
        raise Invalid(f"state is {_kind(text)}, not JSON text")
    try:
        values = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise Invalid("state is nested too deeply") from None
    except _Unstorable as exc:
        raise Invalid(f"state holds {exc}, which burr_async's serde cannot store") from None
    except ValueError as exc:  # JSONDecodeError too
        raise Invalid(f"state is not valid JSON ({_first_line(exc)[:120]})") from None
    if not isinstance(values, dict):
        raise Invalid(f"state is a JSON {type(values).__name__}, not an object")
    for key in BURR_KEYS:
        values.pop(key, None)
    for key, value in values.items():
        if _has_nul(key) or _has_nul(value):
            raise Invalid(f"state key {quote(key)} holds a NUL character")
    try:
        OrjsonSerde().dumps(values)
    except SerializationError as exc:
        raise Invalid(f"state cannot be stored: {_first_line(exc)[:160]}") from None
    return values


def _has_nul(value: object) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def serialized_objects(values: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """(state key, kind) of each object Burr's serde wrote into the state (a dict holding
    ``__burr_serde__``): kept as its plain JSON data."""
    found: set[tuple[str, str]] = set()
    for key, value in values.items():
        stack = [value]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                if BURR_SERDE_KEY in item:
                    kind = item[BURR_SERDE_KEY]
                    found.add((key, kind[:60] if isinstance(kind, str) else _kind(kind)))
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return frozenset(found)


def check_time(value: object) -> dt.datetime:
    """A stored ``created_at`` as an aware UTC datetime (naive text is UTC, as SQLite's
    ``CURRENT_TIMESTAMP`` writes it); Invalid otherwise."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise Invalid(f"created_at {quote(value)} is not a timestamp") from None
    if not isinstance(value, dt.datetime):
        raise Invalid("created_at is NULL" if value is None else f"created_at is {_kind(value)}")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def check_row(row: tuple[Any, ...]) -> Step:
    """A Burr row as a Step; Invalid naming the field that cannot be copied."""
    seq, position, status, state, created_at = row
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise Invalid(f"sequence_id {quote(seq)} is not a whole number")
    if not 0 <= seq <= _MAX_SEQUENCE_ID:
        raise Invalid(f"sequence_id {seq} is out of range (0 to {_MAX_SEQUENCE_ID})")
    where = f"step {seq}: "
    try:
        position = check_id("position", position)
        if status not in ("completed", "failed"):
            raise Invalid(f"status {quote(status)} is neither 'completed' nor 'failed'")
        values = parse_state(state)
        when = check_time(created_at)
    except Invalid as exc:
        raise Invalid(where + str(exc)) from None
    return Step(seq, position, status, values, when, serialized_objects(values))


def check_history(rows: list[tuple[Any, ...]]) -> list[Step]:
    """The app's rows as Steps in order: Invalid for a bad row, two rows of one step, or a
    history that does not run from step 0 without a gap."""
    steps = sorted((check_row(row) for row in rows), key=lambda s: (s.sequence_id, s.position))
    for expected, step in enumerate(steps):
        if step.sequence_id == expected:
            continue
        if expected and step.sequence_id == expected - 1:
            other = steps[expected - 1].position
            raise Invalid(
                f"two rows are step {step.sequence_id} (actions {quote(other)} and "
                f"{quote(step.position)}): which one the app went on from is unknown"
            )
        if expected == 0:
            raise Invalid(
                f"its history starts at step {step.sequence_id}, not 0 (a Burr fork starts "
                "after its source's step, which Burr's table does not record)"
            )
        raise Invalid(f"its history has a gap: no step {expected} before step {step.sequence_id}")
    return steps


# -- copying --------------------------------------------------------------------------------------
@dataclass
class AppReport:
    """What happened to one app."""

    partition_key: Any
    app_id: Any
    rows: int
    copied: list[int] = field(default_factory=list)
    present: int = 0
    older: int = 0  # before the stored latest step, and not stored (pruned or deleted)
    skipped: str | None = None  # why the app (or the rest of it) was not copied
    serialized: frozenset[tuple[str, str]] = frozenset()

    @property
    def not_copied(self) -> int:
        """The rows of a skipped app that were neither copied nor already there."""
        if self.skipped is None:
            return 0
        return self.rows - len(self.copied) - self.present - self.older

    def lines(self, dry_run: bool) -> Iterator[str]:
        """The report lines of the app (none when it was already there in full)."""
        what = f"app {_shown(self.app_id)} ({_where(self.partition_key)})"
        parts = []
        if self.copied:
            verb = "would copy" if dry_run else "copied"
            parts.append(f"{verb} {_steps(self.copied[0], self.copied[-1])}")
        if self.present and (self.copied or self.skipped or self.older):
            parts.append(f"{self.present} already there")
        if self.older:
            parts.append(
                f"{self.older} older than its latest stored step and not stored there "
                "(pruned or deleted in burr_async): not copied back"
            )
        if self.skipped is not None:
            parts.append(f"skipped {_count(self.not_copied, 'row')}: {self.skipped}")
        if parts:
            yield f"{what}: {'; '.join(parts)}"
        if self.serialized and self.copied:
            kinds = sorted(self.serialized)
            objects = ", ".join(f"{quote(key)} ({quote(kind)})" for key, kind in kinds)
            yield (
                f"  note: state keys {objects} hold objects Burr serialized; they are kept as "
                "their plain JSON data (no class is imported): rebuild them in your actions"
            )


def _shown(value: object) -> str:
    return quote(value, 80) if isinstance(value, str) else _kind(value)


def _where(partition_key: object) -> str:
    if partition_key == "":
        return "the default partition"
    if partition_key is None:
        return "partition NULL"
    return f"partition {_shown(partition_key)}"


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _steps(first: int, last: int) -> str:
    return f"step {first}" if first == last else f"steps {first}-{last} ({last - first + 1})"


def _differences(stored: PersistedStateData, step: Step) -> list[str]:
    """How the stored step differs from Burr's (nothing: the same step)."""
    found = []
    if stored.position != step.position:
        found.append(f"its action {quote(stored.position)}, Burr's {quote(step.position)}")
    if stored.status != step.status:
        found.append(f"its status {stored.status}, Burr's {step.status}")
    if stored.state.get_all() != step.values:
        found.append("another state")
    if stored.error is not None:
        found.append("an error text")
    if stored.parent is not None:
        found.append("a fork's parent")
    return found


async def copy_app(
    source: BurrTable,
    target: SQLAlchemyPersister,
    partition_key: Any,
    app_id: Any,
    count: int,
    dry_run: bool,
) -> AppReport:
    """Copy one app of Burr's table into ``target``, as the module docstring says."""
    report = AppReport(partition_key, app_id, count)
    try:
        pk = check_id("partition_key", partition_key, empty_ok=True)
        app = check_id("app_id", app_id)
        steps = check_history(await source.rows(pk, app))
    except Invalid as exc:
        report.skipped = str(exc)
        return report
    report.rows = len(steps)
    report.serialized = frozenset().union(*(s.serialized for s in steps))
    try:
        stored = {s.sequence_id: s for s in await target.history(pk or None, app)}
    except SerializationError as exc:
        report.skipped = f"its steps in burr_async's table cannot be read: {_first_line(exc)}"
        return report
    latest = max(stored, default=-1)
    new = [s for s in steps if s.sequence_id > latest]
    for step in steps[: len(steps) - len(new)]:
        there = stored.get(step.sequence_id)
        if there is None:
            report.older += 1
        elif differences := _differences(there, step):
            report.present = report.older = 0
            report.skipped = (
                f"step {step.sequence_id} in burr_async's table is another step "
                f"({'; '.join(differences)}): the app went on differently there"
            )
            return report
        else:
            report.present += 1
    if dry_run:
        report.copied = [s.sequence_id for s in new]
        return report
    for step in new:
        try:
            await target._save(
                pk or None,
                app,
                step.sequence_id,
                step.position,
                State(step.values),
                step.status,
                None,
                None,
                step.created_at,
            )
        except (ConcurrentStepError, AppDeletedError, CommitUnknownError) as exc:
            why = {
                ConcurrentStepError: "was written meanwhile by another writer",
                AppDeletedError: "does not follow a stored step (the app was deleted meanwhile)",
                CommitUnknownError: "may or may not have been stored (the connection was lost); "
                "run the command again",
            }[type(exc)]
            report.skipped = f"step {step.sequence_id} {why}"
            return report
        report.copied.append(step.sequence_id)
    return report


async def copy_all(
    settings: Settings,
    engine: AsyncEngine,
    source_url: str,
    source_table: str,
    partition: str | None,
    dry_run: bool,
) -> list[AppReport]:
    """Copy every app (of ``partition``) of Burr's table, printing a line per app as it ends."""
    target = SQLAlchemyPersister(engine, table_name=settings.table_name, schema=settings.schema)
    async with target:
        await target._ready()  # an unprovisioned table: one error, naming the command to run
        source_engine = BurrTable.engine_for(source_url)
        try:
            source = BurrTable(source_engine, source_table)
            await source.check()
            apps = iter(await source.apps(partition))
            reports: list[AppReport] = []
            failures: list[Exception] = []

            async def worker(group: anyio.abc.TaskGroup) -> None:
                for partition_key, app_id, count in apps:
                    try:
                        report = await copy_app(
                            source, target, partition_key, app_id, count, dry_run
                        )
                    except Exception as exc:  # the database failed: stop every worker
                        failures.append(exc)
                        group.cancel_scope.cancel()
                        return
                    reports.append(report)
                    for line in report.lines(dry_run):
                        click.echo(_printable(line))

            async with anyio.create_task_group() as group:
                for _ in range(_WORKERS):
                    group.start_soon(worker, group)
            if failures:
                raise failures[0]
            return reports
        finally:
            await source_engine.dispose()


def summary(reports: list[AppReport], table: str, dry_run: bool) -> str:
    """The last line of the report."""
    copied = sum(len(r.copied) for r in reports)
    apps = sum(1 for r in reports if r.copied)
    present = sum(r.present for r in reports)
    skipped = [r for r in reports if r.skipped is not None]
    skipped_rows = sum(r.not_copied for r in skipped)
    older = sum(r.older for r in reports)
    verb = "Would copy" if dry_run else "Copied"
    line = f"{verb} {_count(copied, 'step')} of {_count(apps, 'app')} into table {table!r}"
    line += f"; {_count(present, 'step')} already there"
    if older:
        line += f"; {older} older than a stored latest step, not copied back"
    line += f"; skipped {_count(skipped_rows, 'row')} of {_count(len(skipped), 'app')}"
    line += " (see above)." if skipped else "."
    if dry_run:
        line += " Nothing was written (--dry-run)."
    return line


@cli.command("import-burr")
@click.option(
    "--from",
    "source_url",
    required=True,
    metavar="URL",
    help="Database of Burr's table (sqlite:///burr.db or postgresql://user@host/db).",
)
@click.option(
    "--table", "source_table", default="burr_state", show_default=True, help="Burr's table."
)
@click.option(
    "--partition",
    "-p",
    default=None,
    help="Only this partition ('' for the default one; default: every partition).",
)
@click.option("--dry-run", is_flag=True, help="Report what would be copied; write nothing.")
@click.pass_obj
def import_burr(
    settings: Settings, source_url: str, source_table: str, partition: str | None, dry_run: bool
) -> None:
    """Copy the applications Burr's SQLite or Postgres persister stored (in --table of --from)
    into burr_async's table (--url, --table-name), so that initialize_from resumes them.

    Steps keep their sequence ids; Burr's bookkeeping keys leave the state. Running it again
    copies only what is new. Prints one line per app copied or skipped (and why), then a
    summary.
    """
    if _TABLE.fullmatch(source_table) is None:
        raise click.BadParameter(
            "a table name of letters, digits and underscores", param_hint="--table"
        )
    if (
        normalize_url(source_url) == normalize_url(settings.url)
        and source_table == settings.table_name
        and settings.schema is None
    ):
        _fail(
            f"--table {source_table!r} of --from is burr_async's own table (--table-name): give "
            "burr_async's table another name, e.g. --table-name burr_async_state"
        )
    if (missing := settings.missing_sqlite_file()) is not None:
        _fail(f"database file '{missing}' does not exist. Run: {settings.upgrade_command()}")
    reports = _with_engine(
        settings,
        lambda engine: copy_all(settings, engine, source_url, source_table, partition, dry_run),
    )
    click.echo(_printable(summary(reports, settings.table, dry_run)))
