"""The ``burr-async`` command line: provision the state table and inspect stored applications.

``burr-async [--url URL] [--table-name NAME] [--schema SCHEMA] [--debug] COMMAND ...``

* ``db upgrade|downgrade|current|check``: migrate the state table, or report its revision.
* ``apps``, ``history``, ``show``, ``diff``: read the steps a persister stored (``apps`` and
  ``history`` a page at a time, printing the command for the next page).
* ``delete``, ``prune``, ``expire``: remove stored steps.
* ``import-burr``: copy the apps Burr's persisters stored (``burr_async._burr_import``).

``apps``, ``history`` and the removing commands live in ``burr_async._cli_storage``.
* ``graph MODULE:OBJECT``: print the graph of a builder, application or graph as Mermaid text.
* ``ui``: serve the read-only web UI (``burr_async.ui``; needs the ``ui`` extra).

Expected failures (database unreachable, table missing or behind, unknown app, invalid name)
print one ``error: ...`` line on stderr and exit with status 1; ``--debug`` adds the traceback.

Every stored string (app ids, partition keys, positions, errors, states, revisions) and every
user-supplied one (arguments, URLs, exception messages) is printed through ``_printable``:
its control and other non-printable characters are shown as escapes (``\\x1b``), so that it
cannot move the cursor, retitle or clear the terminal, or reorder text; and rich markup in it
is never read.
"""

from __future__ import annotations

import datetime as dt
import json
import runpy
import shlex
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from importlib import import_module
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn, TypeVar

import anyio
import anyio.to_thread
import click
from alembic.util import CommandError
from click.core import ParameterSource
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.text import Text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from burr_async.application import Application
from burr_async.builder import ApplicationBuilder
from burr_async.errors import (
    BurrAsyncError,
    PersistenceError,
    SchemaAheadError,
    SchemaOutOfDateError,
)
from burr_async.graph import Graph, GraphBuilder
from burr_async.persistence import migrate
from burr_async.persistence._dialect import dialect_class
from burr_async.persistence.base import PersistedStateData, Status
from burr_async.persistence.engine import DEFAULT_DATABASE_URL, create_engine, normalize_url
from burr_async.persistence.models import (
    DEFAULT_TABLE_NAME,
    HEAD_REVISION,
    runs_on,
    schema_status,
    stores_deltas,
    stores_spawning_parents,
    validate_identifier,
)
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister
from burr_async.serde import OrjsonSerde

__all__ = ["CliError", "cli", "main"]

T = TypeVar("T")


class CliError(Exception):
    """An expected failure of a command, reported as one ``error: ...`` line."""


# Failures reported in one line (the traceback only under --debug); anything else is a bug.
_EXPECTED = (BurrAsyncError, SQLAlchemyError, OSError, CommandError, CliError)


@dataclass(frozen=True, slots=True)
class Settings:
    """The global options: the database and the state table the commands work on."""

    url: str
    table_name: str
    schema: str | None
    url_given: bool  # on the command line, so that suggested commands repeat it

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

    def command(self, *command: str) -> str:
        """``burr-async COMMAND...`` on this table, as a shell command (for suggestions)."""
        args = ["burr-async"]
        if self.url_given:
            args += ["--url", self.display_url()]
        if self.table_name != DEFAULT_TABLE_NAME:
            args += ["--table-name", self.table_name]
        if self.schema is not None:
            args += ["--schema", self.schema]
        return shlex.join([*args, *command])

    def upgrade_command(self) -> str:
        """The command that provisions this table."""
        return self.command("db", "upgrade")

    def engine(self) -> AsyncEngine:
        """A new engine for the URL; the caller disposes it."""
        backend = make_url(normalize_url(self.url)).get_backend_name()
        if self.schema is not None and backend != "postgresql":
            raise CliError("--schema is only supported on Postgres; on SQLite use --table-name")
        return create_engine(self.url)

    def missing_sqlite_file(self) -> Path | None:
        """The file of a SQLite URL when it does not exist: reading commands report it rather
        than create an empty database as a side effect. When its directory does not exist
        either, the database is unreachable (CliError): no command creates a directory."""
        url = make_url(normalize_url(self.url))
        name = url.database or ""
        if url.get_backend_name() != "sqlite" or "uri" in url.query or name in ("", ":memory:"):
            return None
        path = Path(name)
        if path.exists():
            return None
        if not path.parent.is_dir():
            state = "is not a directory" if path.parent.exists() else "does not exist"
            _fail(f"database error ({self.display_url()}): directory '{path.parent}' {state}")
        return path


