"""Running a Burr-style *sync* persister (plain ``save``/``load`` functions) behind the async
persister interface: every call runs in one of anyio's worker threads, so the event loop never
blocks on it."""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import anyio.to_thread

from burr_async._shield import run_to_completion
from burr_async.errors import BurrAsyncError, PersistenceError, SerializationError
from burr_async.persistence.base import (
    AsyncBaseStateLoader,
    AsyncBaseStateSaver,
    ParentPointer,
    PersistedStateData,
    Status,
)
from burr_async.state import State

__all__ = ["SyncPersisterAdapter", "SyncStateLoader", "SyncStateSaver", "is_async_callable"]

_EXPECTED = (
    "None, or a dict with the keys partition_key, app_id, sequence_id (an int), position (a str), "
    "state (a dict or an object with get_all()), created_at (a datetime or an ISO string) and "
    "status ('completed' or 'failed'), as Burr's persisters return"
)


class SyncStateSaver(Protocol):
    """A Burr-style saver: ``save(partition_key, app_id, sequence_id, position, state, status,
    **kwargs)``, a plain function."""

    @property
    def save(self) -> Callable[..., object]: ...


class SyncStateLoader(Protocol):
    """A Burr-style loader: ``load(partition_key, app_id, sequence_id=None, **kwargs)`` and
    ``list_app_ids(partition_key, **kwargs)``, plain functions."""

    @property
    def load(self) -> Callable[..., object]: ...


def is_async_callable(fn: object) -> bool:
    """Whether calling ``fn`` gives a coroutine: an ``async def`` function or bound method (also
    under ``functools.partial``), or an object whose ``__call__`` is one."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or (
        not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)
    )


def _accepted(fn: Callable[..., object], names: tuple[str, ...]) -> frozenset[str]:
    """Which of the keyword arguments ``names`` ``fn`` accepts (all of them with ``**kwargs``;
    none when its signature cannot be read)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return frozenset()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return frozenset(names)
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(p.name for p in params if p.kind in keyword and p.name in names)


