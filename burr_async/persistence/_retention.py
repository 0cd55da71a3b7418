"""The statements that keep the step table bounded: deleting apps, pruning old steps, expiring
idle apps, and the keyset page of the app listing: Core statements over the table, the same on
every database, and :class:`Retention`, which runs the removals for a persister.

Large deletions go in bounded batches (:data:`BATCH_ROWS` rows a statement, oldest steps
first), so no statement holds a long lock on a busy table and other apps keep committing. An
app that takes a step while a prune or an expire is removing its steps keeps a history that
loads: each statement removes only steps older than a full row it leaves (a delta row needs
every row back to a full one), and an expire removes an app either whole or, when it has more
steps than a batch, up to one of its full rows at a time, each statement checking again that
the app is still idle.

A step racing the removal of its app is removed with it or refused. A statement sees the rows
committed when it began, so a deletion repeats its DELETE, in one transaction, until one removes
nothing (a step committed meanwhile goes with the next), and an expire that finds, after its
DELETE, that an app it removed has new rows (it took a step the DELETE did not see) rolls back
and goes on without that app. A step whose predecessor a removal has deleted but not committed
waits for it and is then refused: on Postgres the INSERT locks its predecessor
(``Dialect.predecessor_lock``), on SQLite one write runs at a time.
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from burr_async.errors import quote
from burr_async.persistence import _delta
from burr_async.persistence._errors import ErrorContext, translated
from burr_async.persistence._writer import GroupWriter
from burr_async.persistence.base import (
    AppSummary,
    Status,
    _check_id,
    _check_ids,
    _check_keep_last,
    _cursor_time,
    _cutoff,
)
from burr_async.persistence.models import SPAWN_COLUMNS

_log = logging.getLogger("burr_async.persistence")

__all__: list[str] = []

BATCH_ROWS = 10_000
"""The most rows one DELETE statement removes."""


def _key(t: sa.Table) -> Any:
    return sa.tuple_(t.c.partition_key, t.c.app_uid, t.c.sequence_id)


async def deleted(conn: AsyncConnection, statement: sa.Delete) -> int:
    """Run the DELETE ``statement`` on ``conn``: the rows it removed. Every removal's
    statements run through here."""
    result = await conn.execute(statement)
    return max(result.rowcount, 0)


def delete_batch(t: sa.Table, where: sa.ColumnElement[bool]) -> sa.Delete:
    """DELETE of at most :data:`BATCH_ROWS` rows matching ``where``, the oldest steps first."""
    chosen = (
        sa.select(t.c.partition_key, t.c.app_uid, t.c.sequence_id)
        .where(where)
        .order_by(t.c.sequence_id)
        .limit(BATCH_ROWS)
    )
    return sa.delete(t).where(_key(t).in_(chosen))


def count_rows(t: sa.Table, where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """The number of rows matching ``where``: what a dry run of a deletion reports."""
    return sa.select(sa.func.count()).select_from(t).where(where)


def count_apps(apps: sa.Select[Any]) -> sa.Select[Any]:
    """The number of rows ``apps`` (one per app) selects."""
    return sa.select(sa.func.count()).select_from(apps.subquery())


def app_keys(t: sa.Table) -> Any:
    """The (partition_key, app_uid) of a row, as one SQL tuple."""
    return sa.tuple_(t.c.partition_key, t.c.app_uid)


def app_rows(t: sa.Table, partition_key: str, app_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(t.c.partition_key == partition_key, t.c.app_uid == app_id)


def _latest(t: sa.Table, partition_key: str | None, app_id: str | None) -> sa.Subquery:
    """Each app's last sequence id, ``last`` (of one partition, or one app)."""
    latest = sa.select(
        t.c.partition_key, t.c.app_uid, sa.func.max(t.c.sequence_id).label("last")
    ).group_by(t.c.partition_key, t.c.app_uid)
    if partition_key is not None:
        latest = latest.where(t.c.partition_key == partition_key)
    if app_id is not None:
        latest = latest.where(t.c.app_uid == app_id)
    return latest.subquery()