class _Group(click.Group):
    """The root group: turns the expected failures of any command into one ``error:`` line."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        """Parse the global options; a usage error may quote an argument: escape it."""
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:
            _escape_click_error(exc)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; report an expected failure in one line and exit with status 1."""
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:  # a command's usage error, printed by click
            _escape_click_error(exc)
            raise
        except _EXPECTED as exc:
            if isinstance(exc, BrokenPipeError):
                raise  # click exits quietly when the reader went away (`burr-async apps | head`)
            if ctx.params.get("debug"):
                trace = "".join(traceback.format_exception(exc))
                click.echo(_printable(trace, multiline=True), err=True, nl=False)
            settings = ctx.obj if isinstance(ctx.obj, Settings) else None
            click.echo(f"error: {_printable(_message(exc, settings))}", err=True)
            ctx.exit(1)


def _printable(text: str, *, as_json: bool = False, multiline: bool = False) -> str:
    """``text`` safe to print on a terminal: every character ``str.isprintable`` rejects (C0
    and C1 controls such as ESC, BEL, CR, backspace and DEL; format characters such as the
    bidi override U+202E; separators other than the space) is replaced by its escape, as
    ``\\x1b``, ``\\n`` or ``\\u202e``. ``as_json=True`` uses the escapes JSON has (``\\u001b``)
    so that JSON text stays valid JSON; ``multiline=True`` keeps the newlines."""
    if text.isprintable():
        return text

    def escape(char: str) -> str:
        if char.isprintable() or (multiline and char == "\n"):
            return char
        return json.dumps(char)[1:-1] if as_json else char.encode("unicode_escape").decode("ascii")

    return "".join(map(escape, text))


def _escape_click_error(exc: click.ClickException) -> None:
    """Escape the message of an error click prints itself (a usage error may quote an
    argument, as in "Got unexpected extra argument (...)"). Its newlines are kept: the help
    printed for a group run without a command is such a message."""
    message = _printable(exc.message, multiline=True)
    exc.message = message  # type: ignore[misc]  # Final only to type checkers


def _cell(text: str) -> Text:
    """A table cell holding ``text`` escaped, as plain text (never read as rich markup)."""
    return Text(_printable(text))


def _first_line(value: object) -> str:
    """The first non-blank line of ``str(value)`` (its type's name when there is none). Lines
    end at a newline only: a CR or another separator inside a line is escaped when printed."""
    lines = [line.strip() for line in str(value).split("\n") if line.strip()]
    return lines[0] if lines else type(value).__name__


def _message(exc: BaseException, settings: Settings | None) -> str:
    """The one-line message for an expected failure."""
    url = f" ({settings.display_url()})" if settings else ""
    if isinstance(exc, SchemaAheadError):
        return f"{_first_line(exc)}{url}"
    if isinstance(exc, SchemaOutOfDateError):
        state = "is not provisioned" if exc.found is None else f"is at revision {exc.found!r}"
        run = settings.upgrade_command() if settings else "burr-async db upgrade"
        return f"table {exc.table!r} {state}; this burr_async needs {exc.expected!r}. Run: {run}"
    if isinstance(exc, SQLAlchemyError | OSError):
        cause = getattr(exc, "orig", None) or exc
        return f"database error{url}: {type(cause).__name__}: {_first_line(cause)}"
    if isinstance(exc, PersistenceError):
        return f"{_first_line(exc)}{url}"
    return _first_line(exc)


def _fail(message: str) -> NoReturn:
    """Stop the command with ``error: message`` and exit status 1."""
    raise CliError(message)


def _with_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """``work(engine)`` in ``anyio.run``, disposing the engine after. On failure the driver's
    threads are let finish while the loop still runs (see ``Dialect.join_driver_threads``)."""

    async def run() -> T:
        engine = settings.engine()
        try:
            result = await work(engine)
        except Exception:
            await engine.dispose()
            join = dialect_class(engine.dialect.name).join_driver_threads
            await anyio.to_thread.run_sync(join)
            raise
        await engine.dispose()
        return result

    return anyio.run(run)


