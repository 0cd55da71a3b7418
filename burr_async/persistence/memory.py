"""An in-memory persister, for tests and for applications that need no durability; and Burr's
``AsyncInMemoryPersister`` (the same class) and ``AsyncDevNullPersister`` (stores nothing)."""

from __future__ import annotations

import datetime as dt

from burr_async.errors import (
    AppDeletedError,
    ConcurrentStepError,
    ConfigurationError,
    PersistenceError,
)
from burr_async.persistence.base import (
    _ESCAPED_NUL,
    AppSummary,
    AsyncBaseStatePersister,
    ParentPointer,
    PersistedStateData,
    Status,
    _check_id,
    _check_ids,
    _check_keep_last,
    _check_limit,
    _check_page,
    _cursor_time,
    _cutoff,
    _refuse_nul,
)
from burr_async.serde import OrjsonSerde, Serde
from burr_async.state import State

__all__ = ["AsyncDevNullPersister", "AsyncInMemoryPersister", "InMemoryPersister"]

_Row = tuple[
    int, str, bytes, Status, str | None, ParentPointer | None, dt.datetime, ParentPointer | None
]


class InMemoryPersister(AsyncBaseStatePersister):
    """Keeps steps in a dict, encoded with the same serde as the database persister, so a state
    that would fail to save there fails here too. Same contract as the SQLAlchemy persister,
    including :class:`~burr_async.errors.ConcurrentStepError` on a taken ``sequence_id``."""

    def __init__(self, serde: Serde | None = None) -> None:
        self._serde = serde or OrjsonSerde()
        self._rows: dict[tuple[str, str], dict[int, _Row]] = {}
        self._order: dict[str, dict[str, None]] = {}
        self._closed = False

    def _check_open(self, call: str) -> None:
        if self._closed:
            raise PersistenceError(
                f"{call}() was called on a closed InMemoryPersister: aclose() had been called. "
                "Create a new persister, or keep this one open while applications use it."
            )

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Refuse every further call, as the database persisters do after closing."""
        self._closed = True

    async def initialize(self) -> None:
        """Nothing to set up (refused once closed, as every call)."""
        self._check_open("initialize")

    async def is_initialized(self) -> bool:
        """True: nothing to set up (refused once closed, as every call)."""
        self._check_open("is_initialized")
        return True

    async def save(
        self,
        partition_key: str | None,
        app_id: str,
        sequence_id: int,
        position: str,
        state: State,
        status: Status,
        *,
        error: str | None = None,
        parent: ParentPointer | None = None,
        spawning_parent: ParentPointer | None = None,
    ) -> None:
        self._check_open("save")
        _check_ids(app_id, partition_key)
        encoded = self._serde.dumps(state)
        if _ESCAPED_NUL in encoded:  # as the database persisters: Postgres cannot store one
            _refuse_nul(state._data)
        pk = partition_key or ""
        steps = self._rows.setdefault((pk, app_id), {})
        if sequence_id in steps:
            raise ConcurrentStepError(
                app_id=app_id, partition_key=partition_key, sequence_id=sequence_id, action=position
            )
        first = sequence_id == 0 or (parent is not None and parent.sequence_id == sequence_id)
        if not first and sequence_id - 1 not in steps:
            raise AppDeletedError(
                app_id=app_id, partition_key=partition_key, sequence_id=sequence_id, action=position
            )
        steps[sequence_id] = (
            sequence_id,
            position,
            encoded,
            status,
            error,
            _in_partition(parent),
            dt.datetime.now(dt.UTC),
            _in_partition(spawning_parent),
        )
        apps = self._order.setdefault(pk, {})
        apps.pop(app_id, None)
        apps[app_id] = None

    def _data(self, pk: str, app_id: str, row: _Row) -> PersistedStateData:
        sequence_id, position, encoded, status, error, parent, created_at, spawner = row
        return PersistedStateData(
            partition_key=pk or None,
            app_id=app_id,
            sequence_id=sequence_id,
            position=position,
            state=State(self._serde.loads(encoded)),
            created_at=created_at,
            status=status,
            error=error,
            parent=parent,
            spawning_parent=spawner,
        )

    async def load(
        self, partition_key: str | None, app_id: str, sequence_id: int | None = None
    ) -> PersistedStateData | None:
        self._check_open("load")
        _check_ids(app_id, partition_key)
        pk = partition_key or ""
        steps = self._rows.get((pk, app_id))
        if not steps:
            return None
        row = steps.get(sequence_id) if sequence_id is not None else steps[max(steps)]
        return None if row is None else self._data(pk, app_id, row)

    async def list_app_ids(self, partition_key: str | None) -> list[str]:
        self._check_open("list_app_ids")
        _check_id("partition_key", partition_key, optional=True)
        return list(reversed(self._order.get(partition_key or "", {})))

    async def list_apps(
        self,
        partition_key: str | None = None,
        *,
        all_partitions: bool = False,
        limit: int = 100,
        after: AppSummary | None = None,
        status: Status | None = None,
    ) -> list[AppSummary]:
        """The latest step of each app, most recently updated first, a page at a time (as
        :meth:`SQLAlchemyPersister.list_apps <burr_async.SQLAlchemyPersister.list_apps>`)."""
        self._check_open("list_apps")
        _check_id("partition_key", partition_key, optional=True)
        limit = _check_limit(limit, "apps")
        partitions = list(self._order) if all_partitions else [partition_key or ""]
        summaries = []
        for pk in partitions:
            for app_id in self._order.get(pk, {}):
                steps = self._rows[(pk, app_id)]
                seq, position, _, latest, _, _, created_at, spawner = steps[max(steps)]
                if status is None or latest == status:
                    summaries.append(
                        AppSummary(pk or None, app_id, seq, position, latest, created_at, spawner)
                    )
        summaries.sort(key=lambda s: (s.partition_key or "", s.app_id))
        summaries.sort(key=lambda s: s.updated_at, reverse=True)
        if after is not None:
            when = _cursor_time(after)
            cursor = (after.partition_key or "", after.app_id)
            summaries = [
                s
                for s in summaries
                if s.updated_at < when
                or (s.updated_at == when and (s.partition_key or "", s.app_id) > cursor)
            ]
        return summaries[:limit]

    async def list_children(
        self, partition_key: str | None, app_id: str, sequence_id: int | None = None
    ) -> list[AppSummary]:
        """The apps whose spawning parent is app ``app_id`` of ``partition_key`` (at step
        ``sequence_id``, when given), each with its latest step, most recently updated first
        (as :meth:`SQLAlchemyPersister.list_children
        <burr_async.SQLAlchemyPersister.list_children>`)."""
        self._check_open("list_children")
        _check_ids(app_id, partition_key)
        if sequence_id is not None and (
            isinstance(sequence_id, bool) or not isinstance(sequence_id, int)
        ):
            raise ConfigurationError(f"sequence_id must be an int or None, not {sequence_id!r}.")
        parent_pk = partition_key or ""

        def spawned_by(spawner: ParentPointer | None) -> bool:
            return (
                spawner is not None
                and spawner.app_id == app_id
                and (spawner.partition_key or "") == parent_pk
                and (sequence_id is None or spawner.sequence_id == sequence_id)
            )

        summaries = []
        for (pk, child), steps in self._rows.items():
            if any(spawned_by(row[7]) for row in steps.values()):
                seq, position, _, latest, _, _, created_at, spawner = steps[max(steps)]
                summaries.append(
                    AppSummary(pk or None, child, seq, position, latest, created_at, spawner)
                )
        summaries.sort(key=lambda s: (s.partition_key or "", s.app_id))
        summaries.sort(key=lambda s: s.updated_at, reverse=True)
        return summaries

    async def history(
        self,
        partition_key: str | None,
        app_id: str,
        *,
        after_sequence_id: int | None = None,
        limit: int | None = None,
    ) -> list[PersistedStateData]:
        self._check_open("history")
        _check_ids(app_id, partition_key)
        after, most = _check_page(after_sequence_id, limit)
        pk = partition_key or ""
        steps = self._rows.get((pk, app_id), {})
        chosen = [seq for seq in sorted(steps) if seq > after][:most]
        return [self._data(pk, app_id, steps[seq]) for seq in chosen]

    # -- bounded storage (as SQLAlchemyPersister's) ----------------------------------------------
    def _forget(self, pk: str, app_id: str) -> int:
        removed = len(self._rows.pop((pk, app_id), {}))
        apps = self._order.get(pk, {})
        apps.pop(app_id, None)
        if not apps:
            self._order.pop(pk, None)
        return removed

    async def delete_app(
        self, partition_key: str | None, app_id: str, *, dry_run: bool = False
    ) -> int:
        """Delete every step of the app; the number removed (``dry_run=True``: that would be
        removed, removing nothing)."""
        self._check_open("delete_app")
        _check_ids(app_id, partition_key)
        pk = partition_key or ""
        if dry_run:
            return len(self._rows.get((pk, app_id), {}))
        return self._forget(pk, app_id)

    async def delete_partition(self, partition_key: str | None, *, dry_run: bool = False) -> int:
        """Delete every app of the partition; the number of steps removed (``dry_run=True``:
        that would be removed)."""
        self._check_open("delete_partition")
        _check_id("partition_key", partition_key, optional=True)
        pk = partition_key or ""
        apps = list(self._order.get(pk, {}))
        if dry_run:
            return sum(len(self._rows.get((pk, app_id), {})) for app_id in apps)
        return sum(self._forget(pk, app_id) for app_id in apps)

    async def prune(
        self, partition_key: str | None, app_id: str, *, keep_last: int, dry_run: bool = False
    ) -> int:
        """Delete all but the last ``keep_last`` steps of the app; the number removed
        (``dry_run=True``: that would be removed)."""
        self._check_open("prune")
        _check_ids(app_id, partition_key)
        keep = _check_keep_last(keep_last)
        steps = self._rows.get((partition_key or "", app_id), {})
        if not steps:
            return 0
        old = [seq for seq in steps if seq <= max(steps) - keep]
        if not dry_run:
            for seq in old:
                del steps[seq]
        return len(old)

    async def prune_all(
        self, *, keep_last: int, partition_key: str | None = None, dry_run: bool = False
    ) -> int:
        """:meth:`prune` every app (of ``partition_key`` when given); the number removed
        (``dry_run=True``: that would be removed)."""
        self._check_open("prune_all")
        _check_id("partition_key", partition_key, optional=True)
        _check_keep_last(keep_last)
        removed = 0
        for pk, app_id in list(self._rows):
            if partition_key is None or pk == partition_key:
                removed += await self.prune(
                    pk or None, app_id, keep_last=keep_last, dry_run=dry_run
                )
        return removed

    async def expire(
        self, *, idle_for: dt.timedelta, partition_key: str | None = None, dry_run: bool = False
    ) -> int:
        """Delete whole apps whose latest step is older than ``idle_for``; the number of apps
        removed (``dry_run=True``: that would be removed)."""
        self._check_open("expire")
        _check_id("partition_key", partition_key, optional=True)
        cutoff = _cutoff(idle_for)
        idle = [
            (pk, app_id)
            for (pk, app_id), steps in self._rows.items()
            if (partition_key is None or pk == partition_key)
            and steps
            and max(row[6] for row in steps.values()) < cutoff
        ]
        if not dry_run:
            for pk, app_id in idle:
                self._forget(pk, app_id)
        return len(idle)


AsyncInMemoryPersister = InMemoryPersister
"""Burr's ``AsyncInMemoryPersister()``: burr_async's in-memory persister, under Burr's name."""