def _same_app(t: sa.FromClause, other: sa.FromClause) -> sa.ColumnElement[bool]:
    return sa.and_(t.c.partition_key == other.c.partition_key, t.c.app_uid == other.c.app_uid)


def pruned_rows(
    t: sa.Table, keep_last: int, partition_key: str | None = None, app_id: str | None = None
) -> sa.ColumnElement[bool]:
    """The steps older than each app's last ``keep_last`` (of one partition, or one app): what
    a prune removes (once it has made each app's oldest kept step a full row)."""
    last = _latest(t, partition_key, app_id)
    older = sa.select(t.c.partition_key, t.c.app_uid, t.c.sequence_id).join(
        last, sa.and_(_same_app(t, last), t.c.sequence_id <= last.c["last"] - keep_last)
    )
    in_older: sa.ColumnElement[bool] = _key(t).in_(older)
    return in_older


def rows_before_kept_full(
    t: sa.Table, keep_last: int, partition_key: str | None = None, app_id: str | None = None
) -> sa.ColumnElement[bool]:
    """The steps a prune deletes: those before the latest full row among each app's steps up
    to its ``keep_last``-th last (of one partition, or one app), judged again by every
    statement. Once the prune has made the oldest kept step a full row these are
    :func:`pruned_rows`; when the app takes steps meanwhile, that row is still the latest full
    one within reach and is kept, so what is left of an app always starts with a full row (an
    app with none within reach loses nothing)."""
    last = _latest(t, partition_key, app_id)
    full = t.alias("full")
    floors = (
        sa.select(
            full.c.partition_key, full.c.app_uid, sa.func.max(full.c.sequence_id).label("floor")
        )
        .join(
            last,
            sa.and_(_same_app(full, last), full.c.sequence_id <= last.c["last"] - keep_last + 1),
        )
        .where(full.c.delta == sa.false())
        .group_by(full.c.partition_key, full.c.app_uid)
        .subquery()
    )
    older = sa.select(t.c.partition_key, t.c.app_uid, t.c.sequence_id).join(
        floors, sa.and_(_same_app(t, floors), t.c.sequence_id < floors.c.floor)
    )
    in_older: sa.ColumnElement[bool] = _key(t).in_(older)
    return in_older


def first_kept_deltas(
    t: sa.Table, keep_last: int, partition_key: str | None = None, app_id: str | None = None
) -> sa.Select[tuple[str, str, int]]:
    """The oldest step that a prune keeping ``keep_last`` keeps, of each app that loses steps
    to it (of one partition, or one app), where that step is a delta row."""
    span = sa.select(
        t.c.partition_key,
        t.c.app_uid,
        sa.func.max(t.c.sequence_id).label("last"),
        sa.func.min(t.c.sequence_id).label("first"),
    ).group_by(t.c.partition_key, t.c.app_uid)
    if partition_key is not None:
        span = span.where(t.c.partition_key == partition_key)
    if app_id is not None:
        span = span.where(t.c.app_uid == app_id)
    apps = span.subquery()
    return (
        sa.select(t.c.partition_key, t.c.app_uid, t.c.sequence_id)
        .join(
            apps,
            sa.and_(
                t.c.partition_key == apps.c.partition_key,
                t.c.app_uid == apps.c.app_uid,
                t.c.sequence_id == apps.c["last"] - keep_last + 1,
            ),
        )
        .where(t.c.delta == sa.true(), apps.c["first"] <= apps.c["last"] - keep_last)
    )


def idle_apps(
    t: sa.Table, cutoff: dt.datetime, partition_key: str | None
) -> sa.Select[tuple[str, str]]:
    """The (partition_key, app_uid) of apps whose latest step was written before ``cutoff``."""
    idle = (
        sa.select(t.c.partition_key, t.c.app_uid)
        .group_by(t.c.partition_key, t.c.app_uid)
        .having(sa.func.max(t.c.created_at) < cutoff)
    )
    if partition_key is not None:
        idle = idle.where(t.c.partition_key == partition_key)
    return idle


