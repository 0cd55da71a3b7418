"""What the web UI reads, and only that: the read API it needs from a persister
(:class:`ReadAPI`) and the few queries made of it.

Read-only by construction: the UI holds its persister as a :class:`ReadAPI`, a protocol with
``load``, ``history`` and ``list_apps`` and nothing else, so no write path (``save``,
``delete_app``, ``prune``...) is reachable from its code without a type error. Two reads go
beyond that API, on a :class:`~burr_async.SQLAlchemyPersister` only, as single ``SELECT``
statements through its own connection handling: the app search (the persister's app listing
plus a condition on the app id) and the observed graph (the distinct pairs of consecutive
positions, with a window function). Any other persister gets the same answers by paging
through ``list_apps`` and ``history``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal, Protocol

import sqlalchemy as sa

from burr_async.persistence import _retention, _rows
from burr_async.persistence.base import AppSummary, PersistedStateData, Status
from burr_async.persistence.sqlalchemy import SQLAlchemyPersister
from burr_async.ui._graph import MAX_EDGES, Observed

__all__ = ["AppQuery", "ReadAPI", "apps_page", "cursor", "history_page", "observed_graph"]

Match = Literal["prefix", "exact"]

_SCAN_PAGE = 500  # apps or steps per call when paging through a persister's read API


class ReadAPI(Protocol):
    """The reads the UI makes of a persister (both burr_async persisters have them)."""

    async def load(
        self, partition_key: str | None, app_id: str, sequence_id: int | None = None
    ) -> PersistedStateData | None:
        """The app's latest step (or the one at ``sequence_id``), or None."""

    async def history(
        self,
        partition_key: str | None,
        app_id: str,
        *,
        after_sequence_id: int | None = None,
        limit: int | None = None,
    ) -> list[PersistedStateData]:
        """A page of the app's steps, oldest first."""

    async def list_apps(
        self,
        partition_key: str | None = None,
        *,
        all_partitions: bool = False,
        limit: int = 100,
        after: AppSummary | None = None,
        status: Status | None = None,
    ) -> list[AppSummary]:
        """A page of the latest step of each app, most recently updated first."""


@dataclass(frozen=True, slots=True)
class AppQuery:
    """One page of the app list: the apps of ``partition`` (None: the default partition), or
    of every partition when ``all_partitions``; only those whose latest step has ``status``,
    and whose id equals (``match="exact"``) or starts with (``"prefix"``) ``search`` when it
    is not empty; after the keyset cursor ``after``; at most ``limit``."""

    partition: str | None = None
    all_partitions: bool = True
    status: Status | None = None
    search: str = ""
    match: Match = "prefix"
    after: AppSummary | None = None
    limit: int = 50

    def matches(self, app_id: str) -> bool:
        """Whether ``app_id`` passes the search."""
        if self.match == "exact":
            return app_id == self.search
        return app_id.startswith(self.search)


async def apps_page(reader: ReadAPI, query: AppQuery) -> tuple[list[AppSummary], bool]:
    """The page of apps ``query`` asks for, and whether there are more after it."""
    most = query.limit + 1  # one more than a page, to tell whether there is a next one
    if not query.search:
        rows = await reader.list_apps(
            query.partition,
            all_partitions=query.all_partitions,
            limit=most,
            after=query.after,
            status=query.status,
        )
    elif query.match == "exact" and not query.all_partitions:
        rows = await _exact(reader, query)
    elif isinstance(reader, SQLAlchemyPersister):
        rows = await _search(reader, query, most)
    else:
        rows = await _scan(reader, query, most)
    return rows[: query.limit], len(rows) > query.limit


async def _exact(reader: ReadAPI, query: AppQuery) -> list[AppSummary]:
    """The one app of a partition with exactly the searched id, as ``list_apps`` lists it."""
    if query.after is not None:
        return []  # a page holds at most that one app: there is no next page
    step = await reader.load(query.partition, query.search)
    if step is None or (query.status is not None and step.status != query.status):
        return []
    return [
        AppSummary(
            step.partition_key,
            step.app_id,
            step.sequence_id,
            step.position,
            step.status,
            step.created_at,
            step.spawning_parent,
        )
    ]


