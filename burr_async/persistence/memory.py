"""An in-memory persister, for tests and for applications that need no durability."""

from __future__ import annotations

import datetime as dt

from burr_async.errors import ConcurrentStepError, PersistenceError
from burr_async.persistence.base import (
    AppSummary,
    AsyncBaseStatePersister,
    ParentPointer,
    PersistedStateData,
    Status,
    _check_ids,
)
from burr_async.serde import OrjsonSerde, Serde
from burr_async.state import State

__all__ = ["InMemoryPersister"]

_Row = tuple[int, str, bytes, Status, str | None, ParentPointer | None, dt.datetime]


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
    ) -> None:
        self._check_open("save")
        _check_ids(app_id, partition_key)
        encoded = self._serde.dumps(state)
        pk = partition_key or ""
        steps = self._rows.setdefault((pk, app_id), {})
        if sequence_id in steps:
            raise ConcurrentStepError(
                app_id=app_id, partition_key=partition_key, sequence_id=sequence_id, action=position
            )
        steps[sequence_id] = (
            sequence_id,
            position,
            encoded,
            status,
            error,
            parent,
            dt.datetime.now(dt.UTC),
        )
        apps = self._order.setdefault(pk, {})
        apps.pop(app_id, None)
        apps[app_id] = None

    def _data(self, pk: str, app_id: str, row: _Row) -> PersistedStateData:
        sequence_id, position, encoded, status, error, parent, created_at = row
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
        return list(reversed(self._order.get(partition_key or "", {})))

    async def list_apps(
        self, partition_key: str | None = None, *, all_partitions: bool = False, limit: int = 100
    ) -> list[AppSummary]:
        """The latest step of each app, most recently updated first (as
        :meth:`SQLAlchemyPersister.list_apps <burr_async.SQLAlchemyPersister.list_apps>`)."""
        self._check_open("list_apps")
        partitions = list(self._order) if all_partitions else [partition_key or ""]
        summaries = []
        for pk in partitions:
            for app_id in self._order.get(pk, {}):
                steps = self._rows[(pk, app_id)]
                seq, position, _, status, _, _, created_at = steps[max(steps)]
                summaries.append(AppSummary(pk or None, app_id, seq, position, status, created_at))
        summaries.sort(key=lambda s: s.app_id)
        summaries.sort(key=lambda s: s.updated_at, reverse=True)
        return summaries[:limit]

    async def history(self, partition_key: str | None, app_id: str) -> list[PersistedStateData]:
        self._check_open("history")
        pk = partition_key or ""
        steps = self._rows.get((pk, app_id), {})
        return [self._data(pk, app_id, steps[seq]) for seq in sorted(steps)]