def _read(settings: Settings, query: Callable[[SQLAlchemyPersister], Awaitable[T]]) -> T:
    """``query(persister)`` on the settings' table (which must exist)."""
    if (missing := settings.missing_sqlite_file()) is not None:
        _fail(f"database file '{missing}' does not exist. Run: {settings.upgrade_command()}")

    async def run(engine: AsyncEngine) -> T:
        persister = SQLAlchemyPersister(  # display only: a pydantic model shows as its data
            engine,
            table_name=settings.table_name,
            schema=settings.schema,
            serde=OrjsonSerde(models_as_data=True),
        )
        async with persister:  # returns its held connections before the engine is disposed
            return await query(persister)

    return _with_engine(settings, run)


def _console() -> Console:
    """Rich output on stdout; when stdout is not a terminal it is never wrapped or truncated."""
    width = None if sys.stdout.isatty() else 10_000
    return Console(width=width, markup=False, emoji=False, highlight=False)


def _when(value: dt.datetime) -> str:
    """A timestamp for tables: UTC, to the second."""
    return value.astimezone(dt.UTC).isoformat(sep=" ", timespec="seconds")


def _status(status: Status) -> Text:
    """A step's status, coloured on a terminal."""
    return Text(_printable(status), style="red" if status == "failed" else "green")


def _not_found(settings: Settings, app_id: str, partition: str | None, seq: int | None) -> str:
    """The message for an unknown app (or an unknown step of it, when ``seq`` is given)."""
    where = f"partition {partition!r}" if partition else "the default partition"
    where += f" of table {settings.table!r}"
    if seq is not None:
        return f"no step {seq} of app {app_id!r} in {where}"
    return f"no app {app_id!r} in {where} (list apps with: burr-async apps --all)"


def _display(value: Any) -> Any:
    """``default=`` for json.dumps: a displayable stand-in for a value JSON cannot hold."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return sorted(value, key=repr)
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if callable(dump) else str(value)


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
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
@click.version_option(package_name="burr_async", prog_name="burr-async")
@click.pass_context
def cli(ctx: click.Context, url: str, table_name: str, schema: str | None, debug: bool) -> None:
    """Provision burr_async's state table and inspect the applications stored in it."""
    validate_identifier(table_name, "table name")
    if schema is not None:
        validate_identifier(schema, "schema")
    url_given = ctx.get_parameter_source("url") == ParameterSource.COMMANDLINE
    ctx.obj = Settings(url, table_name, schema, url_given)


# -- db ---------------------------------------------------------------------------------------
@cli.group()
def db() -> None:
    """Migrate the state table (Alembic, with its own version table) or report its revision."""


def _migrate(
    settings: Settings, change: Callable[..., Awaitable[None]] | None = None, revision: str = ""
) -> str | None:
    """Run ``change`` (``migrate.upgrade`` or ``migrate.downgrade``) to ``revision`` if given;
    return the table's revision (None: not provisioned)."""
    table_name, schema = settings.table_name, settings.schema

    async def run(engine: AsyncEngine) -> str | None:
        if change is not None:
            await change(engine, revision, table_name=table_name, schema=schema)
        return await migrate.current(engine, table_name=table_name, schema=schema)

    settings.missing_sqlite_file()  # a missing directory: unreachable, reported before connecting
    return _with_engine(settings, run)


