"""How an application hands its steps to its persister: the save, shielded from cancellation,
with the persister's errors given the step's ids, and the step whose commit is unknown kept to
be saved again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

from burr_async._shield import run_to_completion
from burr_async.actions import Action, ResultDict
from burr_async.errors import (
    BurrAsyncError,
    CommitUnknownError,
    ConcurrentStepError,
    PersistenceError,
)
from burr_async.hooks import _HookSet
from burr_async.persistence.base import AsyncBaseStateSaver, ParentPointer, Status
from burr_async.state import State

__all__ = ["AT_ENTRYPOINT", "StepStore", "StoredStep"]

_SettledSave = Callable[..., Awaitable[tuple[Exception | None, asyncio.CancelledError | None]]]
"""``_save_settled`` of a persister that settles its own writes: ``save``'s arguments, and
``(error, cancellation)`` back instead of raising."""

AT_ENTRYPOINT = "@entrypoint"
"""The stored position of a step that leaves the application before its entrypoint (written by
``reset_to_entrypoint``, and by ``update_state`` before any action ran): the next step runs the
entrypoint. No action may be named so (names starting with ``@`` are refused)."""


@dataclass(frozen=True, slots=True)
class StoredStep:
    """A step handed to the persister, kept when its save could not be settled. ``action`` is
    None for a state change (``update_state``, ``reset_to_entrypoint``): no action ran."""

    action: Action | None
    position: str
    sequence_id: int
    state: State
    status: Status
    error: str | None
    result: ResultDict | None
    exception: Exception | None


class StepStore:
    """The persisting part of an :class:`~burr_async.application.Application`."""

    _uid: str
    _partition_key: str | None
    _persister: AsyncBaseStateSaver | None
    _hooks: _HookSet
    _parent: ParentPointer | None
    _spawning_parent: ParentPointer | None
    _first_attempt: int | None
    _unsettled: StoredStep | None
    _state: State
    _sequence_id: int | None
    _position: str | None
    _status: Status
    _error: str | None

    async def _apply_change(self, step: StoredStep) -> None:
        """Store a state change (no action ran) and apply it once it is stored."""
        cancelled = await self._persist(step)
        self._state = step.state
        self._sequence_id = step.sequence_id
        self._position = None if step.position == AT_ENTRYPOINT else step.position
        self._status = step.status
        self._error = step.error
        if step.status != "failed":
            self._first_attempt = None
        if cancelled is not None:
            raise cancelled

    async def _settle_change(self) -> None:
        """Save again a state change whose commit was unknown, and apply it: the next call
        settles it before it does anything else."""
        pending = self._unsettled
        if pending is not None and pending.action is None:
            await self._apply_change(pending)

    async def _persist(self, step: StoredStep) -> asyncio.CancelledError | None:
        """Save the step and return once it is durable, even if the caller is cancelled
        meanwhile; returns the cancellation that arrived meanwhile, if one did (the caller
        raises it once the application agrees with what was stored). Whether a save that
        fails left the step stored is the persister's to settle (see
        :class:`~burr_async.persistence.base.AsyncBaseStateSaver`); a step it could not settle
        is remembered, and saved again by the next call.

        A persister's save runs in a task of its own (``settle``), which no cancellation
        reaches; burr_async's own SQL persister, unless a subclass changed its ``save`` or a
        hook wraps saves, settles its write itself (``_save_settled``), with no task."""
        if self._persister is None:
            return None
        settled = self._settled_save()
        if settled is None:
            _, cancelled = await run_to_completion(self._save(step))
            return cancelled
        error, cancellation = await settled(
            self._partition_key,
            self._uid,
            step.sequence_id,
            step.position,
            step.state,
            step.status,
            error=step.error,
            parent=self._parent,
            spawning_parent=self._spawning_parent,
        )
        if error is None:
            self._unsettled = None
            return cancellation
        try:
            self._failed(step, error)
        except BaseException as failure:
            if cancellation is not None:  # the cancellation goes first, as from a task
                raise cancellation from failure
            raise

    def _settled_save(self) -> _SettledSave | None:
        """The persister's ``_save_settled``, when it stands for its ``save`` as it is."""
        persister = self._persister
        if persister is None or self._hooks.around_save is not None:
            return None
        own = getattr(type(persister), "_settled_save_of", None)
        if own is None or getattr(persister.save, "__func__", None) is not own:
            return None  # save changed, by a subclass or on this very object
        settled: _SettledSave = persister._save_settled  # type: ignore[attr-defined]
        return settled

    async def _save(self, step: StoredStep) -> None:
        assert self._persister is not None
        try:
            saving = self._persister.save(
                self._partition_key,
                self._uid,
                step.sequence_id,
                step.position,
                step.state,
                step.status,
                error=step.error,
                **({"parent": self._parent} if self._parent is not None else {}),
                **(
                    {"spawning_parent": self._spawning_parent}
                    if self._spawning_parent is not None
                    else {}
                ),
            )
            if self._hooks.around_save is not None:  # a hook observes the save (tracing)
                saving = self._hooks.around_save(saving, self, step)
            await saving
        except Exception as exc:
            self._failed(step, exc)
        self._unsettled = None

    def _failed(self, step: StoredStep, exc: Exception) -> NoReturn:
        """Raise the error of a save that failed, with the step's ids: a PersistenceError as
        it is (a step whose commit is unknown is kept, to be saved again), another error of
        burr_async's as it is, a custom persister's own error as a PersistenceError."""
        if isinstance(exc, PersistenceError):
            exc.add_ids(
                app_id=self._uid,
                partition_key=self._partition_key,
                sequence_id=step.sequence_id,
                action=step.position,
            )
            if isinstance(exc, CommitUnknownError):
                self._unsettled = step  # the next call saves it again
            elif isinstance(exc, ConcurrentStepError):
                self._unsettled = None  # another step holds the key: nothing left to settle
            raise exc
        if isinstance(exc, BurrAsyncError):
            raise exc
        raise PersistenceError(  # a custom persister's own error
            f"Saving the step failed ({type(exc).__name__}: {exc}); the application did not "
            "advance and the step can be retried",
            app_id=self._uid,
            partition_key=self._partition_key,
            sequence_id=step.sequence_id,
            action=step.position,
        ) from exc
