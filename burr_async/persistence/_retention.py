"""The statements that keep the step table bounded: deleting apps, pruning old steps, expiring
idle apps, and the keyset page of the app listing. Core statements over the table, the same on
every database.

Large deletions go in bounded batches (:data:`BATCH_ROWS` rows a statement, oldest steps
first), so no statement holds a long lock on a busy table and other apps keep committing; an
app caught half-way has lost only its oldest steps, so what is left is still a contiguous,
loadable history.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from burr_async.persistence.base import AppSummary, Status

__all__: list[str] = []

BATCH_ROWS = 10_000
"""The most rows one DELETE statement removes."""


def _key(t: sa.Table) -> Any:
    return sa.tuple_(t.c.partition_key, t.c.app_uid, t.c.sequence_id)


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


def app_rows(t: sa.Table, partition_key: str, app_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(t.c.partition_key == partition_key, t.c.app_uid == app_id)


def pruned_rows(
    t: sa.Table, keep_last: int, partition_key: str | None = None, app_id: str | None = None
) -> sa.ColumnElement[bool]:
    """The steps older than each app's last ``keep_last`` (of one partition, or one app)."""
    latest = sa.select(
        t.c.partition_key, t.c.app_uid, sa.func.max(t.c.sequence_id).label("last")
    ).group_by(t.c.partition_key, t.c.app_uid)
    if partition_key is not None:
        latest = latest.where(t.c.partition_key == partition_key)
    if app_id is not None:
        latest = latest.where(t.c.app_uid == app_id)
    last = latest.subquery()
    older = sa.select(t.c.partition_key, t.c.app_uid, t.c.sequence_id).join(
        last,
        sa.and_(
            t.c.partition_key == last.c.partition_key,
            t.c.app_uid == last.c.app_uid,
            t.c.sequence_id <= last.c["last"] - keep_last,
        ),
    )
    in_older: sa.ColumnElement[bool] = _key(t).in_(older)
    return in_older


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


def idle_rows(t: sa.Table, cutoff: dt.datetime, partition_key: str | None) -> Any:
    """The steps of idle apps, judged again by every statement: an app that took a step
    meanwhile is no longer idle and keeps its steps."""
    return sa.tuple_(t.c.partition_key, t.c.app_uid).in_(idle_apps(t, cutoff, partition_key))


def apps_page(
    t: sa.Table,
    partition_key: str | None,
    *,
    all_partitions: bool,
    limit: int,
    after: AppSummary | None,
    status: Status | None,
) -> sa.Select[Any]:
    """The latest step of each app, most recently updated first (ties by partition, then app
    id), after the cursor ``after`` (the last item of the previous page)."""
    latest = sa.select(
        t.c.partition_key, t.c.app_uid, sa.func.max(t.c.sequence_id).label("sequence_id")
    ).group_by(t.c.partition_key, t.c.app_uid)
    if not all_partitions:
        latest = latest.where(t.c.partition_key == (partition_key or ""))
    sub = latest.subquery()
    query = sa.select(
        t.c.partition_key, t.c.app_uid, t.c.sequence_id, t.c.position, t.c.status, t.c.created_at
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
        pk = after.partition_key or ""
        query = query.where(
            sa.or_(
                t.c.created_at < after.updated_at,
                sa.and_(
                    t.c.created_at == after.updated_at,
                    sa.tuple_(t.c.partition_key, t.c.app_uid) > sa.tuple_(pk, after.app_id),
                ),
            )
        )
    return query.order_by(t.c.created_at.desc(), t.c.partition_key, t.c.app_uid).limit(limit)