class SyncPersisterAdapter(AsyncBaseStateLoader, AsyncBaseStateSaver):
    """The async persister interface over a sync persister.

    Each call runs the wrapped method in a worker thread (``anyio.to_thread.run_sync``) and
    returns only once it has returned; a method that is already ``async`` is awaited directly.
    A cancellation that arrives meanwhile, from anyio or asyncio (``Task.cancel()``), waits for
    the thread to finish (a call is never abandoned half-done) and then goes through. Calls are
    not serialized: applications sharing the persister call it from several threads at once,
    so it must be thread-safe.

    An exception raised by the wrapped code becomes a :class:`PersistenceError` naming the app
    (and step), with the original chained; burr_async's own errors pass through. ``error`` and
    ``parent`` and ``spawning_parent`` are passed to ``save`` only if it accepts them (by name
    or ``**kwargs``): a persister that predates them keeps working, and then stores neither.
    """

    def __init__(self, persister: object) -> None:
        self._persister = persister
        save = getattr(persister, "save", None)
        self._save_kwargs = (
            _accepted(save, ("error", "parent", "spawning_parent"))
            if callable(save)
            else frozenset()
        )

    @property
    def persister(self) -> object:
        """The wrapped sync persister."""
        return self._persister

    def __repr__(self) -> str:
        return f"SyncPersisterAdapter({self._persister!r})"

    async def _call(self, method: str, ids: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        """What the wrapped ``method`` returned, once it has returned; its errors as described
        in the class docstring, with ``ids`` (the app and step) attached."""
        fn = getattr(self._persister, method, None)
        name = f"{type(self._persister).__qualname__}.{method}"
        if not callable(fn):
            raise PersistenceError(f"{name} is not callable", **ids)
        try:
            if is_async_callable(fn):
                return await fn(*args, **kwargs)
            call = functools.partial(fn, *args, **kwargs)
            result, cancelled = await run_to_completion(anyio.to_thread.run_sync(call))
            if cancelled is not None:  # the call has returned: now the cancellation goes through
                raise cancelled
            return await result if inspect.isawaitable(result) else result
        except PersistenceError as exc:
            exc.add_ids(**ids)
            raise
        except BurrAsyncError:
            raise
        except Exception as exc:
            error = PersistenceError(f"{name} failed ({type(exc).__name__}: {exc})", **ids)
            if "thread" in str(exc):
                error.add_note(
                    "burr_async runs a sync persister in a worker thread; a client bound to the "
                    "thread that created it (such as a sqlite3 connection opened without "
                    "check_same_thread=False) cannot be used there."
                )
            raise error from exc

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
        """Run the sync ``save`` and return once it has returned."""
        extra = {"error": error, "parent": parent, "spawning_parent": spawning_parent}
        kwargs = {k: v for k, v in extra.items() if k in self._save_kwargs}
        ids: dict[str, Any] = {
            "app_id": app_id,
            "partition_key": partition_key,
            "sequence_id": sequence_id,
            "action": position,
        }
        args = (partition_key, app_id, sequence_id, position, state, status)
        await self._call("save", ids, *args, **kwargs)

    async def load(
        self, partition_key: str | None, app_id: str, sequence_id: int | None = None
    ) -> PersistedStateData | None:
        """Run the sync ``load`` and convert what it returned (see :func:`_converted`)."""
        ids: dict[str, Any] = {
            "app_id": app_id,
            "partition_key": partition_key,
            "sequence_id": sequence_id,
        }
        raw = await self._call("load", ids, partition_key, app_id, sequence_id)
        try:
            return _converted(raw, partition_key, app_id)
        except SerializationError as exc:
            exc.add_note(f"While loading app {app_id!r} (partition_key={partition_key!r}).")
            raise
        except (TypeError, ValueError) as exc:
            raise PersistenceError(
                f"{type(self._persister).__qualname__}.load returned a step of a shape burr_async "
                f"cannot read ({exc}); it must return {_EXPECTED}",
                **ids,
            ) from exc

    async def list_app_ids(self, partition_key: str | None) -> list[str]:
        """Run the sync ``list_app_ids``."""
        ids: dict[str, Any] = {"app_id": None, "partition_key": partition_key}
        return list(await self._call("list_app_ids", ids, partition_key))


def _converted(raw: object, partition_key: str | None, app_id: str) -> PersistedStateData | None:
    """What a sync ``load`` returned, as PersistedStateData: None, a PersistedStateData, or a
        Burr-style dict (missing ``partition_key``/``app_id``: the ones asked for; ``status``:
        ``completed``; ``created_at``: now; a naive ``created_at`` is read as UTC; ``error``,
    ``parent`` and ``spawning_parent``, a str and ParentPointers, optional). TypeError or
        ValueError saying what is wrong for any other shape."""
    if raw is None or isinstance(raw, PersistedStateData):
        return raw
    if not isinstance(raw, Mapping):
        raise TypeError(f"got {type(raw).__name__}")
    missing = [k for k in ("sequence_id", "position", "state") if k not in raw]
    if missing:
        raise ValueError(f"a dict without the key(s) {missing}")
    sequence_id, position, status = raw["sequence_id"], raw["position"], raw.get("status")
    if not isinstance(sequence_id, int) or isinstance(sequence_id, bool):
        raise TypeError(f"sequence_id is {sequence_id!r}")
    if not isinstance(position, str):
        raise TypeError(f"position is {position!r}")
    if status not in ("completed", "failed", None):
        raise ValueError(f"status is {status!r}")
    error, parent = raw.get("error"), raw.get("parent")
    spawning_parent = raw.get("spawning_parent")
    if not (error is None or isinstance(error, str)):
        raise TypeError(f"error is {error!r}")
    if not (parent is None or isinstance(parent, ParentPointer)):
        raise TypeError(f"parent is {parent!r}")
    if not (spawning_parent is None or isinstance(spawning_parent, ParentPointer)):
        raise TypeError(f"spawning_parent is {spawning_parent!r}")
    loaded_pk, loaded_app = raw.get("partition_key", partition_key), raw.get("app_id") or app_id
    if not (loaded_pk is None or isinstance(loaded_pk, str)) or not isinstance(loaded_app, str):
        raise TypeError(f"partition_key, app_id are {loaded_pk!r}, {loaded_app!r}")
    return PersistedStateData(
        partition_key=loaded_pk or None,
        app_id=loaded_app,
        sequence_id=sequence_id,
        position=position,
        state=_state(raw["state"]),
        created_at=_timestamp(raw.get("created_at")),
        status="failed" if status == "failed" else "completed",
        error=error,
        parent=parent,
        spawning_parent=spawning_parent,
    )


def _state(value: object) -> State:
    """A loaded state: a State as it is; a dict, or an object with ``get_all()`` (Burr's
    State), with OrjsonSerde's tags decoded (see :meth:`State.deserialize`)."""
    if isinstance(value, State):
        return value
    get_all = getattr(value, "get_all", None)
    values = get_all() if callable(get_all) else value
    if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
        raise TypeError(f"state is {type(value).__name__}, not a dict with str keys")
    return State.deserialize(values)


def _timestamp(value: object) -> dt.datetime:
    """An aware ``created_at`` from a datetime, an ISO 8601 string or None (now)."""
    if value is None:
        return dt.datetime.now(dt.UTC)
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if not isinstance(value, dt.datetime):
        raise TypeError(f"created_at is {value!r}")
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
