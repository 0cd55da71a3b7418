"""The ``burr-async`` command line: provision the state table and inspect stored applications.

``burr-async [--url URL] [--table-name NAME] [--schema SCHEMA] [--debug] COMMAND ...``

* ``db upgrade|downgrade|current|check``: migrate the state table, or report its revision.
* ``apps``, ``history``, ``show``, ``diff``: read the steps a persister stored.
* ``graph MODULE:OBJECT``: print the graph of a builder, application or graph as Mermaid text.

Expected failures (database unreachable, table missing or behind, unknown app, invalid name)
print one ``error: ...`` line on stderr and exit with status 1; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import json
import shlex
import sys
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn, TypeVar

import anyio
import click
from alembic.util import CommandError
from click.core import ParameterSource
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from burr_async.application import Application
from burr_async.builder import ApplicationBuilder
from burr_async.errors import BurrAsyncError, SchemaOutOfDateError
from burr_async.graph import Graph
from burr_async.persistence import migrate
from burr_async.persistence.base import PersistedStateData as Step
from burr_async.persistence.base import Status
from burr_async.persistence.engine import DEFAULT_DATABASE_URL, create_engine, normalize_url
from burr_async.persistence.models import DEFAULT_TABLE_NAME, HEAD_REVISION, validate_identifier
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister

__all__ = ["CliError", "cli", "main"]

T = TypeVar("T")


class CliError(Exception):
    """An expected failure of a command, reported as one ``error: ...`` line."""


# Failures reported as one line (with the traceback only under --debug); anything else is a bug.
_EXPECTED = (BurrAsyncError, SQLAlchemyError, OSError, CommandError, CliError)


@dataclass(frozen=True, slots=True)
class Settings:
    """The global options: the database and the state table that the commands work on."""

    url: str
    table_name: str
    schema: str | None
    debug: bool
    url_on_command_line: bool

    @property
    def table(self) -> str:
        """The table's name as messages show it (``schema.table`` on Postgres)."""
        return f"{self.schema}.{self.table_name}" if self.schema else self.table_name

    def display_url(self) -> str:
        """The URL with its password hidden, for messages."""
        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except SQLAlchemyError:
            return "(an invalid database URL)"

    def upgrade_command(self) -> str:
        """The command that provisions this table (``--url`` repeated when it was passed)."""
        args = ["burr-async"]
        if self.url_on_command_line:
            args += ["--url", self.display_url()]
        if self.table_name != DEFAULT_TABLE_NAME:
            args += ["--table-name", self.table_name]
        if self.schema is not None:
            args += ["--schema", self.schema]
        return shlex.join([*args, "db", "upgrade"])

    def _check_target(self) -> None:
        backend = make_url(normalize_url(self.url)).get_backend_name()
        if self.schema is not None and backend != "postgresql":
            raise CliError("--schema is only supported on Postgres; on SQLite use --table-name")

    def engine(self) -> AsyncEngine:
        """A new engine for the URL; the caller disposes it."""
        self._check_target()
        return create_engine(self.url)

    def persister(self) -> SQLAlchemyPersister:
        """A new persister owning its engine (use it with ``async with``)."""
        self._check_target()
        return SQLAlchemyPersister.from_url(
            self.url, table_name=self.table_name, schema=self.schema
        )

    def missing_sqlite_file(self) -> Path | None:
        """The database file when the URL names a SQLite file that does not exist (reading
        commands report it rather than create an empty database as a side effect)."""
        url = make_url(normalize_url(self.url))
        database = url.database or ""
        if url.get_backend_name() != "sqlite" or "uri" in url.query:
            return None
        if database in ("", ":memory:") or database.startswith("file:"):
            return None
        path = Path(database)
        return None if path.exists() else path