class AsyncDevNullPersister(AsyncBaseStatePersister):
    """Burr's ``AsyncDevNullPersister``: saves nothing and loads nothing (``load`` returns
    None, so an application resumed from it starts from its defaults). For tests that need a
    persister but no storage. Ids are checked as every persister checks them; after ``aclose``
    every call raises :class:`~burr_async.errors.PersistenceError`."""

    def __init__(self) -> None:
        self._closed = False

    def _check_open(self, call: str) -> None:
        if self._closed:
            raise PersistenceError(
                f"{call}() was called on a closed AsyncDevNullPersister: aclose() had been called."
            )

    async def save(
        self,
        partition_key: str | None,
        app_id: str,
        sequence_id: int,
        position: str,
        state: State,
        status: Status,
        *,
        error: str | None = None,
        parent: ParentPointer | None = None,
        spawning_parent: ParentPointer | None = None,
    ) -> None:
        """Store nothing."""
        self._check_open("save")
        _check_ids(app_id, partition_key)

    async def load(
        self, partition_key: str | None, app_id: str, sequence_id: int | None = None
    ) -> PersistedStateData | None:
        """None: nothing is ever stored."""
        self._check_open("load")
        _check_ids(app_id, partition_key)
        return None

    async def list_app_ids(self, partition_key: str | None) -> list[str]:
        """No apps."""
        self._check_open("list_app_ids")
        return []

    async def history(self, partition_key: str | None, app_id: str) -> list[PersistedStateData]:
        """No steps."""
        self._check_open("history")
        _check_ids(app_id, partition_key)
        return []

    async def aclose(self) -> None:
        """Refuse every further call, as the other persisters do after closing."""
        self._closed = True


def _in_partition(pointer: ParentPointer | None) -> ParentPointer | None:
    """``pointer`` with the default partition as None, as every read reports it."""
    if pointer is None or pointer.partition_key:
        return pointer
    return ParentPointer(pointer.app_id, None, pointer.sequence_id)
