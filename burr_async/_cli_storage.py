"""The ``burr-async`` commands over the stored apps as a whole: listing them a page at a time
(``apps``, ``history``) and removing them (``delete``, ``prune``, ``expire``).

They register themselves on :data:`burr_async.cli.cli` when ``burr_async.cli`` is imported,
and use its helpers, so their output is escaped and their failures reported as the other
commands' are.

Paging: a full page ends with a ``next page: burr-async ...`` line, the command for the next
one. ``apps`` pages by a keyset cursor (the listing is ordered by the time of each app's latest
step, then partition, then app id); ``--after APP_ID --after-seq SEQ`` names the cursor by the
step the app was listed at. That step is never changed, so the cursor stays where it was while
apps take steps: an app untouched between the pages is listed exactly once, and an app that
took a step moved to the top. Without ``--after-seq`` the cursor is the app's latest step now.

Sub-applications: ``apps`` and ``history`` add a ``spawned by`` column (``APP_ID@SEQ``, and
the parent's partition when it has one) when a listed app or step has a spawning parent, and
``apps --spawned-by APP_ID[@SEQ]`` lists the children of an app (of that step), with ``-p`` the
parent's partition (``SQLAlchemyPersister.list_children``).

Removing: every removing command takes ``--dry-run`` (print what it would remove, remove
nothing) and ``--yes``. Without ``--yes`` it asks for confirmation (default no) when stdin is
a terminal, and refuses with exit status 2 when it is not, removing nothing.
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from collections.abc import Awaitable, Callable

import click
from rich.table import Table

from burr_async.cli import (
    Settings,
    _cell,
    _console,
    _fail,
    _first_line,
    _not_found,
    _printable,
    _read,
    _status,
    _when,
    cli,
    partition_option,
)
from burr_async.persistence.base import AppSummary, ParentPointer, PersistedStateData
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister

__all__: list[str] = []


def _next_page(settings: Settings, *command: str) -> None:
    """Print the command that lists the next page."""
    click.echo(_printable(f"next page: {settings.command(*command)}"))


def _where(partition: str | None) -> str:
    return f"partition {partition!r}" if partition else "the default partition"


def _spawner(pointer: ParentPointer | None) -> str:
    """A spawning parent as the ``spawned by`` column shows it: ``APP_ID@SEQ``, followed by
    its partition when it has one (escaped when printed, as every stored string)."""
    if pointer is None:
        return ""
    where = f" (partition {pointer.partition_key!r})" if pointer.partition_key else ""
    return f"{pointer.app_id}@{pointer.sequence_id}{where}"


def _parent_step(value: str) -> tuple[str, int | None]:
    """``--spawned-by``'s ``APP_ID[@SEQ]``: the app id and the step (None: any step). The
    step is what follows the last ``@`` when that is a number; a trailing ``@`` means any step
    (for an app id that itself ends in ``@`` and digits)."""
    app_id, at, seq = value.rpartition("@")
    if not at or not (seq.isdigit() or seq == ""):
        return value, None
    if not app_id:
        raise click.BadParameter(f"no app id in {value!r}", param_hint="--spawned-by")
    return app_id, (int(seq) if seq else None)


# -- paging -----------------------------------------------------------------------------------
@cli.command()
@partition_option
@click.option("--all", "all_partitions", is_flag=True, help="List the apps of every partition.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="At most N apps."
)
@click.option("--after", metavar="APP_ID", default=None, help="The page after this app.")
@click.option(
    "--after-seq",
    type=int,
    default=None,
    help="The step --after's app was listed at (default: its latest step now).",
)
@click.option(
    "--after-partition",
    metavar="PARTITION",
    default=None,
    help="With --all: the partition of --after's app (default: none).",
)
@click.option(
    "--spawned-by",
    metavar="APP_ID[@SEQ]",
    default=None,
    help="Only the apps that APP_ID (its step SEQ) spawned, in any partition; -p is APP_ID's.",
)
@click.pass_obj
def apps(
    settings: Settings,
    partition: str | None,
    all_partitions: bool,
    limit: int,
    after: str | None,
    after_seq: int | None,
    after_partition: str | None,
    spawned_by: str | None,
) -> None:
    """List applications with their latest step, most recently updated first, a page at a
    time (--limit); after a full page, print the command for the next one. With
    --spawned-by: the sub-applications an app spawned (at most --limit of them)."""
    if spawned_by is not None:
        if all_partitions or after is not None or after_seq is not None or after_partition:
            raise click.UsageError("--spawned-by goes without --all and --after")
        _children(settings, partition, *_parent_step(spawned_by), limit)
        return
    if partition is not None and all_partitions:
        raise click.UsageError("use either --partition or --all")
    if after is None and (after_seq is not None or after_partition is not None):
        raise click.UsageError("--after-seq and --after-partition go with --after")
    if after_partition is not None and not all_partitions:
        raise click.UsageError("--after-partition goes with --all (else --after is in -p)")
    cursor_partition = after_partition if all_partitions else partition

    async def page(p: SQLAlchemyPersister) -> list[AppSummary]:
        cursor = None
        if after is not None:
            step = await p.load(cursor_partition, after, after_seq)
            if step is None:
                which = "" if after_seq is None else f"step {after_seq} of "
                where = f"{_where(cursor_partition)} of table {settings.table!r}"
                hint = " (give its partition with --after-partition)" if all_partitions else ""
                _fail(f"--after: no {which}app {after!r} in {where}{hint}")
            cursor = AppSummary(
                step.partition_key,
                after,
                step.sequence_id,
                step.position,
                step.status,
                step.created_at,
            )
        # one more than a page, to tell whether there is a next one
        return await p.list_apps(
            partition, all_partitions=all_partitions, limit=limit + 1, after=cursor
        )

    summaries = _read(settings, page)
    if not summaries:
        where = "any partition" if all_partitions else f"{_where(partition)} (try --all)"
        what = "no apps" if after is None else f"no more apps after {after!r}"
        click.echo(_printable(f"{what} in {where} of table {settings.table!r}"))
        return
    _print_apps(summaries[:limit])
    if len(summaries) > limit:
        last = summaries[limit - 1]
        listed = ["--all"] if all_partitions else ["-p", partition] if partition else []
        cursor = ["--after", last.app_id, "--after-seq", str(last.sequence_id)]
        if all_partitions and last.partition_key:
            cursor += ["--after-partition", last.partition_key]
        _next_page(settings, "apps", *listed, "--limit", str(limit), *cursor)


def _print_apps(summaries: list[AppSummary]) -> None:
    """The apps' table; a ``spawned by`` column when one of them has a spawning parent."""
    spawned = any(s.spawning_parent is not None for s in summaries)
    columns = ["app id", "partition", "last step", "position", "status", "updated"]
    table = Table(*columns, *(["spawned by"] if spawned else []))
    for s in summaries:
        row = (_cell(s.app_id), _cell(s.partition_key or ""), str(s.sequence_id), _cell(s.position))
        extra = [_cell(_spawner(s.spawning_parent))] if spawned else []
        table.add_row(*row, _status(s.status), _when(s.updated_at), *extra)
    _console().print(table)


