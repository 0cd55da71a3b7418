"""The persistence seam: what an application hands to a persister, and gets back from it."""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self

from burr_async.errors import (
    ConfigurationError,
    InvalidIdentifierError,
    SerializationError,
    quote,
)
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

MAX_ID_LENGTH = 255
"""The longest app id or partition key, in characters (the primary key's index must hold both
on every backend)."""


def _check_id(kind: str, value: object, *, optional: bool = False) -> None:
    """InvalidIdentifierError unless ``value`` (an ``app_id``, or with ``optional`` a
    ``partition_key``, which may be None) is a string, non-empty unless optional, of at most
    :data:`MAX_ID_LENGTH` characters without a NUL character: the same rule on every backend,
    checked before anything is written."""
    if value is None and optional:
        return
    if not isinstance(value, str) or not (value or optional):
        rule = "it must be a string or None" if optional else "it must be a non-empty string"
        raise InvalidIdentifierError(kind, value, rule)
    if len(value) > MAX_ID_LENGTH or "\x00" in value:
        raise InvalidIdentifierError(
            kind,
            value,
            f"use at most {MAX_ID_LENGTH} characters, none of them NUL (it has {len(value)})",
        )


def _check_ids(app_id: object, partition_key: object) -> None:
    """:func:`_check_id` for a step's ``app_id`` and ``partition_key``."""
    _check_id("app_id", app_id)
    _check_id("partition_key", partition_key, optional=True)


def _check_keep_last(keep_last: object) -> int:
    """``keep_last`` if it is a whole number of at least 1, else ConfigurationError."""
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise ConfigurationError(
            f"keep_last must be a whole number of steps, at least 1 (the latest step always "
            f"stays), not {keep_last!r}."
        )
    return keep_last


def _check_limit(limit: object, what: str) -> int:
    """``limit`` if it is a whole number (0 or more) of ``what``, else ConfigurationError."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigurationError(f"limit must be a whole number of {what}, not {limit!r}.")
    return limit


def _cursor_time(after: object) -> dt.datetime:
    """The time of a ``list_apps`` cursor (an ``AppSummary``), in UTC (a naive one is UTC, as
    stored times are), so that it compares as the instant it is; ConfigurationError for
    anything but an ``AppSummary``."""
    if not isinstance(after, AppSummary):
        raise ConfigurationError(
            f"after must be the AppSummary a page ended with (its last item), not {after!r}."
        )
    when = after.updated_at
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


def _check_page(after_sequence_id: object, limit: object) -> tuple[int, int | None]:
    """A page of history: the sequence id it starts after (-1: from the first step) and the
    most steps it holds (None: every one); ConfigurationError for a bad one."""
    if after_sequence_id is not None and (
        isinstance(after_sequence_id, bool) or not isinstance(after_sequence_id, int)
    ):
        raise ConfigurationError(f"after_sequence_id must be an int, not {after_sequence_id!r}.")
    after = -1 if after_sequence_id is None else after_sequence_id
    return after, None if limit is None else _check_limit(limit, "steps")


_ESCAPED_NUL = b"\\u0000"  # how JSON writes a NUL character inside a string


def _has_nul(value: object) -> bool:
    """Whether ``value`` (a string, or dicts and lists of them) holds a NUL character."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


def _refuse_nul(values: Mapping[str, Any]) -> None:
    """SerializationError naming the first key of ``values`` (a state's, or a step's changes)
    whose value holds a string (or dict key) with a NUL character: Postgres cannot store one in
    JSONB, so no persister does."""
    for key, value in values.items():
        if _has_nul(key) or _has_nul(value):
            raise SerializationError(
                f"State key {quote(key)} holds a string with a NUL character, which the "
                "database cannot store (Postgres refuses it in JSON, and SQLite is held to the "
                "same rule). Remove or replace the NUL characters. Nothing was written.",
                key=key,
            )


def _cutoff(idle_for: object) -> dt.datetime:
    """The time before which an app's latest step makes it idle; ConfigurationError unless
    ``idle_for`` is a ``timedelta`` of zero or more."""
    if not isinstance(idle_for, dt.timedelta) or idle_for < dt.timedelta(0):
        raise ConfigurationError(
            f"idle_for must be a datetime.timedelta of zero or more, not {idle_for!r}."
        )
    return dt.datetime.now(dt.UTC) - idle_for


@dataclass(frozen=True, slots=True)
class ParentPointer:
    """A step of another application: where a forked application was copied from, or the
    step whose action spawned a sub-application (its spawning parent)."""

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
    spawning_parent: ParentPointer | None = None
    """The parent step that spawned this application as a sub-application, or None."""


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
    spawning_parent: ParentPointer | None = None
    """The parent step that spawned this application (a fan-out's child, or an application
    built ``with_spawning_parent``), or None."""

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
        spawning_parent: ParentPointer | None = None,
    ) -> None:
        """Store one step. ``error`` is the failure of a ``failed`` step; ``parent`` is given
        on every step of a forked application: the step it was copied from;
        ``spawning_parent`` on every step of a sub-application: the parent step that spawned
        it. The application passes ``parent`` and ``spawning_parent`` only when they are set,
        so a persister that predates them keeps working for applications that use neither."""


class AsyncBaseStatePersister(AsyncBaseStateLoader, AsyncBaseStateSaver):
    """Loads and saves; usable as an async context manager that closes it."""

    @abstractmethod
    async def history(self, partition_key: str | None, app_id: str) -> list[PersistedStateData]:
        """Every stored step of the application, oldest first."""

    async def initialize(self) -> None:
        """Set up the storage (Burr's ``initialize``): nothing to do by default; the database
        persister creates or migrates its table."""

    async def is_initialized(self) -> bool:
        """Whether the storage is set up (Burr's ``is_initialized``): True by default, for a
        persister with nothing to set up; the database persister checks its table."""
        return True

    async def aclose(self) -> None:
        """Release what the persister owns."""

    async def cleanup(self) -> None:
        """Burr's name for :meth:`aclose`."""
        await self.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