class _Group(click.Group):
    """The root group: turns expected failures of any command into one ``error:`` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _EXPECTED as exc:
            if ctx.params.get("debug"):
                traceback.print_exception(exc)
            settings = ctx.obj if isinstance(ctx.obj, Settings) else None
            click.echo(f"error: {_message(exc, settings)}", err=True)
            ctx.exit(1)


def _first_line(value: object) -> str:
    """The first non-blank line of ``str(value)`` (an exception's type name if it has none)."""
    lines = [line.strip() for line in str(value).splitlines() if line.strip()]
    return lines[0] if lines else type(value).__name__


def _message(exc: BaseException, settings: Settings | None) -> str:
    if isinstance(exc, SchemaOutOfDateError):
        state = "is not provisioned" if exc.found is None else f"is at revision {exc.found!r}"
        run = settings.upgrade_command() if settings else "burr-async db upgrade"
        return f"table {exc.table!r} {state}; this burr_async needs {exc.expected!r}. Run: {run}"
    if isinstance(exc, SQLAlchemyError | OSError):
        cause = getattr(exc, "orig", None) or exc
        where = f" ({settings.display_url()})" if settings else ""
        return f"database error{where}: {type(cause).__name__}: {_first_line(cause)}"
    return _first_line(exc)


def _fail(message: str) -> NoReturn:
    raise CliError(message)


def _console() -> Console:
    """Rich output on stdout; when stdout is not a terminal it is never wrapped or truncated."""
    return Console(width=None if sys.stdout.isatty() else 10_000, markup=False, highlight=False)


def _when(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(sep=" ", timespec="seconds")


def _partition_text(partition: str | None) -> str:
    return f"partition {partition!r}" if partition else "the default partition"


def _status(status: Status) -> Text:
    return Text(status, style="red" if status == "failed" else "green")


def _display(value: Any) -> Any:
    """``default=`` for json.dumps: a displayable stand-in for values JSON cannot hold."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return sorted(value, key=repr)
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return str(value)


def _json(value: Any) -> str:
    return json.dumps(value, default=_display, ensure_ascii=False)


def _read(settings: Settings, query: Callable[[SQLAlchemyPersister], Awaitable[T]]) -> T:
    """Run ``query`` against a persister for the settings' table, in ``anyio.run``."""
    missing = settings.missing_sqlite_file()
    if missing is not None:
        _fail(
            f"database file {str(missing)!r} does not exist; create it with: "
            f"{settings.upgrade_command()}"
        )

    async def run() -> T:
        async with settings.persister() as persister:
            return await query(persister)

    return anyio.run(run)


def _not_found(settings: Settings, app_id: str, partition: str | None, seq: int | None) -> str:
    where = f"in {_partition_text(partition)} of table {settings.table!r}"
    if seq is not None:
        return f"no step {seq} of app {app_id!r} {where}"
    return f"no app {app_id!r} {where} (list apps with: burr-async apps --all)"


@click.group(cls=_Group)
@click.option(
    "--url",
    envvar="BURR_ASYNC_DATABASE_URL",
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    show_envvar=True,
    help="Database URL (sqlite:///path.db or postgresql://user@host/db).",
)
@click.option("--table-name", default=DEFAULT_TABLE_NAME, show_default=True, help="State table.")
@click.option("--schema", default=None, help="Postgres schema of the table.")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="burr_async", prog_name="burr-async")
@click.pass_context
def cli(ctx: click.Context, url: str, table_name: str, schema: str | None, debug: bool) -> None:
    """Provision burr_async's state table and inspect the applications stored in it."""
    validate_identifier(table_name, "table name")
    if schema is not None:
        validate_identifier(schema, "schema")
    on_command_line = ctx.get_parameter_source("url") == ParameterSource.COMMANDLINE
    ctx.obj = Settings(url, table_name, schema, debug, on_command_line)


# -- db ---------------------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """Migrate the state table (Alembic, with its own version table) or report its revision."""


def _migrate(
    settings: Settings, change: Callable[[AsyncEngine], Awaitable[None]] | None
) -> str | None:
    """Apply ``change`` (if any) to the database, then return the table's revision."""

    async def run() -> str | None:
        engine = settings.engine()
        try:
            if change is not None:
                await change(engine)
            return await migrate.current(
                engine, table_name=settings.table_name, schema=settings.schema
            )
        finally:
            await engine.dispose()

    return anyio.run(run)


def _revision_text(revision: str | None) -> str:
    return revision if revision is not None else "not provisioned"


@db.command()
@click.argument("revision", default="head")
@click.pass_obj
def upgrade(settings: Settings, revision: str) -> None:
    """Create the table or migrate it up to REVISION (default: head)."""

    async def change(engine: AsyncEngine) -> None:
        await migrate.upgrade(
            engine, revision, table_name=settings.table_name, schema=settings.schema
        )

    found = _migrate(settings, change)
    click.echo(f"table {settings.table!r}: {_revision_text(found)}")


@db.command()
@click.argument("revision")
@click.pass_obj
def downgrade(settings: Settings, revision: str) -> None:
    """Migrate the table down to REVISION; ``base`` drops the table and its version table."""

    async def change(engine: AsyncEngine) -> None:
        await migrate.downgrade(
            engine, revision, table_name=settings.table_name, schema=settings.schema
        )

    found = _migrate(settings, change)
    click.echo(f"table {settings.table!r}: {_revision_text(found)}")


@db.command()
@click.pass_obj
def current(settings: Settings) -> None:
    """Print the table's revision, or "not provisioned"."""
    found = None if settings.missing_sqlite_file() else _migrate(settings, None)
    click.echo(_revision_text(found))


@db.command()
@click.pass_obj
def check(settings: Settings) -> None:
    """Exit 0 when the table is at the revision this burr_async needs, else 1."""
    found = None if settings.missing_sqlite_file() else _migrate(settings, None)
    if found is None:
        _fail(f"table {settings.table!r} is not provisioned. Run: {settings.upgrade_command()}")
    if found != HEAD_REVISION:
        _fail(
            f"table {settings.table!r} is at revision {found!r}; this burr_async needs "
            f"{HEAD_REVISION!r}. Run: {settings.upgrade_command()}"
        )
    click.echo(f"table {settings.table!r} is at revision {found} (head)")


# -- reading ----------------------------------------------------------------------------------
partition_option = click.option(
    "--partition", "-p", default=None, help="Partition key (default: none, i.e. empty)."
)


@cli.command()
@partition_option
@click.option("--all", "all_partitions", is_flag=True, help="List apps of every partition.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.pass_obj
def apps(settings: Settings, partition: str | None, all_partitions: bool, limit: int) -> None:
    """List applications with their latest step, most recently updated first."""
    if partition is not None and all_partitions:
        raise click.UsageError("use either --partition or --all")
    summaries = _read(
        settings, lambda p: p.list_apps(partition, all_partitions=all_partitions, limit=limit)
    )
    if not summaries:
        where = "any partition" if all_partitions else _partition_text(partition)
        hint = "" if all_partitions else " (try --all)"
        click.echo(f"no apps in {where} of table {settings.table!r}{hint}")
        return
    table = Table("app id", "partition", "last step", "position", "status", "updated")
    for s in summaries:
        table.add_row(
            s.app_id,
            s.partition_key or "",
            str(s.sequence_id),
            s.position,
            _status(s.status),
            _when(s.updated_at),
        )
    _console().print(table)


@cli.command()
@click.argument("app_id")
@partition_option
@click.pass_obj
def history(settings: Settings, app_id: str, partition: str | None) -> None:
    """List every step of APP_ID, oldest first."""
    steps = _read(settings, lambda p: p.history(partition, app_id))
    if not steps:
        _fail(_not_found(settings, app_id, partition, None))
    table = Table("seq", "position", "status", "created", "error")
    for step in steps:
        error = _first_line(step.error) if step.error else ""
        table.add_row(
            str(step.sequence_id),
            step.position,
            _status(step.status),
            _when(step.created_at),
            error,
        )
    _console().print(table)


@cli.command()
@click.argument("app_id")
@partition_option
@click.option("--seq", type=int, default=None, help="The step to show (default: the latest).")
@click.pass_obj
def show(settings: Settings, app_id: str, partition: str | None, seq: int | None) -> None:
    """Print the state of APP_ID at its latest step (or --seq) as JSON."""
    step = _read(settings, lambda p: p.load(partition, app_id, seq))
    if step is None:
        _fail(_not_found(settings, app_id, partition, seq))
    _console().print_json(data=step.state.get_all(), default=_display)


@cli.command()
@click.argument("app_id")
@click.argument("seq_a", type=int)
@click.argument("seq_b", type=int)
@partition_option
@click.pass_obj
def diff(settings: Settings, app_id: str, seq_a: int, seq_b: int, partition: str | None) -> None:
    """Print the state keys added, removed and changed from step SEQ_A to step SEQ_B."""

    async def both(p: SQLAlchemyPersister) -> tuple[Step | None, Step | None]:
        return await p.load(partition, app_id, seq_a), await p.load(partition, app_id, seq_b)

    a, b = _read(settings, both)
    if a is None or b is None:
        _fail(_not_found(settings, app_id, partition, seq_a if a is None else seq_b))
    click.echo(f"app {app_id!r}: step {seq_a} ({a.position}) -> step {seq_b} ({b.position})")
    lines = list(_diff_lines(a.state.get_all(), b.state.get_all()))
    click.echo("\n".join(lines) if lines else "no differences")


def _diff_lines(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[str]:
    """``+ key: value`` (added), ``- key: value`` (removed), ``~ key: old -> new`` (changed)."""
    for key in sorted(new.keys() - old.keys()):
        yield f"+ {key}: {_json(new[key])}"
    for key in sorted(old.keys() - new.keys()):
        yield f"- {key}: {_json(old[key])}"
    for key in sorted(old.keys() & new.keys()):
        if old[key] != new[key]:
            yield f"~ {key}: {_json(old[key])} -> {_json(new[key])}"


# -- graph ------------------------------------------------------------------------------------
@cli.command()
@click.argument("target", metavar="MODULE:OBJECT")
def graph(target: str) -> None:
    """Print the graph of an ApplicationBuilder, Application or Graph as Mermaid text.

    MODULE is a dotted module name (importable from the current directory) or a path to a
    Python file, e.g. ``myapp.flows:builder`` or ``examples/flow.py:builder``.
    """
    obj = _import_object(target)
    if isinstance(obj, ApplicationBuilder):
        text = Graph(obj._actions, obj._transitions).to_mermaid(highlight=obj._entrypoint)
    elif isinstance(obj, Application):
        text = obj.graph.to_mermaid(highlight=obj.position)
    elif isinstance(obj, Graph):
        text = obj.to_mermaid()
    else:
        _fail(
            f"{target!r} is a {type(obj).__name__}, not an ApplicationBuilder, Application or Graph"
        )
    click.echo(text, nl=False)


@contextmanager
def _on_sys_path(directory: Path) -> Iterator[None]:
    """Make ``directory`` importable for the duration (as ``python file.py`` would)."""
    entry = str(directory)
    added = entry not in sys.path
    if added:
        sys.path.insert(0, entry)
    try:
        yield
    finally:
        if added and entry in sys.path:
            sys.path.remove(entry)


def _load_module(ref: str) -> ModuleType:
    if not (ref.endswith(".py") or "/" in ref or "\\" in ref):
        with _on_sys_path(Path.cwd()):
            return importlib.import_module(ref)
    path = Path(ref).resolve()
    if not path.is_file():
        _fail(f"no such file: {ref}")
    name = f"_burr_async_cli_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        _fail(f"cannot import {ref}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with _on_sys_path(path.parent):
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_object(target: str) -> object:
    """The object named by ``MODULE:OBJECT`` (OBJECT may be dotted: ``module:ns.builder``)."""
    ref, _, attr = target.rpartition(":")
    if not ref or not attr:
        _fail(f"{target!r} is not MODULE:OBJECT (e.g. myapp.flows:builder or app.py:builder)")
    try:
        obj: object = _load_module(ref)
    except CliError:
        raise
    except Exception as exc:
        raise CliError(f"cannot import {ref!r}: {type(exc).__name__}: {_first_line(exc)}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            _fail(f"{ref!r} has no attribute {attr!r}")
    return obj


def main() -> None:
    """Entry point of the ``burr-async`` console script."""
    cli(prog_name="burr-async")


if __name__ == "__main__":
    main()