def idle_app_spans(
    t: sa.Table, cutoff: dt.datetime, partition_key: str | None
) -> sa.Select[tuple[str, str, int, int, int]]:
    """:func:`idle_apps`, each with its number of ``steps`` and its ``first`` and ``last``
    sequence ids."""
    return idle_apps(t, cutoff, partition_key).add_columns(
        sa.func.count().label("steps"),
        sa.func.min(t.c.sequence_id).label("first"),
        sa.func.max(t.c.sequence_id).label("last"),
    )


def still_idle(
    t: sa.Table, cutoff: dt.datetime, apps: Sequence[tuple[str, str]]
) -> sa.ColumnElement[bool]:
    """The rows of those of ``apps`` whose latest step is still older than ``cutoff``, judged
    by the statement that uses it: an app that took a step meanwhile keeps its steps."""
    chosen = app_keys(t).in_(apps)
    return sa.and_(chosen, app_keys(t).in_(idle_apps(t, cutoff, None).where(chosen)))


def woken_apps(
    t: sa.Table, cutoff: dt.datetime, apps: Sequence[tuple[str, str]]
) -> sa.Select[tuple[str, str]]:
    """After a DELETE of :func:`still_idle` rows, in its transaction: those of ``apps`` that
    took a step the DELETE did not see. Their old steps are gone and only steps newer than
    ``cutoff`` are left (an app the DELETE spared still has every step, old ones too)."""
    return (
        sa.select(t.c.partition_key, t.c.app_uid)
        .where(app_keys(t).in_(apps))
        .group_by(t.c.partition_key, t.c.app_uid)
        .having(sa.func.min(t.c.created_at) >= cutoff)
    )


APPS_PER_STATEMENT = 500
"""The most apps one statement of an expire names (two parameters each, twice)."""


def whole_app_batches(apps: Sequence[sa.Row[Any]]) -> Iterator[list[tuple[str, str]]]:
    """The apps of at most :data:`BATCH_ROWS` steps, packed into groups of at most that many
    steps and :data:`APPS_PER_STATEMENT` apps: what one statement of an expire removes whole."""
    group: list[tuple[str, str]] = []
    size = 0
    for app in apps:
        if app.steps > BATCH_ROWS:
            continue
        if group and (size + app.steps > BATCH_ROWS or len(group) == APPS_PER_STATEMENT):
            yield group
            group, size = [], 0
        group.append((app.partition_key, app.app_uid))
        size += app.steps
    if group:
        yield group


def part_ends(full: Sequence[int], first: int, last: int) -> list[int]:
    """Where an app of steps ``first`` to ``last`` is cut when it is removed in parts: before
    full rows (sequence ids ``full``, ascending), each part at most :data:`BATCH_ROWS` steps
    where the full rows allow (the latest one within reach, else the next one), until at most
    that many steps are left; what is left after each part starts with a full row."""
    ends: list[int] = []
    start = first
    while last - start + 1 > BATCH_ROWS:
        within = bisect.bisect_right(full, start + BATCH_ROWS)
        if within > 0 and full[within - 1] > start:
            end = full[within - 1]
        elif within < len(full):
            end = full[within]
        else:
            break
        ends.append(end)
        start = end
    return ends