async def _search(persister: SQLAlchemyPersister, query: AppQuery, most: int) -> list[AppSummary]:
    """The search in SQL: the persister's app listing, restricted to the matching ids."""
    t = persister.table
    statement = _retention.apps_page(
        t,
        query.partition,
        all_partitions=query.all_partitions,
        limit=most,
        after=query.after,
        status=query.status,
    )
    if query.match == "exact":
        condition = t.c.app_uid == query.search
    else:  # not LIKE: no wildcard to escape, and case-sensitive on SQLite too
        condition = sa.func.substr(t.c.app_uid, 1, len(query.search)) == query.search
    rows = await persister._select(statement.where(condition), "Searching apps")
    return _rows.summaries(rows)  # with each app's spawning parent, as list_apps gives


async def _scan(reader: ReadAPI, query: AppQuery, most: int) -> list[AppSummary]:
    """The search over any persister: its listing read ``_SCAN_PAGE`` apps at a time,
    filtered here, until ``most`` match."""
    found: list[AppSummary] = []
    after = query.after
    while len(found) < most:
        page = await reader.list_apps(
            query.partition,
            all_partitions=query.all_partitions,
            limit=_SCAN_PAGE,
            after=after,
            status=query.status,
        )
        found += [summary for summary in page if query.matches(summary.app_id)]
        if len(page) < _SCAN_PAGE:
            break
        after = page[-1]
    return found[:most]


def cursor(app_id: str, partition: str | None, sequence_id: int, when: dt.datetime) -> AppSummary:
    """The keyset cursor of the app list, rebuilt from a link: the listing orders by the time
    of each app's latest step, then partition, then id, and compares nothing else."""
    return AppSummary(partition, app_id, sequence_id, "", "completed", when)


async def history_page(
    reader: ReadAPI, partition: str | None, app_id: str, after: int | None, limit: int
) -> tuple[list[PersistedStateData], bool]:
    """The app's steps after step ``after`` (None: from the first), at most ``limit``, and
    whether there are more after them."""
    steps = await reader.history(partition, app_id, after_sequence_id=after, limit=limit + 1)
    return steps[:limit], len(steps) > limit


async def observed_graph(reader: ReadAPI, partition: str | None, app_id: str) -> Observed:
    """The graph observed in the app's stored steps (see :class:`~burr_async.ui._graph.Observed`):
    on a SQLAlchemy persister one query returning each distinct pair of consecutive positions
    once (no state is read); on any other, its history read a page at a time."""
    if isinstance(reader, SQLAlchemyPersister):
        t = reader.table
        steps = (
            sa.select(
                t.c.sequence_id,
                t.c.position,
                sa.func.lag(t.c.position).over(order_by=t.c.sequence_id).label("previous"),
            )
            .where(t.c.partition_key == (partition or ""), t.c.app_uid == app_id)
            .subquery()
        )
        first = sa.func.min(steps.c.sequence_id).label("first")
        statement = (
            sa.select(steps.c.previous, steps.c.position, first)
            .group_by(steps.c.previous, steps.c.position)
            .order_by(first)
            .limit(2 * MAX_EDGES)
        )
        rows = await reader._select(statement, "Reading the positions of the app's steps")
        return Observed.of((row.previous, row.position) for row in rows)
    pairs: list[tuple[str | None, str]] = []
    seen: set[tuple[str | None, str]] = set()
    previous: str | None = None
    after: int | None = None
    while len(seen) < 2 * MAX_EDGES:
        page = await reader.history(partition, app_id, after_sequence_id=after, limit=_SCAN_PAGE)
        for step in page:
            pair = (previous, step.position)
            if pair not in seen:
                seen.add(pair)
                pairs.append(pair)
            previous = step.position
        if len(page) < _SCAN_PAGE:
            break
        after = page[-1].sequence_id
    return Observed.of(pairs)