def _set_table_name(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.obj = replace(_settings(ctx), table_name=validate_identifier(value, "table name"))


def _set_schema(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.obj = replace(_settings(ctx), schema=validate_identifier(value, "schema"))


def _settings(ctx: click.Context) -> Settings:
    settings = ctx.find_object(Settings)
    assert settings is not None, "the root group sets the Settings"
    return settings


def _table_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--table-name`` and ``--schema`` after a ``db`` command too, as in
    ``burr-async db upgrade --table-name steps`` (same as before the command)."""
    command = click.option(
        "--schema",
        default=None,
        expose_value=False,
        callback=_set_schema,
        help="Postgres schema of the table (as the global option).",
    )(command)
    return click.option(
        "--table-name",
        default=None,
        expose_value=False,
        callback=_set_table_name,
        help="State table (as the global option).",
    )(command)


@db.command()
@click.argument("revision", default="head")
@_table_options
@click.pass_obj
def upgrade(settings: Settings, revision: str) -> None:
    """Create the table or migrate it up to REVISION (default: head)."""
    found = _migrate(settings, migrate.upgrade, revision)
    click.echo(_printable(f"table {settings.table!r}: {found or 'not provisioned'}"))


@db.command()
@click.argument("revision")
@_table_options
@click.pass_obj
def downgrade(settings: Settings, revision: str) -> None:
    """Migrate the table down to REVISION ('base' drops the table and its version table)."""
    found = _migrate(settings, migrate.downgrade, revision)
    click.echo(_printable(f"table {settings.table!r}: {found or 'not provisioned'}"))


@db.command()
@_table_options
@click.pass_obj
def current(settings: Settings) -> None:
    """Print the table's revision, or "not provisioned"."""
    found = None if settings.missing_sqlite_file() else _migrate(settings)
    click.echo(_printable(found or "not provisioned"))


@db.command()
@_table_options
@click.pass_obj
def check(settings: Settings) -> None:
    """Exit 0 when this burr_async runs on the table's revision; else 1, naming the command to
    run."""
    found = None if settings.missing_sqlite_file() else _migrate(settings)
    status = schema_status(found)
    if status == "ahead":
        assert found is not None
        raise SchemaAheadError(settings.table, found, HEAD_REVISION)
    if not runs_on(status):
        raise SchemaOutOfDateError(settings.table, found, HEAD_REVISION, "")
    without = _without(found)
    note = {
        "current": "head",
        "compatible": f"newer than {HEAD_REVISION}, and compatible",
        "previous": f"runs, storing {without} until 'db upgrade' brings it to {HEAD_REVISION}",
    }[status]
    click.echo(_printable(f"table {settings.table!r} is at revision {found} ({note})"))


def _without(found: str | None) -> str:
    """What the persister leaves out on a table at the earlier revision ``found``."""
    if not stores_deltas(found):
        return "full states, no spawning parents"
    if not stores_spawning_parents(found):
        return "no spawning parents, no trimmed lists in deltas"
    return "no trimmed lists in deltas (a list shortened at the front is stored whole)"


# -- reading ----------------------------------------------------------------------------------
_Step = PersistedStateData | None
partition_option = click.option(
    "--partition", "-p", default=None, help="Partition key (default: none)."
)


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
    # Not print_json: JSON escapes only C0 controls in strings, and leaves DEL, C1 and U+202E.
    text = json.dumps(step.state.get_all(), indent=2, ensure_ascii=False, default=_display)
    body = JSONHighlighter()(Text(_printable(text, as_json=True, multiline=True)))
    body.no_wrap, body.overflow = True, None
    _console().print(body, soft_wrap=True)


@cli.command()
@click.argument("app_id")
@click.argument("seq_a", type=int)
@click.argument("seq_b", type=int)
@partition_option
@click.pass_obj
def diff(settings: Settings, app_id: str, seq_a: int, seq_b: int, partition: str | None) -> None:
    """Print the state keys added (+), removed (-) and changed (~) from step SEQ_A to SEQ_B."""

    async def both(p: SQLAlchemyPersister) -> tuple[_Step, _Step]:
        return await p.load(partition, app_id, seq_a), await p.load(partition, app_id, seq_b)

    a, b = _read(settings, both)
    if a is None or b is None:
        _fail(_not_found(settings, app_id, partition, seq_a if a is None else seq_b))
    header = f"app {app_id!r}: step {seq_a} ({a.position}) -> step {seq_b} ({b.position})"
    click.echo(_printable(header))
    lines = list(_diff_lines(a.state.get_all(), b.state.get_all()))
    click.echo("\n".join(lines) if lines else "no differences")


def _diff_lines(old: Mapping[str, Any], new: Mapping[str, Any]) -> Iterator[str]:
    """``+ key: value``, ``- key: value`` and ``~ key: old -> new``, values as JSON (all
    escaped by ``_printable``)."""

    def show(value: Any) -> str:
        return _printable(json.dumps(value, default=_display, ensure_ascii=False), as_json=True)

    for key in sorted(new.keys() - old.keys()):
        yield f"+ {_printable(key)}: {show(new[key])}"
    for key in sorted(old.keys() - new.keys()):
        yield f"- {_printable(key)}: {show(old[key])}"
    for key in sorted(old.keys() & new.keys()):
        if old[key] != new[key]:
            yield f"~ {_printable(key)}: {show(old[key])} -> {show(new[key])}"


# -- graph ------------------------------------------------------------------------------------
@cli.command()
@click.argument("target", metavar="MODULE:OBJECT")
def graph(target: str) -> None:
    """Print the graph of an ApplicationBuilder, GraphBuilder, Application or Graph as Mermaid
    text.

    MODULE is a dotted module name (importable from the current directory) or the path of a
    Python file, e.g. myapp.flows:builder or flows/chat.py:builder.
    """
    obj = _import_object(target)
    if isinstance(obj, ApplicationBuilder):
        built = obj._graph
        text = Graph(built._actions, built._transitions).to_mermaid(highlight=obj._entrypoint)
    elif isinstance(obj, GraphBuilder):
        text = Graph(obj._actions, obj._transitions).to_mermaid()
    elif isinstance(obj, Application):
        text = obj.graph.to_mermaid(highlight=obj.position)
    elif isinstance(obj, Graph):
        text = obj.to_mermaid()
    else:
        kind = type(obj).__name__
        _fail(
            f"{target!r} is a {kind}, not an ApplicationBuilder, GraphBuilder, Application or Graph"
        )
    click.echo(_printable(text, multiline=True), nl=False)


# -- ui ---------------------------------------------------------------------------------------
def _set_url(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.obj = replace(_settings(ctx), url=value, url_given=True)


@cli.command()
@click.option(
    "--url",
    default=None,
    expose_value=False,
    callback=_set_url,
    help="Database URL (as the global option).",
)
@_table_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=7241, show_default=True)
@click.option(
    "--graph",
    "graph_target",
    metavar="MODULE:OBJECT",
    default=None,
    help="Draw this graph (what `burr-async graph` takes) instead of the observed one.",
)
@click.pass_obj
def ui(settings: Settings, host: str, port: int, graph_target: str | None) -> None:
    """Serve a read-only web UI over the stored applications until Ctrl+C (needs the ui
    extra: pip install 'burr_async[ui]')."""
    try:
        from burr_async.ui import _graph, _serve
    except ImportError as exc:
        _fail(f"burr-async ui needs the 'ui' extra ({exc.name}): pip install 'burr_async[ui]'")
    given = None if graph_target is None else _graph.resolve_graph(_import_object(graph_target))
    _read(settings, lambda p: p.list_apps(limit=1))  # the table is there and current: checked
    shown = f"[{host}]" if ":" in host else host
    database = f"{settings.display_url()}, table {settings.table}"
    click.echo(_printable(f"burr_async UI on http://{shown}:{port}/ over {database}"))
    click.echo("(read-only; Ctrl+C stops it)")
    _serve.serve(
        settings.url,
        table_name=settings.table_name,
        schema=settings.schema,
        host=host,
        port=port,
        graph=given,
        database=database,
    )


def _import_object(target: str) -> object:
    """The object named by ``MODULE:OBJECT``: MODULE is a dotted name or a ``.py`` file, OBJECT
    may be dotted (``flows:ns.builder``). While importing, the file's directory (or the current
    one) is importable, as it is under ``python``; a file runs with ``__name__`` not
    ``"__main__"``, so its ``if __name__ == "__main__":`` block does not run."""
    ref, _, attr = target.rpartition(":")
    if not ref or not attr:
        _fail(f"{target!r} is not MODULE:OBJECT (e.g. myapp.flows:builder or app.py:builder)")
    is_file = ref.endswith(".py") or "/" in ref or "\\" in ref
    if is_file and not Path(ref).is_file():
        _fail(f"no such file: {ref}")
    directory = str(Path(ref).resolve().parent if is_file else Path.cwd())
    sys.path.insert(0, directory)
    try:
        module = SimpleNamespace(**runpy.run_path(ref)) if is_file else import_module(ref)
    except Exception as exc:
        raise CliError(f"cannot import {ref!r}: {type(exc).__name__}: {_first_line(exc)}") from exc
    finally:
        sys.path.remove(directory)
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            _fail(f"{ref!r} has no attribute {attr!r}")
    return obj


# apps, history, delete, prune and expire (and import-burr) register themselves on ``cli``.
from burr_async import _burr_import, _cli_storage  # noqa: E402, F401


def main() -> None:
    """Entry point of the ``burr-async`` console script."""
    cli(prog_name="burr-async")


if __name__ == "__main__":
    # `python -m burr_async.cli` runs this file as __main__, while _cli_storage registers its
    # commands on the group of the imported burr_async.cli: run that one.
    from burr_async.cli import main as imported_main

    imported_main()