def apps_page(
    t: sa.Table,
    partition_key: str | None,
    *,
    all_partitions: bool,
    limit: int,
    after: AppSummary | None,
    status: Status | None,
    among: sa.Select[Any] | None = None,
) -> sa.Select[Any]:
    """The latest step of each app, most recently updated first (ties by partition, then app
    id), after the cursor ``after`` (the last item of the previous page); only the apps whose
    (partition_key, app_uid) ``among`` selects, when given. The spawning parent's columns are
    selected too when the table has them (``t`` of revision 0004_0003 or later)."""
    latest = sa.select(
        t.c.partition_key, t.c.app_uid, sa.func.max(t.c.sequence_id).label("sequence_id")
    ).group_by(t.c.partition_key, t.c.app_uid)
    if not all_partitions:
        latest = latest.where(t.c.partition_key == (partition_key or ""))
    if among is not None:
        latest = latest.where(app_keys(t).in_(among))
    sub = latest.subquery()
    spawn = [t.c[name] for name in SPAWN_COLUMNS if name in t.c]
    query = sa.select(
        t.c.partition_key,
        t.c.app_uid,
        t.c.sequence_id,
        t.c.position,
        t.c.status,
        t.c.created_at,
        *spawn,
    ).join(
        sub,
        sa.and_(
            t.c.partition_key == sub.c.partition_key,
            t.c.app_uid == sub.c.app_uid,
            t.c.sequence_id == sub.c.sequence_id,
        ),
    )
    if status is not None:
        query = query.where(t.c.status == status)
    if after is not None:
        when = _cursor_time(after)  # ConfigurationError for anything but an AppSummary
        pk = after.partition_key or ""
        query = query.where(
            sa.or_(
                t.c.created_at < when,
                sa.and_(
                    t.c.created_at == when,
                    sa.tuple_(t.c.partition_key, t.c.app_uid) > sa.tuple_(pk, after.app_id),
                ),
            )
        )
    return query.order_by(t.c.created_at.desc(), t.c.partition_key, t.c.app_uid).limit(limit)


