"""The persistence seam: what an application hands to a persister, and gets back from it."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from burr_async.state import State

__all__ = [
    "AppSummary",
    "AsyncBaseStateLoader",
    "AsyncBaseStatePersister",
    "AsyncBaseStateSaver",
    "ParentPointer",
    "PersistedStateData",
    "Status",
]

Status = Literal["completed", "failed"]


@dataclass(frozen=True, slots=True)
class ParentPointer:
    """Where a forked application was copied from."""

    app_id: str
    partition_key: str | None
    sequence_id: int


@dataclass(frozen=True, slots=True)
class AppSummary:
    """The latest step of one application, as listed by a persister's ``list_apps``."""

    partition_key: str | None
    app_id: str
    sequence_id: int
    position: str
    status: Status
    updated_at: dt.datetime


@dataclass(frozen=True, slots=True)
class PersistedStateData:
    """One stored step. Also readable as a mapping (``data["state"]``), as in Burr."""

    partition_key: str | None
    app_id: str
    sequence_id: int
    position: str
    state: State
    created_at: dt.datetime
    status: Status
    error: str | None = None
    parent: ParentPointer | None = None

    def __getitem__(self, key: str) -> Any:
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None


class AsyncBaseStateLoader(ABC):
    """Reads stored steps; what ``initialize_from`` needs."""

    @abstractmethod
    async def load(
        self, partition_key: str | None, app_id: str, sequence_id: int | None = None
    ) -> PersistedStateData | None:
        """The latest step of the application (or the one at ``sequence_id``), or None."""

    @abstractmethod
    async def list_app_ids(self, partition_key: str | None) -> list[str]:
        """Application ids of a partition, most recently written first."""


class AsyncBaseStateSaver(ABC):
    """Writes steps; what ``with_state_persister`` needs.

    ``save`` returns once the step is durable. It raises
    :class:`~burr_async.errors.ConcurrentStepError` when the step's key is already taken,
    :class:`~burr_async.errors.SerializationError` for a state it cannot encode (writing nothing),
    and :class:`~burr_async.errors.PersistenceError` for any other failure.
    """

    @abstractmethod
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
        """Store one step. ``error`` is the failure of a ``failed`` step; ``parent`` is given
        on every step of a forked application: the step it was copied from."""


class AsyncBaseStatePersister(AsyncBaseStateLoader, AsyncBaseStateSaver):
    """Loads and saves; usable as an async context manager that closes it."""

    @abstractmethod
    async def history(self, partition_key: str | None, app_id: str) -> list[PersistedStateData]:
        """Every stored step of the application, oldest first."""

    async def aclose(self) -> None:
        """Release what the persister owns."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