def _children(
    settings: Settings, partition: str | None, parent: str, parent_seq: int | None, limit: int
) -> None:
    """``apps --spawned-by``: the children of app ``parent`` of ``partition`` (at step
    ``parent_seq``), at most ``limit``, saying how many more there are."""
    found = _read(settings, lambda p: p.list_children(partition, parent, parent_seq))
    step = "" if parent_seq is None else f"step {parent_seq} of "
    what = f"{step}app {parent!r} in {_where(partition)} of table {settings.table!r}"
    if not found:
        click.echo(_printable(f"no apps spawned by {what}"))
        return
    _print_apps(found[:limit])
    if len(found) > limit:
        more = _plural(len(found) - limit, "more app")
        click.echo(_printable(f"{more} spawned by {what} (raise --limit)"))


@cli.command()
@click.argument("app_id")
@partition_option
@click.option("--after", type=int, default=None, metavar="SEQ", help="The steps after step SEQ.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="At most N steps.")
@click.pass_obj
def history(
    settings: Settings, app_id: str, partition: str | None, after: int | None, limit: int | None
) -> None:
    """List the steps of APP_ID, oldest first (the error's first line for failed ones, the
    spawning parent of a sub-application's); with --limit a page at a time, and after a full
    page the command for the next one."""

    async def page(p: SQLAlchemyPersister) -> tuple[list[PersistedStateData], bool]:
        most = None if limit is None else limit + 1  # one more, to tell whether there are more
        steps = await p.history(partition, app_id, after_sequence_id=after, limit=most)
        if steps or after is None:
            return steps, bool(steps)
        return steps, await p.load(partition, app_id) is not None

    steps, exists = _read(settings, page)
    if not exists:
        _fail(_not_found(settings, app_id, partition, None))
    if not steps:
        click.echo(_printable(f"no steps of app {app_id!r} after step {after}"))
        return
    shown = steps[:limit]
    spawned = any(step.spawning_parent is not None for step in shown)
    table = Table("seq", "position", "status", "created", "error", *(["spawned by"] * spawned))
    for step in shown:
        cells = (str(step.sequence_id), _cell(step.position), _status(step.status))
        extra = [_cell(_spawner(step.spawning_parent))] if spawned else []
        table.add_row(
            *cells,
            _when(step.created_at),
            _cell(_first_line(step.error) if step.error else ""),
            *extra,
        )
    _console().print(table)
    if limit is not None and len(steps) > limit:
        where = ["-p", partition] if partition else []
        options = [*where, "--after", str(steps[limit - 1].sequence_id), "--limit", str(limit)]
        if app_id.startswith("-"):  # after "--", so that it is not read as an option
            _next_page(settings, "history", *options, "--", app_id)
        else:
            _next_page(settings, "history", app_id, *options)


# -- removing ---------------------------------------------------------------------------------
_Count = Callable[[SQLAlchemyPersister, bool], Awaitable[int]]  # (persister, dry_run) -> count


def _stdin_is_terminal() -> bool:
    """Whether someone can answer a confirmation prompt."""
    return sys.stdin is not None and sys.stdin.isatty()


def _removal_options(command: Callable[..., None]) -> Callable[..., None]:
    command = click.option(
        "--yes", "-y", is_flag=True, help="Remove without asking for confirmation."
    )(command)
    return click.option(
        "--dry-run", is_flag=True, help="Print what would be removed; remove nothing."
    )(command)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _remove(
    settings: Settings,
    remove: _Count,
    describe: Callable[[int], str],
    *,
    dry_run: bool,
    yes: bool,
) -> None:
    """Run ``remove``: print what it would remove (``dry_run``), or confirm (unless ``yes``),
    remove, and print what it removed. ``describe(count)`` says what ``count`` is of."""
    if dry_run:
        count = _read(settings, lambda p: remove(p, True))
        click.echo(_printable(f"Would remove {describe(count)}."))
        return
    if not yes:
        if not _stdin_is_terminal():
            raise click.UsageError(
                "stdin is not a terminal, so removing cannot be confirmed: pass --yes to "
                "remove, or --dry-run to see what would be removed. Nothing was removed."
            )
        count = _read(settings, lambda p: remove(p, True))
        if count == 0:
            click.echo(_printable(f"Removed {describe(0)}."))
            return
        if not click.confirm(_printable(f"Remove {describe(count)}?"), default=False, err=True):
            click.echo("Nothing was removed.", err=True)
            raise click.exceptions.Exit(1)
    count = _read(settings, lambda p: remove(p, False))
    click.echo(_printable(f"Removed {describe(count)}."))


partition_key_option = click.option(
    "--partition-key", "-p", default=None, help="The app's partition key (default: none)."
)
bulk_partition_option = click.option(
    "--partition-key",
    "-p",
    default=None,
    help="Only the apps of this partition ('' for the default one; default: every partition).",
)


@cli.command()
@click.argument("app_id", required=False)
@partition_key_option
@click.option(
    "--partition", "whole_partition", default=None, help="Delete every app of this partition."
)
@_removal_options
@click.pass_obj
def delete(
    settings: Settings,
    app_id: str | None,
    partition_key: str | None,
    whole_partition: str | None,
    dry_run: bool,
    yes: bool,
) -> None:
    """Delete every step of APP_ID (of partition -p), or every app of --partition.

    Asks for confirmation unless --yes (and refuses without it when stdin is not a terminal);
    --dry-run prints what would be removed and removes nothing.
    """
    if app_id is not None and whole_partition is not None:
        raise click.UsageError(
            "give either APP_ID (with -p for its partition key) or --partition (to delete every "
            "app of a partition), not both"
        )
    if whole_partition is not None:
        if partition_key is not None:
            raise click.UsageError("-p names the partition of APP_ID; --partition takes no -p")
        partition = whole_partition
        _remove(
            settings,
            lambda p, dry: p.delete_partition(partition, dry_run=dry),
            lambda n: f"{_plural(n, 'step')} of {_where(partition)}",
            dry_run=dry_run,
            yes=yes,
        )
        return
    if app_id is None:
        raise click.UsageError("give the APP_ID to delete, or --partition to delete a partition")
    one = app_id
    _remove(
        settings,
        lambda p, dry: p.delete_app(partition_key, one, dry_run=dry),
        lambda n: f"{_plural(n, 'step')} of app {one!r} ({_where(partition_key)})",
        dry_run=dry_run,
        yes=yes,
    )


@cli.command()
@click.argument("app_id", required=False)
@click.option(
    "--keep-last",
    type=click.IntRange(min=1),
    required=True,
    help="How many of each app's latest steps to keep (at least 1).",
)
@click.option(
    "--partition-key",
    "-p",
    default=None,
    help="The partition of APP_ID (default: none); without APP_ID, prune only the apps of "
    "this partition ('' for the default one; default: every partition).",
)
@_removal_options
@click.pass_obj
def prune(
    settings: Settings,
    app_id: str | None,
    keep_last: int,
    partition_key: str | None,
    dry_run: bool,
    yes: bool,
) -> None:
    """Delete all but the last --keep-last steps of APP_ID, or of every app (of -p).

    Asks for confirmation unless --yes (and refuses without it when stdin is not a terminal);
    --dry-run prints what would be removed and removes nothing.
    """
    kept = f"keeping the last {keep_last}"
    if app_id is not None:
        one = app_id
        _remove(
            settings,
            lambda p, dry: p.prune(partition_key, one, keep_last=keep_last, dry_run=dry),
            lambda n: f"{_plural(n, 'step')} of app {one!r} ({_where(partition_key)}), {kept}",
            dry_run=dry_run,
            yes=yes,
        )
        return
    apps = "every partition" if partition_key is None else _where(partition_key)
    _remove(
        settings,
        lambda p, dry: p.prune_all(keep_last=keep_last, partition_key=partition_key, dry_run=dry),
        lambda n: f"{_plural(n, 'step')} of the apps of {apps}, {kept} of each",
        dry_run=dry_run,
        yes=yes,
    )


# -- durations --------------------------------------------------------------------------------
_DURATION = re.compile(r"(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
DURATION_FORMS = (
    "a whole number and a unit, w (weeks), d (days), h (hours), m (minutes) or s (seconds), "
    "as in 30d, 12h, 90m, 45s or 2w; or several, largest unit first, as in 1d12h"
)


def _duration(_ctx: click.Context, _param: click.Parameter, text: str) -> dt.timedelta:
    """``--idle-for``: ``30d``, ``12h``, ``90m``, ``45s``, ``2w`` or ``1d12h`` as a timedelta;
    anything else is a usage error saying the accepted forms."""
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise click.BadParameter(f"{text!r} is not a duration: use {DURATION_FORMS}")
    try:
        parts = zip(_UNITS, match.groups(), strict=True)
        duration = dt.timedelta(**{unit: int(n) for unit, n in parts if n is not None})
        dt.datetime.now(dt.UTC) - duration  # the cutoff must be a date
    except (OverflowError, ValueError):
        raise click.BadParameter(f"{text!r} is too long a duration") from None
    return duration


def _show_duration(duration: dt.timedelta) -> str:
    """``duration`` as ``1d12h`` (days, hours, minutes, seconds)."""
    minutes, seconds = divmod(int(duration.total_seconds()), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n) or "0s"


@cli.command()
@click.option(
    "--idle-for",
    metavar="DURATION",
    callback=_duration,
    required=True,
    help="Remove apps whose latest step is older than this: 30d, 12h, 90m, 45s, 2w, 1d12h.",
)
@bulk_partition_option
@_removal_options
@click.pass_obj
def expire(
    settings: Settings,
    idle_for: dt.timedelta,
    partition_key: str | None,
    dry_run: bool,
    yes: bool,
) -> None:
    """Delete whole apps (of -p) whose latest step is older than --idle-for.

    Asks for confirmation unless --yes (and refuses without it when stdin is not a terminal);
    --dry-run prints what would be removed and removes nothing.
    """
    where = "every partition" if partition_key is None else _where(partition_key)
    idle = _show_duration(idle_for)
    _remove(
        settings,
        lambda p, dry: p.expire(idle_for=idle_for, partition_key=partition_key, dry_run=dry),
        lambda n: f"{_plural(n, 'app')} idle for more than {idle} ({where})",
        dry_run=dry_run,
        yes=yes,
    )