class Retention:
    """The bounded-storage operations of a SQLAlchemy persister's table (what
    ``SQLAlchemyPersister.delete_app`` and the others run; their docstrings are the contract).
    With ``dry_run=True`` each counts what it would remove, in one statement, and removes
    nothing: the number the real call would return at that moment. ``ready`` is awaited before
    every statement (the persister's schema check)."""

    def __init__(
        self,
        table: sa.Table,
        engine: AsyncEngine,
        autocommit: AsyncEngine,
        errors: ErrorContext,
        writer: GroupWriter,
        encoder: _delta.DeltaEncoder | None,
        ready: Callable[[], Awaitable[None]],
    ) -> None:
        self._table = table
        self._engine = engine  # for the removals that need a transaction of several statements
        self._autocommit = autocommit  # for the others: ``engine`` in autocommit
        self._errors = errors
        self._writer = writer
        self._encoder = encoder
        self._ready = ready

    async def select(self, statement: sa.Select[Any], what: str) -> Sequence[sa.Row[Any]]:
        """The rows of a query, errors translated."""
        with translated(self._errors, what):
            await self._ready()
            async with self._autocommit.connect() as conn:
                rows: Sequence[sa.Row[Any]] = (await conn.execute(statement)).all()
                return rows

    async def _count(self, statement: sa.Select[Any], what: str, **ids: Any) -> int:
        with translated(self._errors, what, **ids):
            await self._ready()
            async with self._autocommit.connect() as conn:
                return int((await conn.execute(statement)).scalar_one())

    async def _delete(self, statement: sa.Delete, what: str, **ids: Any) -> int:
        """One DELETE, in a transaction of its own: the rows it removed."""
        with translated(self._errors, what, **ids):
            await self._ready()
            async with self._autocommit.connect() as conn:
                return await deleted(conn, statement)

    async def _delete_batched(
        self,
        where: sa.ColumnElement[bool],
        what: str,
        *,
        dry_run: bool = False,
        until_none: bool = False,
        **ids: Any,
    ) -> int:
        """Delete the rows ``where`` holds, :func:`delete_batch` by batch, until a batch is
        not full, or (``until_none``: when everything ``where`` holds is to go, steps
        committed meanwhile too) until one removes nothing."""
        if dry_run:
            statement = count_rows(self._table, where)
            return await self._count(statement, f"{what} (dry run)", **ids)
        removed = 0
        while True:
            count = await self._delete(delete_batch(self._table, where), what, **ids)
            removed += count
            if count == 0 or (count < BATCH_ROWS and not until_none):
                return removed

    async def _erase(self, statement: sa.Delete, what: str, **ids: Any) -> int:
        """Run ``statement`` again and again, in one transaction, until it removes nothing:
        the rows removed. A step committed while one ran (unseen by it) goes with the next."""
        with translated(self._errors, what, **ids):
            await self._ready()
            async with self._engine.begin() as conn:
                removed = 0
                while count := await deleted(conn, statement):
                    removed += count
                return removed

    async def _expire_whole(
        self, apps: Sequence[tuple[str, str]], cutoff: dt.datetime, what: str, **ids: Any
    ) -> None:
        """Remove those of ``apps`` still idle, whole, in one transaction; when one of them
        took a step the DELETE did not see (:func:`woken_apps`), roll back and try again
        without it: it keeps every step."""
        t = self._table
        pending = list(apps)
        with translated(self._errors, what, **ids):
            await self._ready()
            while pending:
                async with self._engine.connect() as conn:
                    transaction = await conn.begin()
                    await deleted(conn, sa.delete(t).where(still_idle(t, cutoff, pending)))
                    result = await conn.execute(woken_apps(t, cutoff, pending))
                    woken = {(row.partition_key, row.app_uid) for row in result}
                    if not woken:
                        await transaction.commit()
                        return
                    await transaction.rollback()
                pending = [app for app in pending if app not in woken]

    async def delete_app(
        self, partition_key: str | None, app_id: str, *, dry_run: bool = False
    ) -> int:
        """``SQLAlchemyPersister.delete_app``."""
        _check_ids(app_id, partition_key)
        where = app_rows(self._table, partition_key or "", app_id)
        what = f"Deleting app {quote(app_id)}"
        if dry_run:
            return await self._count(
                count_rows(self._table, where),
                f"{what} (dry run)",
                app_id=app_id,
                partition_key=partition_key,
            )
        if self._encoder is not None:
            self._encoder.forget(partition_key or "", app_id)
        return await self._erase(
            sa.delete(self._table).where(where), what, app_id=app_id, partition_key=partition_key
        )

    async def delete_partition(self, partition_key: str | None, *, dry_run: bool = False) -> int:
        """``SQLAlchemyPersister.delete_partition``."""
        _check_id("partition_key", partition_key, optional=True)
        where = self._table.c.partition_key == (partition_key or "")
        if self._encoder is not None and not dry_run:
            self._encoder.forget(partition_key or "")
        return await self._delete_batched(
            where, f"Deleting partition {quote(partition_key)}", dry_run=dry_run, until_none=True
        )

    async def prune(
        self, partition_key: str | None, app_id: str, *, keep_last: int, dry_run: bool = False
    ) -> int:
        """``SQLAlchemyPersister.prune``."""
        _check_ids(app_id, partition_key)
        keep = _check_keep_last(keep_last)
        if dry_run:
            where = pruned_rows(self._table, keep, partition_key or "", app_id)
        else:
            await self._keep_loadable(keep, partition_key or "", app_id)
            where = rows_before_kept_full(self._table, keep, partition_key or "", app_id)
        return await self._delete_batched(
            where,
            f"Pruning app {quote(app_id)}",
            dry_run=dry_run,
            app_id=app_id,
            partition_key=partition_key,
        )

    async def prune_all(
        self, *, keep_last: int, partition_key: str | None = None, dry_run: bool = False
    ) -> int:
        """``SQLAlchemyPersister.prune_all``."""
        _check_id("partition_key", partition_key, optional=True)
        keep = _check_keep_last(keep_last)
        if dry_run:
            where = pruned_rows(self._table, keep, partition_key)
        else:
            damaged = await self._keep_loadable(keep, partition_key)
            where = rows_before_kept_full(self._table, keep, partition_key)
            if damaged:  # left as they are, for whoever restores them
                where = sa.and_(where, ~app_keys(self._table).in_(damaged))
        return await self._delete_batched(where, "Pruning apps", dry_run=dry_run)

    async def _keep_loadable(
        self, keep_last: int, partition_key: str | None, app_id: str | None = None
    ) -> list[tuple[str, str]]:
        """Before a prune: rewrite each pruned app's oldest kept step, when it is a delta, as
        the full state it stands for (the same state, so a load of it is unchanged), so that
        every kept step still loads once the steps before it are gone. For one app, a history
        that cannot be rebuilt raises SerializationError; for many, those apps are returned
        (and logged), and the caller leaves them as they are."""
        damaged: list[tuple[str, str]] = []
        t = self._table
        found = await self.select(
            first_kept_deltas(t, keep_last, partition_key, app_id),
            "Finding the oldest kept steps",
        )
        for row in found:
            ids = {"app_id": row.app_uid, "partition_key": row.partition_key or None}
            with translated(self._errors, "Keeping a pruned app loadable", **ids):
                chain, _ = _delta.chain_of(
                    await self._writer.read_step(row.partition_key, row.app_uid, row.sequence_id)
                )
                try:
                    rebuilt, _tagged = _delta.rebuild_last(chain)
                except _delta.DamagedHistoryError as exc:
                    error = _delta.damaged(
                        exc, row.app_uid, row.partition_key or None, row.sequence_id
                    )
                    if app_id is not None:
                        raise error from exc
                    _log.warning("Not pruning an app: %s", error)
                    damaged.append((row.partition_key, row.app_uid))
                    continue
                key = app_rows(t, row.partition_key, row.app_uid)
                rewrite = (
                    sa.update(t)
                    .where(key, t.c.sequence_id == row.sequence_id, t.c.delta == sa.true())
                    .values(state=rebuilt, delta=False)
                )
                async with self._autocommit.connect() as conn:
                    await conn.execute(rewrite)
        return damaged

    async def expire(
        self, *, idle_for: dt.timedelta, partition_key: str | None = None, dry_run: bool = False
    ) -> int:
        """``SQLAlchemyPersister.expire``."""
        _check_id("partition_key", partition_key, optional=True)
        cutoff = _cutoff(idle_for)
        t = self._table
        if dry_run:
            apps = idle_apps(t, cutoff, partition_key)
            return await self._count(count_apps(apps), "Counting idle apps (dry run)")
        found = await self.select(idle_app_spans(t, cutoff, partition_key), "Finding idle apps")
        if not found:
            return 0
        if self._encoder is not None:
            for app in found:
                self._encoder.forget(app.partition_key, app.app_uid)
        what = "Expiring idle apps"
        for group in whole_app_batches(found):
            await self._expire_whole(group, cutoff, what)
        for app in found:
            if app.steps > BATCH_ROWS:
                await self._expire_in_parts(app, cutoff)
        keys = [(app.partition_key, app.app_uid) for app in found]
        left = 0
        for start in range(0, len(keys), APPS_PER_STATEMENT):
            chunk = keys[start : start + APPS_PER_STATEMENT]
            stored = sa.select(t.c.partition_key, t.c.app_uid).where(app_keys(t).in_(chunk))
            left += len(await self.select(stored.distinct(), "Counting expired apps"))
        return len(keys) - left

    async def _expire_in_parts(self, app: sa.Row[Any], cutoff: dt.datetime) -> None:
        """Remove an idle app of more than :data:`BATCH_ROWS` steps: its oldest steps up to a
        full row at a time (:func:`part_ends`), then the rest, each statement removing them
        only while the app is still idle. An app that takes a step meanwhile keeps what is
        left of it, which starts with a full row."""
        t = self._table
        partition_key, app_id = app.partition_key, app.app_uid
        ids = {"app_id": app_id, "partition_key": partition_key or None}
        what = f"Expiring idle app {quote(app_id)}"
        found = await self.select(
            sa.select(t.c.sequence_id)
            .where(app_rows(t, partition_key, app_id), t.c.delta == sa.false())
            .order_by(t.c.sequence_id),
            what,
        )
        full = [row.sequence_id for row in found]
        idle = still_idle(t, cutoff, [(partition_key, app_id)])
        for end in part_ends(full, app.first, app.last):
            if not await self._delete(sa.delete(t).where(idle, t.c.sequence_id < end), what, **ids):
                return  # no longer idle (or removed meanwhile)
        await self._expire_whole([(partition_key, app_id)], cutoff, what, **ids)
